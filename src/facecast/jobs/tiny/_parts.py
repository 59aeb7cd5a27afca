"""Pieces the tiny pipelines share: a small text encoder made from its config with a byte-level
tokenizer made locally (nothing is fetched), the Wan VAE at diffusers' own test size, and the
marker file that says a folder is a tiny random-weight pipeline, not a model."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

NOTE = "tiny random-weight pipeline for tests and plumbing checks: its output is noise, it is not a model"
MARKER = "facecast_tiny.json"


def byte_symbols() -> list[str]:
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


def byte_level_split(pattern: str) -> Any:
    """The pre-tokenizer of a GPT-2 style byte-level BPE tokenizer: split by `pattern`, then bytes to symbols."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def word_merges(vocab: dict[str, int], split: Any, text: str, specials: list[str]) -> list[tuple[str, str]]:
    """BPE merges that make every word of `text` (as `split` cuts it, special tokens aside) one
    token, their results added to `vocab`. Pipelines that cut a prompt template's embeddings at
    fixed token positions need the template to come out as many tokens as under the real tokenizer;
    other text stays bytes. Each merge joins the first two pieces the merges so far leave of a word,
    so byte-pair encoding itself rebuilds every word, repeated letters and space runs included."""
    from tokenizers import models

    merges: list[tuple[str, str]] = []
    for piece in re.split("|".join(map(re.escape, specials)), text):
        for word, _ in split.pre_tokenize_str(piece):
            while len(parts := [t.value for t in models.BPE(vocab=vocab, merges=merges).tokenize(word)]) > 1:
                merges.append((parts[0], parts[1]))
                vocab[parts[0] + parts[1]] = len(vocab)
    return merges


def umt5_text_encoder() -> tuple[Any, Any]:
    """(UMT5 encoder with d_model 32, ByT5 tokenizer): Wan and SkyReels-V2 use UMT5."""
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8
    )
    return UMT5EncoderModel(config).eval(), ByT5Tokenizer()


def t5_text_encoder() -> tuple[Any, Any]:
    """(T5 encoder with d_model 32, ByT5 tokenizer): LTX-Video uses T5."""
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, relative_attention_num_buckets=8
    )
    return T5EncoderModel(config).eval(), ByT5Tokenizer()


# The tiny transformer every Wan-derived class shares (diffusers' own test sizes); each builder adds
# the arguments its class has of its own (input channels, image embedding, VACE layers...).
WAN_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "out_channels": 16,
    "text_dim": 32,
    "freq_dim": 256,
    "ffn_dim": 32,
    "num_layers": 2,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
}


def wan_vae() -> Any:
    from diffusers import AutoencoderKLWan

    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )


def clip_image_encoder() -> tuple[Any, Any]:
    """(CLIP vision encoder, its image processor) at diffusers' Wan image-to-video test size."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=4,
        projection_dim=4,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        intermediate_size=16,
        patch_size=1,
    )
    return CLIPVisionModelWithProjection(config).eval(), CLIPImageProcessor(crop_size=32, size=32)


def save(pipe: Any, dest: Path, family: str) -> Path:
    dest = Path(dest)
    pipe.save_pretrained(str(dest))
    (dest / MARKER).write_text(json.dumps({"family": family, "note": NOTE}) + "\n")
    return dest
