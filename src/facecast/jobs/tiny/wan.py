"""Tiny Wan 2.1 pipelines (text-to-video `WanPipeline`, image-to-video `WanImageToVideoPipeline`)
with random weights at diffusers' own test sizes; a UMT5 text encoder made from its config."""

from __future__ import annotations

from pathlib import Path

from facecast.jobs.tiny._parts import WAN_TRANSFORMER, clip_image_encoder, save, umt5_text_encoder, wan_vae


def _transformer(in_channels: int, image_dim: int | None):
    from diffusers import WanTransformer3DModel

    # in_channels: 16 latent channels; image-to-video adds 16 image + 4 mask channels
    return WanTransformer3DModel(**WAN_TRANSFORMER, in_channels=in_channels, image_dim=image_dim)


def build(dest: Path, seed: int = 0) -> Path:
    """A tiny WanPipeline (text-to-video) folder at `dest`."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    torch.manual_seed(seed)
    text_encoder, tokenizer = umt5_text_encoder()
    pipe = WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=wan_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=_transformer(16, None),
    )
    return save(pipe, dest, "wan")


def build_i2v(dest: Path, seed: int = 0) -> Path:
    """A tiny WanImageToVideoPipeline (Wan 2.1 image-to-video, with a CLIP image encoder) folder at `dest`."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline

    torch.manual_seed(seed)
    text_encoder, tokenizer = umt5_text_encoder()
    image_encoder, image_processor = clip_image_encoder()
    pipe = WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=wan_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=_transformer(36, 4),
    )
    return save(pipe, dest, "wan-i2v")
