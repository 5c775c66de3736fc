"""eva-eval-wm end to end on a tiny checkpoint: every method, both modes, files written."""

from __future__ import annotations

import json

import configs
from configs.schema import EvalWMConfig, validate
from tests.conftest import tiny_idm
from tests.world_model.conftest import wm_train_config
from world_model.evaluate import METHODS, METRICS, MODES, evaluate_wm
from world_model.train import train


def test_evaluation_scores_every_method_in_both_modes(lift_dataset, tmp_path):
    ckpt = train(wm_train_config(lift_dataset, tmp_path / "run", "max_steps=1"))
    cfg = validate(configs.compose("eval_wm", [f"checkpoint={ckpt}", f"dataset_root={lift_dataset}",
                                               f"output_dir={tmp_path / 'eval'}", "num_future_frames=4",
                                               "num_windows=3", "batch_size=2", "steps=2", "num_videos=1"]),
                   EvalWMConfig)
    summary = evaluate_wm(cfg)
    on_disk = json.loads((tmp_path / "eval" / "wm_eval.json").read_text())
    assert on_disk == summary
    for mode in MODES:
        for method in METHODS:
            assert set(summary["modes"][mode][method]) == set(METRICS)
        repeat = summary["modes"][mode]["repeat_last"]
        assert repeat["repetition"]["mean"] == 1.0  # a repeated frame repeats
        assert 0 < repeat["lpips"]["mean"] < 1 and repeat["psnr"]["mean"] > 10
    assert (tmp_path / "eval" / "grid_0.mp4").exists() and (tmp_path / "eval" / "wm_eval.png").exists()
    assert "| repeat_last |" in (tmp_path / "eval" / "wm_eval.md").read_text()


def test_executability_and_imagined_episodes_in_mujoco(lift_dataset, tmp_path):
    ckpt = train(wm_train_config(lift_dataset, tmp_path / "run", "max_steps=1"))
    idm = tiny_idm(tmp_path / "idm")
    cfg = validate(configs.compose("eval_wm", [
        f"checkpoint={ckpt}", f"dataset_root={lift_dataset}", f"output_dir={tmp_path / 'eval'}", "task=[lift_bar]",
        "num_future_frames=4", "num_windows=2", "batch_size=2", "steps=2", "num_videos=0", f"idm_checkpoint={idm}",
        "episodes_per_task=1", "hold_steps=0"]), EvalWMConfig)
    summary = evaluate_wm(cfg)
    exe = summary["executability"]
    assert set(exe) == {*METHODS, "ground_truth"} and not summary["executability_calibrated"]
    assert "reward" not in exe["model"] and exe["model"]["penalty"]["mean"] >= 0
    run = summary["mujoco"]["lift_bar"]
    assert run["episodes"] == 1 and run["success"] in (0.0, 1.0) and len(run["per_episode"]) == 1
    assert (tmp_path / "eval" / "imagined_lift_bar.mp4").exists()
    assert "imagined episodes executed open loop" in (tmp_path / "eval" / "wm_eval.md").read_text()


def test_imagined_episodes_need_an_idm():
    import pytest

    with pytest.raises(ValueError, match="idm_checkpoint"):
        validate(configs.compose("eval_wm", ["episodes_per_task=2"]), EvalWMConfig)
