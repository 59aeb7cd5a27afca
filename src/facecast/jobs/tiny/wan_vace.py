"""A tiny Wan VACE pipeline (WanVACEPipeline) with random weights, built from configs.

Nothing is downloaded: a small UMT5 text encoder from its config with a byte-level tokenizer made
locally, and diffusers' own test sizes for the VACE transformer and the Wan VAE. Its output is
noise, not a model (the folder's `facecast_tiny.json` says so)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from facecast.jobs.tiny._parts import wan_vae

NOTE = "tiny random-weight pipeline for tests and plumbing checks: its output is noise, it is not a model"


def build(dest: Path, seed: int = 0) -> Path:
    """Write a loadable tiny WanVACEPipeline folder at `dest`; returns `dest`."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, WanVACEPipeline, WanVACETransformer3DModel
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = wan_vae()
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=3,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        vace_layers=[0, 2],
        vace_in_channels=96,
    )
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8
        )
    )
    pipe = WanVACEPipeline(
        tokenizer=ByT5Tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        transformer=transformer,
    )
    dest = Path(dest)
    cast(Any, pipe).save_pretrained(str(dest))  # a DiffusionPipeline method; diffusers is untyped here
    (dest / "facecast_tiny.json").write_text(json.dumps({"family": "wan-vace", "note": NOTE}) + "\n")
    return dest
