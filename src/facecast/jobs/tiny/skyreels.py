"""Tiny SkyReels-V2 pipelines (text-to-video, image-to-video, diffusion forcing) with random
weights at diffusers' own test sizes; Wan's VAE and a UMT5 text encoder made from its config."""

from __future__ import annotations

from pathlib import Path

from facecast.jobs.tiny._parts import WAN_TRANSFORMER, clip_image_encoder, save, umt5_text_encoder, wan_vae


def _transformer(in_channels: int, image_dim: int | None):
    from diffusers import SkyReelsV2Transformer3DModel

    # in_channels: 16 latent channels; image-to-video adds 16 image + 4 mask channels
    return SkyReelsV2Transformer3DModel(**WAN_TRANSFORMER, in_channels=in_channels, image_dim=image_dim)


def _scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(flow_shift=8.0, use_flow_sigmas=True)


def build(dest: Path, seed: int = 0) -> Path:
    """A tiny SkyReelsV2Pipeline (text-to-video) folder at `dest`."""
    import torch
    from diffusers import SkyReelsV2Pipeline

    torch.manual_seed(seed)
    text_encoder, tokenizer = umt5_text_encoder()
    pipe = SkyReelsV2Pipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=_transformer(16, None),
        vae=wan_vae(),
        scheduler=_scheduler(),
    )
    return save(pipe, dest, "skyreels")


def build_i2v(dest: Path, seed: int = 0) -> Path:
    """A tiny SkyReelsV2ImageToVideoPipeline folder at `dest`."""
    import torch
    from diffusers import SkyReelsV2ImageToVideoPipeline

    torch.manual_seed(seed)
    text_encoder, tokenizer = umt5_text_encoder()
    image_encoder, image_processor = clip_image_encoder()
    pipe = SkyReelsV2ImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        image_processor=image_processor,
        transformer=_transformer(36, 4),
        vae=wan_vae(),
        scheduler=_scheduler(),
    )
    return save(pipe, dest, "skyreels-i2v")


def build_df(dest: Path, seed: int = 0) -> Path:
    """A tiny SkyReelsV2DiffusionForcingPipeline (long video in overlapping windows) folder at
    `dest`; its image-to-video sibling loads from the same folder."""
    import torch
    from diffusers import SkyReelsV2DiffusionForcingPipeline

    torch.manual_seed(seed)
    text_encoder, tokenizer = umt5_text_encoder()
    pipe = SkyReelsV2DiffusionForcingPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        transformer=_transformer(16, None),
        vae=wan_vae(),
        scheduler=_scheduler(),
    )
    return save(pipe, dest, "skyreels-df")
