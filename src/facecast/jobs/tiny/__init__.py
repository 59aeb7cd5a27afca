"""Tiny random-weight diffusers pipelines, one per pipeline class facecast runs, built from
configs (nothing is downloaded). They load and run like downloaded models, so users and tests can
try every job's plumbing offline on a CPU in seconds; their output is noise, and each folder's
`facecast_tiny.json` says so. `tools/make_tiny_pipelines.py DIR` writes them all.

One file per family, each with `build(dest, seed=0) -> Path` (and `build_i2v` ... where the
family has more than one pipeline class); `TINY` below is the registry."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

# name -> (module in this package, builder function, pipeline class it writes)
TINY: dict[str, tuple[str, str, str]] = {
    "wan": ("wan", "build", "WanPipeline"),
    "wan-i2v": ("wan", "build_i2v", "WanImageToVideoPipeline"),
    "ltx": ("ltx", "build", "LTXPipeline"),
    "ltx-i2v": ("ltx", "build_i2v", "LTXImageToVideoPipeline"),
    "ltx-condition": ("ltx", "build_condition", "LTXConditionPipeline"),
    "ltx2": ("ltx2", "build", "LTX2Pipeline"),
    "ltx2-i2v": ("ltx2", "build_i2v", "LTX2ImageToVideoPipeline"),
    "hunyuan": ("hunyuan", "build", "HunyuanVideoPipeline"),
    "hunyuan-i2v": ("hunyuan_i2v", "build", "HunyuanVideoImageToVideoPipeline"),
    "hunyuan-i2v-token": ("hunyuan_i2v", "build_token_replace", "HunyuanVideoImageToVideoPipeline"),
    "hunyuan15": ("hunyuan15", "build", "HunyuanVideo15Pipeline"),
    "hunyuan15-i2v": ("hunyuan15", "build_i2v", "HunyuanVideo15ImageToVideoPipeline"),
    "skyreels": ("skyreels", "build", "SkyReelsV2Pipeline"),
    "skyreels-i2v": ("skyreels", "build_i2v", "SkyReelsV2ImageToVideoPipeline"),
    "skyreels-df": ("skyreels", "build_df", "SkyReelsV2DiffusionForcingPipeline"),
    "wan-animate": ("wan_animate", "build", "WanAnimatePipeline"),
    "wan-vace": ("wan_vace", "build", "WanVACEPipeline"),
}


def builder(name: str) -> Callable[..., Path]:
    """The build function of one tiny pipeline; KeyError naming the known ones."""
    if name not in TINY:
        raise KeyError(f"no tiny pipeline {name!r}; known: {', '.join(TINY)}")
    module, function, _ = TINY[name]
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def build(name: str, dest: Path, seed: int = 0) -> Path:
    return builder(name)(Path(dest), seed)
