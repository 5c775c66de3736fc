"""eva-grpo-experiment on tiny checkpoints: every stage runs, the report has its numbers, a rerun skips stages."""

from __future__ import annotations

import json

import pytest

import configs
from configs.schema import GRPOExperimentConfig, validate
from rl_post_train import experiment
from rl_post_train.experiment import report, run_stages, selection_section, training_groups_section
from tests.rl_post_train.conftest import TINY_GRPO


def quoted(items: list[str]) -> str:
    """A Hydra list of override strings (each quoted: they contain '=')."""
    return "[" + ",".join(f"'{i}'" for i in items) + "]"


def test_experiment_runs_every_stage_and_reports(tiny_models, tmp_path, monkeypatch):
    root, wm, idm, _ = tiny_models
    seen = {}  # stage -> its executability reward config, recorded on the way through

    def recording(stage, fn, get):
        def run(cfg):
            seen.setdefault(stage, []).append(get(cfg))
            return fn(cfg)
        monkeypatch.setattr(experiment, stage, run)

    recording("calibrate", experiment.calibrate, lambda c: c.reward.executability)
    recording("train", experiment.train, lambda c: c.reward.executability)
    recording("evaluate_wm", experiment.evaluate_wm, lambda c: c.reward)
    overrides = [f"checkpoint={wm}", f"idm_checkpoint={idm}", f"train_dataset={root}", f"test_dataset={root}",
                 f"output_dir={tmp_path}", "episodes_per_task=1",
                 "executability_overrides=" + quoted(["motion_reference=recorded", "min_speed_fraction=0.5",
                                                        "video_motion_fraction=0.5"]),
                 "calibrate_overrides=" + quoted(["num_prompts=2", "batch_size=2", "num_future_frames=4", "steps=2"]),
                 "grpo_overrides=" + quoted([*TINY_GRPO, "max_steps=1", "val_every=1", "val_episodes_per_task=1",
                                             "val_windows=2"]),
                 "eval_overrides=" + quoted(["task=[lift_bar]", "num_future_frames=4", "num_windows=2", "batch_size=2",
                                             "steps=2", "num_videos=1", "hold_steps=0"])]
    cfg = validate(configs.compose("grpo_experiment", overrides), GRPOExperimentConfig)
    evals = run_stages(cfg)
    assert set(evals) == {"before", "executability", "perceptual"}
    # the executability settings reach the calibration, the executability GRPO run and every evaluation
    reward_settings = [seen["calibrate"][0], seen["train"][0], *seen["evaluate_wm"]]
    assert len(reward_settings) == 5
    assert all(r.motion_reference == "recorded" and r.min_speed_fraction == 0.5 and r.video_motion_fraction == 0.5
               for r in reward_settings)
    assert {"motion_gate", "video_gate", "smoothness"} <= set(evals["before"]["executability"]["model"])
    assert "untrained" in evals["before"]["modes"]["planner"] and "untrained" not in evals["perceptual"]["modes"]["planner"]
    text = report(cfg, evals)
    assert "| executability reward (EVA, higher is better) |" in text and "| lift_bar |" in text
    assert "| video gate (1 = the frames move at least the floor) |" in text
    assert "| velocity-limit term P_vel (squared excess, unweighted) |" in text
    assert "`max_steps=1`" in text and "| motion agreement with the recording, planner mode" in text
    assert "`video_motion_fraction=0.5`" in text and "Share of the SFT model's mean penalty by weighted term" in text
    assert (tmp_path / "reward_curves.png").exists() and (tmp_path / "report.md").read_text() == text
    assert "Training groups of `grpo_executability`: 1 iteration(s) logged, too few to compare first and last." in text
    for reward in ("executability", "perceptual"):  # checkpoint selection on both rewards
        assert f"Checkpoint selection in `grpo_{reward}` (1 validations of 2 windows" in text
    assert "| agreement |" in text and "| lpips |" in text
    assert text.count("| smoothness |") == 1  # logged by the executability run's validations only
    assert "![predicted frames](prediction_frames.png)" in text and (tmp_path / "prediction_frames.png").exists()
    stamp = (tmp_path / "eval_before" / "wm_eval.json").stat().st_mtime_ns
    run_stages(cfg)  # everything exists: nothing reruns
    assert (tmp_path / "eval_before" / "wm_eval.json").stat().st_mtime_ns == stamp


def test_executability_overrides_must_name_reward_fields():
    with pytest.raises(ValueError, match="executability_overrides"):
        validate(configs.compose("grpo_experiment", ["executability_overrides=['motion_ref=recorded']"]),
                 GRPOExperimentConfig)


def test_training_groups_table_is_first_and_last_means(tmp_path):
    run = tmp_path / "grpo_executability"
    run.mkdir()
    rows = [{"step": i + 1, "reward": float(i), "reward/executability/jerk": 10.0 * (i + 1), "kl": 0.0,
             "time/update": 1.0} for i in range(5)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    lines = training_groups_section(tmp_path, ["executability"], window=2)
    # first 2 iterations: reward 0, 1; last 2: 3, 4. jerk 10, 20 and 40, 50
    assert "| `reward` | 0.5 | 3.5 | +600.0% |" in lines
    assert "| `reward/executability/jerk` | 15 | 45 | +200.0% |" in lines
    assert "| `kl` | 0 | 0 | - |" in lines
    assert not any("time/update" in line for line in lines)
    assert "iterations 1-2" in lines[2] and "iterations 4-5" in lines[2]


def test_selection_section_names_the_smoothness_condition(tmp_path):
    run = tmp_path / "grpo_executability"
    run.mkdir()
    start = {"step": 0, "reward": 0.2, "lpips": 0.1, "agreement": 0.5, "smoothness": 0.5}
    last = {"step": 5, "reward": 0.3, "lpips": 0.1, "agreement": 0.5, "smoothness": 0.4}
    (run / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (start, last)))
    summary = {"start": start, "selected": start, "val_windows": 16, "val_lpips_tolerance": 0.05,
               "val_agreement_tolerance": 0.1, "val_smoothness_tolerance": 0.0}
    (run / "selection.json").write_text(json.dumps(summary))
    text = "\n".join(selection_section(tmp_path, ["executability"]))
    assert ("eligible while LPIPS is within +5%, the motion agreement within -10% and the smoothness at least "
            "100% of the start's): the evaluated model is iteration 0 of 5 (the SFT model") in text
    assert "| smoothness | 0.5 | 0.5 (+0.0%) | 0.4 (-20.0%) |" in text
