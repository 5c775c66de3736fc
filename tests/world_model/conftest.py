"""Tiny world-model training settings (the two-episode lift_bar dataset is in tests/conftest.py)."""

from __future__ import annotations

import configs
from configs.schema import TrainWMConfig, validate

TINY_WM = ["world_model.image_size=[64,64]", "world_model.transformer.num_layers=1",
           "world_model.transformer.ffn_dim=64", "world_model.transformer.attention_head_dim=8",
           "world_model.transformer.num_attention_heads=2", "batch_size=2", "val_windows=2", "log_every=1",
           "warmup_steps=1", "val_episodes_per_task=1", "task=[lift_bar]", "num_future_frames=4"]


def wm_train_config(root, run_dir, *overrides) -> TrainWMConfig:
    return validate(configs.compose("train_wm", [f"dataset_root={root}", f"run_dir={run_dir}", *TINY_WM,
                                                 *overrides]), TrainWMConfig)
