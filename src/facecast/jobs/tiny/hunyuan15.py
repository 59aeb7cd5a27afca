"""Tiny HunyuanVideo 1.5 pipelines (`HunyuanVideo15Pipeline`, `HunyuanVideo15ImageToVideoPipeline`)
with random weights at diffusers' own test sizes. The Qwen2.5-VL text model is made from its config
with a byte-level Qwen2 tokenizer (no merges) carrying Qwen's chat template; the glyph encoder is a
T5 with the ByT5 tokenizer, as in the real model; the image-to-video folder adds a SigLIP vision
encoder. Nothing is fetched."""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

from facecast.jobs.tiny._parts import byte_level_split, byte_symbols, save, t5_text_encoder, word_merges

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's chat template: the pipeline formats every prompt as a system + user conversation with it
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def qwen_tokenizer() -> Any:
    """Qwen2's own tokenizer class over the 256 byte symbols, merges that spell out the words of
    the pipeline's system prompt (it cuts the prompt's embeddings at token 108: the template must
    come out as many tokens as under Qwen's tokenizer) and Qwen's specials and chat template."""
    from diffusers import HunyuanVideo15Pipeline
    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import format_text_input
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    system = inspect.signature(HunyuanVideo15Pipeline._get_mllm_prompt_embeds).parameters["system_message"].default
    conversation = format_text_input([""], system)[0]
    bytes_only = _qwen(dict.fromkeys(byte_symbols()), [])
    template = bytes_only.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    vocab = {tok: i for i, tok in enumerate(byte_symbols())}
    merges = word_merges(vocab, byte_level_split(PRETOKENIZE_REGEX), template, SPECIALS)
    return _qwen(vocab, merges)


def _qwen(words: Iterable[str], merges: list[tuple[str, str]]) -> Any:
    from transformers import Qwen2Tokenizer

    tokens = [*words, *SPECIALS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    # tokenizers takes merges as (a, b) pairs, whatever transformers' annotation says
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=cast("list[str]", merges))
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIALS[1:]})
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer


def _qwen_text_encoder(tokenizer: Any) -> Any:
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    config = Qwen2_5_VLTextConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.pad_token_id,
        hidden_size=16,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        rope_parameters={"mrope_section": [1, 1, 2], "rope_type": "default", "rope_theta": 1000000.0},
    )
    return Qwen2_5_VLTextModel(config).eval()


def _components(task: str) -> dict[str, Any]:
    from diffusers import AutoencoderKLHunyuanVideo15, FlowMatchEulerDiscreteScheduler, HunyuanVideo15Transformer3DModel
    from diffusers.guiders import ClassifierFreeGuidance

    transformer = HunyuanVideo15Transformer3DModel(
        in_channels=9,  # noise, the image's latents and their mask (zeros in text-to-video)
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=1,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=16,
        text_embed_2_dim=32,
        image_embed_dim=12,
        rope_axes_dim=(2, 2, 4),
        target_size=32,  # image-to-video sizes are buckets of about target_size² pixels (both sides >= 16 in some)
        task_type=task,
    )
    vae = AutoencoderKLHunyuanVideo15(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(16, 16),
        layers_per_block=1,
        spatial_compression_ratio=4,
        temporal_compression_ratio=2,
        downsample_match_channel=False,
        upsample_match_channel=False,
    )
    text_encoder_2, tokenizer_2 = t5_text_encoder()
    tokenizer = qwen_tokenizer()
    return {
        "transformer": transformer,
        "vae": vae,
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=7.0),
        "text_encoder": _qwen_text_encoder(tokenizer),
        "tokenizer": tokenizer,
        "text_encoder_2": text_encoder_2,
        "tokenizer_2": tokenizer_2,
        "guider": ClassifierFreeGuidance(guidance_scale=1.0),
    }


def build(dest: Path, seed: int = 0) -> Path:
    """A tiny HunyuanVideo15Pipeline (text-to-video) folder at `dest`."""
    import torch
    from diffusers import HunyuanVideo15Pipeline

    torch.manual_seed(seed)
    return save(HunyuanVideo15Pipeline(**_components("t2v")), dest, "hunyuan15")


def build_i2v(dest: Path, seed: int = 0) -> Path:
    """A tiny HunyuanVideo15ImageToVideoPipeline folder at `dest`."""
    import torch
    from diffusers import HunyuanVideo15ImageToVideoPipeline
    from transformers import SiglipImageProcessor, SiglipVisionConfig, SiglipVisionModel

    torch.manual_seed(seed)
    image_encoder = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=12,  # the transformer's image_embed_dim
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=16,
            patch_size=4,
        )
    ).eval()
    feature_extractor = SiglipImageProcessor(size={"height": 16, "width": 16})
    pipe = HunyuanVideo15ImageToVideoPipeline(
        **_components("i2v"), image_encoder=image_encoder, feature_extractor=feature_extractor
    )
    return save(pipe, dest, "hunyuan15-i2v")
