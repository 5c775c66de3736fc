"""Tiny checkpoints for post-training tests: a 64x64 world model (two SFT steps) and a random IDM."""

from __future__ import annotations

import pytest

import configs
from configs.schema import CalibrateRewardConfig, GRPOConfig, validate
from tests.conftest import tiny_idm
from tests.world_model.conftest import wm_train_config

# fast settings shared by every eva-grpo run in the tests
TINY_GRPO = ["num_future_frames=4", "steps=3", "group_size=2", "prompts_per_step=2", "updates_per_step=1",
             "micro_batch=2", "checkpoint_every=1", "video_every=0", "lora_rank=4", "early_steps=1",
             "sde_window=[1,3]"]


@pytest.fixture(scope="session")
def tiny_models(lift_dataset, tmp_path_factory):
    """(dataset root, world-model dir, IDM dir, calibration file)."""
    from rl_post_train.calibrate import calibrate
    from world_model.train import train

    root = tmp_path_factory.mktemp("grpo")
    wm = train(wm_train_config(lift_dataset, root / "wm", "max_steps=2"))
    tiny_idm(root / "idm")
    calibration = root / "calibration.json"
    calibrate(validate(configs.compose("calibrate_reward", [
        f"checkpoint={wm}", f"idm_checkpoint={root / 'idm'}", f"dataset_root={lift_dataset}",
        f"output={calibration}", "num_prompts=4", "batch_size=2", "num_future_frames=4", "steps=2"]),
        CalibrateRewardConfig))
    return lift_dataset, wm, root / "idm", calibration


def grpo_config(models, run_dir, *overrides) -> GRPOConfig:
    root, wm, idm, calibration = models
    extra = [] if "reward=perceptual" in overrides else [f"reward.executability.calibration_file={calibration}"]
    return validate(configs.compose("grpo", [f"dataset_root={root}", f"checkpoint={wm}", f"idm_checkpoint={idm}",
                                             f"run_dir={run_dir}", *extra, *TINY_GRPO, *overrides]), GRPOConfig)
