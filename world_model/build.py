"""Build the world model's components from a named configuration (``configs/world_model/<name>.yaml``).

``build_transformer`` works on any device, the meta device included (the tests build the 1.3B, 5B and
14B architectures that way, with no weights). ``build_pipeline`` assembles a trainable tiny world model
from scratch; real checkpoints load with ``WorldModelPipeline.from_pretrained`` or the converters in
``world_model.convert``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from omegaconf import OmegaConf
from transformers import UMT5Config, UMT5EncoderModel

from configs.constants import ACTION_DIM, RESIDUAL_PREDICTIONS
from configs.schema import WorldModelConfig, validate
from world_model.latents import PatchCodec, codec_channels, codec_strides
from world_model.model import ActionEncoder, zero_output_layer
from world_model.pipeline import WorldModelPipeline, make_scheduler
from world_model.text import build_word_tokenizer, tiny_text_encoder

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "world_model"
# UMT5-XXL encoder (Wan's text encoder): d_model 4096, 24 layers, 64 heads, FFN 10240, 256384 tokens.
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu")


def load_preset(name: str) -> WorldModelConfig:
    path = CONFIG_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise FileNotFoundError(f"world model configuration '{name}': no {path}; known: {known}")
    return validate(OmegaConf.load(path), WorldModelConfig)


def build_transformer(cfg: WorldModelConfig) -> WanTransformer3DModel:
    kw = dict(cfg.transformer)
    kw["patch_size"] = tuple(kw.get("patch_size", (1, 2, 2)))
    return WanTransformer3DModel(**kw)


def build_codec(cfg: WorldModelConfig):
    """An unfitted codec (a fitted PatchCodec comes from ``PatchCodec.fit`` on training frames)."""
    kw = {k: v for k, v in cfg.codec.items() if k != "type"}
    if cfg.codec["type"] == "patch":
        return PatchCodec(**kw)
    return AutoencoderKLWan(**kw)


def build_text_encoder(cfg: WorldModelConfig, instructions: list[str] | None = None):
    """(tokenizer, text encoder). The tiny one needs every instruction it will see, for its vocabulary."""
    kw = {k: v for k, v in cfg.text_encoder.items() if k != "type"}
    if cfg.text_encoder["type"] == "tiny_umt5":
        if not instructions:
            raise ValueError(f"world model '{cfg.name}': the tiny text encoder builds its vocabulary from the "
                             "task instructions; pass them")
        tokenizer = build_word_tokenizer(instructions)
        return tokenizer, tiny_text_encoder(len(tokenizer), **kw)
    return None, UMT5EncoderModel(UMT5Config(**UMT5_XXL, **kw))  # the real tokenizer ships with the checkpoint


def build_pipeline(cfg: WorldModelConfig, instructions: list[str], action_stats: tuple | None = None,
                   codec=None, seed: int = 0) -> WorldModelPipeline:
    """A freshly initialised world model (the tiny preset trains from this), around ``codec`` when given."""
    torch.manual_seed(seed)
    codec = build_codec(cfg) if codec is None else codec
    transformer = build_transformer(cfg)
    if cfg.prediction in RESIDUAL_PREDICTIONS:
        zero_output_layer(transformer)
    z = codec_channels(codec)
    # gated_residual: a gate per latent value; masked_residual: a change logit per latent position
    out = {"gated_residual": 2 * z, "masked_residual": z + 1}.get(cfg.prediction, z)
    if transformer.config.in_channels not in (z, 2 * z + 4) or transformer.config.out_channels != out:
        raise ValueError(f"world model '{cfg.name}': transformer in/out channels "
                         f"{transformer.config.in_channels}/{transformer.config.out_channels} do not fit the "
                         f"codec's {z} latent channels (expected in {z} or {2 * z + 4}, out {out} for "
                         f"prediction '{cfg.prediction}')")
    tokenizer, text_encoder = build_text_encoder(cfg, instructions)
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    action_encoder = ActionEncoder(action_dim=ACTION_DIM, frames_per_latent=codec_strides(codec)[0],
                                   hidden_dim=cfg.action_hidden_dim, embed_dim=dim)
    if action_stats is not None:
        action_encoder.set_normalization(*action_stats)
    pipe = WorldModelPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=codec,
                              scheduler=make_scheduler("euler", cfg.flow_shift), action_encoder=action_encoder,
                              num_history_frames=cfg.num_history_frames, max_text_length=cfg.max_text_length,
                              image_size=cfg.image_size, fps=cfg.fps, future_condition=cfg.future_condition,
                              prediction=cfg.prediction, hold_detail=cfg.hold_detail,
                              skip_sigma_data=cfg.skip_sigma_data, change_threshold=cfg.change_threshold)
    return pipe
