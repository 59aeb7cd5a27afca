"""Tiny LTX-Video pipelines with random weights, built from configs (formerly
tests/diffusion_fixtures.py). `LTXPipeline`, `LTXImageToVideoPipeline` and `LTXConditionPipeline`
share their components: one folder loads as any of them, the class in model_index.json is the
default."""

from __future__ import annotations

from pathlib import Path

from facecast.jobs.tiny._parts import save, t5_text_encoder


def _build(dest: Path, seed: int, class_name: str, family: str) -> Path:
    import diffusers
    import torch
    from diffusers import AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5,
        upsample_residual=(False,) * 4,
        upsample_factor=(1,) * 4,
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    text_encoder, tokenizer = t5_text_encoder()
    pipe = getattr(diffusers, class_name)(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    return save(pipe, dest, family)


def build(dest: Path, seed: int = 0) -> Path:
    """A tiny LTXPipeline (text-to-video) folder at `dest`."""
    return _build(dest, seed, "LTXPipeline", "ltx")


def build_i2v(dest: Path, seed: int = 0) -> Path:
    """A tiny LTXImageToVideoPipeline folder at `dest`."""
    return _build(dest, seed, "LTXImageToVideoPipeline", "ltx-i2v")


def build_condition(dest: Path, seed: int = 0) -> Path:
    """A tiny LTXConditionPipeline (LTX-Video 0.9.5+: conditions on images or clips at any frame) folder at `dest`."""
    return _build(dest, seed, "LTXConditionPipeline", "ltx-condition")
