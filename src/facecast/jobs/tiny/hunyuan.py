"""A tiny HunyuanVideo text-to-video pipeline (`HunyuanVideoPipeline`) with random weights at
diffusers' own test sizes. Its two tokenizers (Llama and CLIP) are byte-level ones written here
with no merges, so nothing is fetched; a prompt is one token per byte."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from facecast.jobs.tiny._parts import save


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: the 256 symbols byte-level BPE tokenizers use for bytes."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(256 + extra)
            extra += 1
    return [symbols[b] for b in range(256)]


def llama_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaTokenizerFast

    specials = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0-2 match the tiny Llama's bos/pad/eos
    vocab = {tok: i for i, tok in enumerate(specials + _byte_symbols())}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return LlamaTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    tokens = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]
    with tempfile.TemporaryDirectory() as folder:
        vocab, merges = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
        vocab.write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
        merges.write_text("#version: 0.2\n")
        return CLIPTokenizer(str(vocab), str(merges), pad_token="<|endoftext|>")


def _vae() -> Any:
    from diffusers import AutoencoderKLHunyuanVideo

    return AutoencoderKLHunyuanVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("HunyuanVideoDownBlock3D",) * 4,
        up_block_types=("HunyuanVideoUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        act_fn="silu",
        norm_num_groups=4,
        scaling_factor=0.476986,
        spatial_compression_ratio=8,
        temporal_compression_ratio=4,
        mid_block_add_attention=True,
    )


def build(dest: Path, seed: int = 0) -> Path:
    """A tiny HunyuanVideoPipeline folder at `dest`."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline, HunyuanVideoTransformer3DModel
    from transformers import CLIPTextConfig, CLIPTextModel, LlamaConfig, LlamaModel

    torch.manual_seed(seed)
    transformer = HunyuanVideoTransformer3DModel(
        in_channels=4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=True,
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
    )
    llama = LlamaModel(
        LlamaConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=1,
            hidden_size=16,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=1000,
            hidden_act="gelu",
        )
    ).eval()
    clip = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=8,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=1000,
            hidden_act="gelu",
            projection_dim=32,
        )
    ).eval()
    pipe = HunyuanVideoPipeline(
        text_encoder=llama,
        tokenizer=llama_tokenizer(),
        transformer=transformer,
        vae=_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=clip,
        tokenizer_2=clip_tokenizer(),
    )
    return save(pipe, dest, "hunyuan")
