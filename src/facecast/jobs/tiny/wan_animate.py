"""A tiny Wan-Animate pipeline (WanAnimatePipeline) with random weights, built from configs.

Nothing is downloaded: the text encoder is a small UMT5 made from its config, the tokenizer a
byte-level one made locally, the CLIP image encoder, transformer and VAE are diffusers' own test
sizes. It runs the whole replace job's plumbing on a CPU in seconds; its output is noise, not a
model (the folder's `facecast_tiny.json` says so)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

from facecast.jobs.tiny._parts import wan_vae

NOTE = "tiny random-weight pipeline for tests and plumbing checks: its output is noise, it is not a model"


def build(dest: Path, seed: int = 0) -> Path:
    """Write a loadable tiny WanAnimatePipeline folder at `dest`; returns `dest`."""
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        WanAnimatePipeline,
        WanAnimateTransformer3DModel,
    )
    from transformers import (
        ByT5Tokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        UMT5Config,
        UMT5EncoderModel,
    )

    torch.manual_seed(seed)
    vae = wan_vae()
    transformer = WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36,
        latent_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        image_dim=4,
        rope_max_seq_len=32,
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
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8
        )
    )
    pipe = WanAnimatePipeline(
        tokenizer=ByT5Tokenizer(),
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        image_processor=CLIPImageProcessor(crop_size=4, size=4),
        image_encoder=image_encoder,
        transformer=transformer,
    )
    dest = Path(dest)
    cast(Any, pipe).save_pretrained(str(dest))  # a DiffusionPipeline method; diffusers is untyped here
    (dest / "facecast_tiny.json").write_text(json.dumps({"family": "wan-animate", "note": NOTE}) + "\n")
    return dest
