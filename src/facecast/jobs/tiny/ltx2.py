"""Tiny LTX-2 pipelines (`LTX2Pipeline`, `LTX2ImageToVideoPipeline`: video with audio) with random
weights at diffusers' own test sizes. The text encoder is a Gemma 3 made from its config (a
two-layer text model and a one-layer SigLIP vision tower, as the class requires) with a Gemma
tokenizer of bytes only (byte fallback, no merges), so nothing is fetched. Both classes take the
same components: one folder loads as either, the class in model_index.json is the default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facecast.jobs.tiny._parts import save

# Gemma's image markers, after the byte vocabulary (the tiny encoder never sees an image)
IMAGE_TOKENS = ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]


def gemma_tokenizer() -> Any:
    """Gemma's own tokenizer class over a vocabulary of its specials, the 256 byte-fallback tokens,
    the space marker and the image markers: every text encodes, one token per byte."""
    from transformers import GemmaTokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    tokens = [*specials, *(f"<0x{b:02X}>" for b in range(256)), "▁", *IMAGE_TOKENS]
    return GemmaTokenizer(vocab={tok: i for i, tok in enumerate(tokens)})


def gemma3_text_encoder() -> tuple[Any, Any]:
    """(Gemma 3 with hidden size 32, its byte tokenizer)."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig, SiglipVisionConfig

    tokenizer = gemma_tokenizer()
    boi, eoi, image = tokenizer.convert_tokens_to_ids(IMAGE_TOKENS)
    text = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,  # the connectors' width (4 heads x 8)
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        sliding_window=16,
        max_position_embeddings=2048,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )
    vision = SiglipVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=8, patch_size=2
    )
    config = Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=4,
        boi_token_index=boi,
        eoi_token_index=eoi,
        image_token_index=image,
    )
    return Gemma3ForConditionalGeneration(config).eval(), tokenizer


def _vae() -> Any:
    from diffusers import AutoencoderKLLTX2Video

    return AutoencoderKLLTX2Video(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8,),
        decoder_block_out_channels=(8,),
        layers_per_block=(1,),
        decoder_layers_per_block=(1, 1),
        spatio_temporal_scaling=(True,),
        decoder_spatio_temporal_scaling=(True,),
        decoder_inject_noise=(False, False),
        downsample_type=("spatial",),
        upsample_residual=(False,),
        upsample_factor=(1,),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )


def _build(dest: Path, seed: int, class_name: str, family: str) -> Path:
    import diffusers
    import torch
    from diffusers import AutoencoderKLLTX2Audio, FlowMatchEulerDiscreteScheduler, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2 import LTX2TextConnectors
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    torch.manual_seed(seed)
    text_encoder, tokenizer = gemma3_text_encoder()
    text = text_encoder.config.text_config
    transformer = LTX2VideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        audio_in_channels=4,
        audio_out_channels=4,
        audio_num_attention_heads=2,
        audio_attention_head_dim=4,
        audio_cross_attention_dim=8,
        num_layers=2,
        qk_norm="rms_norm_across_heads",
        caption_channels=text.hidden_size,
        rope_double_precision=False,
        rope_type="split",
    )
    connectors = LTX2TextConnectors(
        caption_channels=text.hidden_size,
        text_proj_in_factor=text.num_hidden_layers + 1,  # the embeddings and every layer's hidden states
        video_connector_num_attention_heads=4,
        video_connector_attention_head_dim=8,
        video_connector_num_layers=1,
        video_connector_num_learnable_registers=None,
        audio_connector_num_attention_heads=4,
        audio_connector_attention_head_dim=8,
        audio_connector_num_layers=1,
        audio_connector_num_learnable_registers=None,
        connector_rope_base_seq_len=32,
        rope_theta=10000.0,
        rope_double_precision=False,
        causal_temporal_positioning=False,
        rope_type="split",
    )
    audio_vae = AutoencoderKLLTX2Audio(
        base_channels=4,
        output_channels=2,
        ch_mult=(1,),
        num_res_blocks=1,
        attn_resolutions=None,
        in_channels=2,
        resolution=32,
        latent_channels=2,
        norm_type="pixel",
        causality_axis="height",
        dropout=0.0,
        mid_block_add_attention=False,
        sample_rate=16000,
        mel_hop_length=160,
        is_causal=True,
        mel_bins=8,
    )
    # The waveform must last as long as the video, as the real model's does: the audio VAE gives
    # sample_rate / mel_hop_length = 100 mel frames a second and the vocoder upsamples each by the
    # product of its factors, 160 here (the real one: 240 to 24 kHz), so it writes 16 kHz audio.
    vocoder = LTX2Vocoder(
        in_channels=2 * 8,  # the audio VAE's output channels x mel bins
        hidden_channels=32,
        out_channels=2,
        upsample_kernel_sizes=[15, 8, 8, 4],  # kernel - factor even: each layer multiplies the length exactly
        upsample_factors=[5, 4, 4, 2],
        resnet_kernel_sizes=[3],
        resnet_dilations=[[1, 3, 5]],
        leaky_relu_negative_slope=0.1,
        output_sampling_rate=16000,
    )
    pipe = getattr(diffusers, class_name)(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=_vae(),
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        connectors=connectors,
        transformer=transformer,
        vocoder=vocoder,
    )
    return save(pipe, dest, family)


def build(dest: Path, seed: int = 0) -> Path:
    """A tiny LTX2Pipeline (text-to-video with audio) folder at `dest`."""
    return _build(dest, seed, "LTX2Pipeline", "ltx2")


def build_i2v(dest: Path, seed: int = 0) -> Path:
    """A tiny LTX2ImageToVideoPipeline folder at `dest`."""
    return _build(dest, seed, "LTX2ImageToVideoPipeline", "ltx2-i2v")
