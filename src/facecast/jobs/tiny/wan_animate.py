"""A tiny Wan-Animate pipeline (WanAnimatePipeline) with random weights, built from configs.

Nothing is downloaded: the text encoder is a small UMT5 made from its config, the tokenizer a
byte-level one made locally, the CLIP image encoder, transformer and VAE are diffusers' own test
sizes. It runs the whole replace job's plumbing on a CPU in seconds; its output is noise, not a
model (the folder's `facecast_tiny.json` says so)."""

from __future__ import annotations

from pathlib import Path

from facecast.jobs.tiny._parts import WAN_TRANSFORMER, save, umt5_text_encoder, wan_vae


def build(dest: Path, seed: int = 0) -> Path:
    """Write a loadable tiny WanAnimatePipeline folder at `dest`; returns `dest`."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        WanAnimatePipeline,
        WanAnimateTransformer3DModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
    )

    torch.manual_seed(seed)
    vae = wan_vae()
    transformer = WanAnimateTransformer3DModel(
        **WAN_TRANSFORMER,
        in_channels=36,
        latent_channels=16,
        image_dim=4,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16},
        motion_encoder_size=16,
        motion_style_dim=8,
        motion_dim=4,
        motion_encoder_dim=16,
        face_encoder_hidden_dim=16,
        face_encoder_num_heads=2,
        inject_face_latents_blocks=2,
    )
    image_encoder = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=4,
            projection_dim=4,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=4,
            intermediate_size=16,
            patch_size=1,
        )
    )
    text_encoder, tokenizer = umt5_text_encoder()
    pipe = WanAnimatePipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_processor=CLIPImageProcessor(crop_size=4, size=4),
        image_encoder=image_encoder,
        transformer=transformer,
    )
    return save(pipe, dest, "wan-animate")
