"""A tiny Wan VACE pipeline (WanVACEPipeline) with random weights, built from configs.

Nothing is downloaded: a small UMT5 text encoder from its config with a byte-level tokenizer made
locally, and diffusers' own test sizes for the VACE transformer and the Wan VAE. Its output is
noise, not a model (the folder's `facecast_tiny.json` says so)."""

from __future__ import annotations

from pathlib import Path

from facecast.jobs.tiny._parts import WAN_TRANSFORMER, save, umt5_text_encoder, wan_vae


def build(dest: Path, seed: int = 0) -> Path:
    """Write a loadable tiny WanVACEPipeline folder at `dest`; returns `dest`."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel

    torch.manual_seed(seed)
    vae = wan_vae()
    transformer = WanVACETransformer3DModel(
        **{**WAN_TRANSFORMER, "num_layers": 3}, in_channels=16, vace_layers=[0, 2], vace_in_channels=96
    )
    text_encoder, tokenizer = umt5_text_encoder()
    pipe = WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=transformer,
    )
    return save(pipe, dest, "wan-vace")
