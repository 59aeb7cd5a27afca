"""A tiny HunyuanVideo text-to-video pipeline (`HunyuanVideoPipeline`) with random weights at
diffusers' own test sizes. Its two tokenizers (Llama 3 and CLIP) are byte-level ones written here,
so nothing is fetched: the Llama one knows only the words of the pipeline's prompt template (so the
template's embeddings are cropped where the pipeline expects), any prompt is one token per byte."""

from __future__ import annotations

import inspect
import json
import tempfile
from pathlib import Path
from typing import Any

from facecast.jobs.tiny._parts import byte_level_split, byte_symbols, save, word_merges

BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"
SPECIALS = [BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>"]
# Llama 3's pre-tokenizer split
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def default_template(pipeline_class: Any) -> dict[str, Any]:
    """The prompt template a HunyuanVideo pipeline class uses when none is passed."""
    return inspect.signature(pipeline_class.__call__).parameters["prompt_template"].default


def llama3_tokenizer(pipeline_class: Any) -> Any:
    """A byte-level BPE tokenizer with Llama 3's split, specials and BOS, whose only merges spell
    out the words of the pipeline class's prompt template: the pipeline cuts the prompt's (and
    the image's) embeddings out of the encoded template at fixed token positions, so the template
    must come out as the same tokens as under Llama 3's tokenizer; every other text is bytes."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import PreTrainedTokenizerFast

    split = byte_level_split(LLAMA3_SPLIT)
    vocab = {tok: i for i, tok in enumerate([BOS, EOS, *byte_symbols()])}
    merges = word_merges(vocab, split, default_template(pipeline_class)["template"], SPECIALS)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    backend.pre_tokenizer = split
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(SPECIALS)
    backend.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BOS, eos_token=EOS, pad_token=EOS)


def clip_tokenizer() -> Any:
    from transformers import CLIPTokenizer

    symbols = byte_symbols()
    tokens = ["<|startoftext|>", "<|endoftext|>", *symbols, *(s + "</w>" for s in symbols)]
    with tempfile.TemporaryDirectory() as folder:
        vocab, merges = Path(folder) / "vocab.json", Path(folder) / "merges.txt"
        vocab.write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
        merges.write_text("#version: 0.2\n")
        return CLIPTokenizer(str(vocab), str(merges), pad_token="<|endoftext|>")


def clip_text_encoder() -> Any:
    """HunyuanVideo's second text encoder (pooled prompt), CLIP's text model at hidden size 8."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
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


def hunyuan_vae() -> Any:
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
    from transformers import LlamaConfig, LlamaModel

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
    tokenizer = llama3_tokenizer(HunyuanVideoPipeline)
    llama = LlamaModel(
        LlamaConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=16,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(tokenizer),
            hidden_act="gelu",
        )
    ).eval()
    pipe = HunyuanVideoPipeline(
        text_encoder=llama,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=hunyuan_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=clip_text_encoder(),
        tokenizer_2=clip_tokenizer(),
    )
    return save(pipe, dest, "hunyuan")
