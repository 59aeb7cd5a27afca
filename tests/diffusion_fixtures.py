"""Tiny diffusion pipelines for tests: the builders live in `facecast.jobs.tiny` (one file per
family, also behind tools/make_tiny_pipelines.py); this adds a per-session cache so each is built
once, and LoRA files made for them with peft in diffusers' own format."""

from __future__ import annotations

from pathlib import Path

from facecast.jobs.tiny import build


def make_tiny_ltx(folder: Path) -> Path:
    """A tiny LTXImageToVideoPipeline folder (kept for older tests)."""
    return build("ltx-i2v", folder)


def make_tiny(name: str, folder: Path) -> Path:
    return build(name, folder / name)


def make_lora(model_dir: Path, dest: Path, seed: int = 1, metadata: dict[str, str] | None = None) -> Path:
    """A real LoRA for the pipeline in `model_dir`: peft adapters on the transformer's attention
    projections with random (non-zero) weights, saved by the pipeline class's own
    `save_lora_weights` (diffusers' format), plus header metadata as training tools write it."""
    import diffusers
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    pipe = diffusers.DiffusionPipeline.from_pretrained(str(model_dir))
    torch.manual_seed(seed)
    pipe.transformer.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    )
    layers = get_peft_model_state_dict(pipe.transformer)
    type(pipe).save_lora_weights(str(dest.parent), transformer_lora_layers=layers, weight_name=dest.name)
    if metadata:
        save_file(load_file(str(dest)), str(dest), metadata=metadata)
    return dest
