"""A tiny HunyuanVideo image-to-video pipeline (`HunyuanVideoImageToVideoPipeline`) with random
weights at diffusers' own test sizes. Its text encoder is a LLaVA (a Llama with a CLIP vision
tower) made from its config. The pipeline cuts the image's and the prompt's embeddings out of the
encoded template at fixed token positions (the image at 5, the prompt at 103), so the Llama-3 style
tokenizer made here learns the words of that template: it splits into the same tokens as under
Llama 3, every other text into bytes. Two variants, as the two published checkpoints: the
transformer conditions by `latent_concat` (HunyuanVideo-I2V-33ch; the pipeline drops the first
latent frame's 4 frames, which `generate` asks for on top) or by `token_replace` (HunyuanVideo-I2V).
Nothing is fetched."""

from __future__ import annotations

from pathlib import Path

from facecast.jobs.tiny._parts import save
from facecast.jobs.tiny.hunyuan import EOS, clip_text_encoder, clip_tokenizer, hunyuan_vae, llama3_tokenizer

# LLaVA's CLIP at 336 px: (336 / 14)² = 576 image tokens, the template's image_emb_len
VISION_SIZE, VISION_PATCH = 336, 14


def build(dest: Path, seed: int = 0) -> Path:
    """A tiny HunyuanVideoImageToVideoPipeline folder at `dest` that conditions by `latent_concat`
    (as HunyuanVideo-I2V-33ch)."""
    return _build(dest, seed, "latent_concat", "hunyuan-i2v")


def build_token_replace(dest: Path, seed: int = 0) -> Path:
    """A tiny HunyuanVideoImageToVideoPipeline folder at `dest` that conditions by `token_replace`
    (the image's latents replace the first frame's; as HunyuanVideo-I2V)."""
    return _build(dest, seed, "token_replace", "hunyuan-i2v-token")


def _build(dest: Path, seed: int, condition: str, family: str) -> Path:
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoImageToVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
    )

    torch.manual_seed(seed)
    tokenizer = llama3_tokenizer(HunyuanVideoImageToVideoPipeline)
    pad, image_token = tokenizer.convert_tokens_to_ids([EOS, "<image>"])
    transformer = HunyuanVideoTransformer3DModel(
        # latent_concat: noise, the image's latents and their mask; token_replace: noise only
        in_channels=2 * 4 + 1 if condition == "latent_concat" else 4,
        out_channels=4,
        num_attention_heads=2,
        attention_head_dim=10,
        num_layers=1,
        num_single_layers=1,
        num_refiner_layers=1,
        patch_size=1,
        patch_size_t=1,
        guidance_embeds=condition == "token_replace",  # HunyuanVideo-I2V takes guidance_scale as an input
        text_embed_dim=16,
        pooled_projection_dim=8,
        rope_axes_dim=(2, 4, 4),
        image_condition_type=condition,
    )
    text = LlamaConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=pad,
        hidden_size=16,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=len(tokenizer),
        hidden_act="gelu",
    )
    vision = CLIPVisionConfig(
        hidden_size=8,
        intermediate_size=37,
        projection_dim=32,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=VISION_SIZE,
        patch_size=VISION_PATCH,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token)
    config.pad_token_id = pad  # the pipeline pads the prompt it expands by image tokens with this
    llava = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(
        crop_size=VISION_SIZE,
        size=VISION_SIZE,
        do_center_crop=True,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
        resample=3,
    )
    pipe = HunyuanVideoImageToVideoPipeline(
        text_encoder=llava,
        tokenizer=tokenizer,
        transformer=transformer,
        vae=hunyuan_vae(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
        text_encoder_2=clip_text_encoder(),
        tokenizer_2=clip_tokenizer(),
        image_processor=image_processor,
    )
    return save(pipe, dest, family)
