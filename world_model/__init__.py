"""Latent flow-matching video world model on diffusers' Wan (see README.md).

The classes a saved ``WorldModelPipeline`` names in its ``model_index.json`` are importable from
here, which is where diffusers' loader looks for them.
"""

from world_model.latents import PatchCodec
from world_model.model import ActionEncoder
from world_model.pipeline import WorldModelPipeline

__all__ = ["ActionEncoder", "PatchCodec", "WorldModelPipeline"]
