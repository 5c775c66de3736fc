"""eva-grpo-compare on experiment directories written in the layout eva-grpo-experiment leaves."""

from __future__ import annotations

import json

import pytest
import yaml

from configs.schema import GRPOCompareConfig
from rl_post_train.compare import compare, load_run

BEFORE = {"reward": 0.40, "jerk": 100.0, "vel_violation_frac": 0.02, "acc_violation_frac": 0.10,
          "lpips_planner": 0.10, "lpips_simulator": 0.10, "success": 0.2}


def wm_eval(reward, jerk, vel_violation_frac, acc_violation_frac, lpips_planner, lpips_simulator, success,
            repetition=0.5) -> dict:
    exe = {"reward": {"mean": reward, "sem": 0.01}, "jerk": {"mean": jerk, "sem": 1.0},
           "vel_violation_frac": {"mean": vel_violation_frac, "sem": 0.0},
           "acc_violation_frac": {"mean": acc_violation_frac, "sem": 0.0}}
    modes = {m: {"model": {"lpips": {"mean": v, "sem": 0.0}, "repetition": {"mean": repetition, "sem": 0.0}}}
             for m, v in (("planner", lpips_planner), ("simulator", lpips_simulator))}
    return {"checkpoint": "x", "executability": {"model": exe}, "modes": modes,
            "mujoco": {"lift_bar": {"success": success, "episodes": 50, "ci95": [0, 1]}}}


def experiment(root, name, grpo_overrides, **after):
    d = root / name
    for sub, values in (("eval_before", BEFORE), ("eval_executability", {**BEFORE, **after})):
        (d / sub).mkdir(parents=True)
        (d / sub / "wm_eval.json").write_text(json.dumps(wm_eval(**values)))
    (d / "grpo_experiment_config.yaml").write_text(yaml.safe_dump({
        "checkpoint": "runs/wm/model", "executability_overrides": ["lambda_vel_limit=1e6"],
        "grpo_overrides": ["max_minutes=30", *grpo_overrides]}))
    return str(d)


def test_targets_are_checked_per_run(tmp_path):
    experiment(tmp_path, "good", [], reward=0.50, jerk=80.0, vel_violation_frac=0.01,
                      acc_violation_frac=0.05, lpips_planner=0.104)
    run = load_run(tmp_path / "good", "executability", 0.20, 0.05)
    assert run.changes["reward"] == pytest.approx(0.25) and run.missed == [] and run.seed == 0
    experiment(tmp_path, "blurry", ["seed=3"], reward=0.50, jerk=80.0, vel_violation_frac=0.03,
               acc_violation_frac=0.05, lpips_simulator=0.106, success=0.1)
    run = load_run(tmp_path / "blurry", "executability", 0.20, 0.05)
    assert run.seed == 3
    assert run.missed == ["velocity violations not down", "LPIPS simulator > +5%", "MuJoCo success down"]


def test_seeds_of_one_setting_are_pooled(tmp_path):
    dirs = [experiment(tmp_path, "a0", ["kl_beta=0.05"], reward=0.48),
            experiment(tmp_path, "a1", ["kl_beta=0.05", "seed=1"], reward=0.36),
            experiment(tmp_path, "b0", ["kl_beta=0.01"], reward=0.60, jerk=50.0, vel_violation_frac=0.0,
                       acc_violation_frac=0.0)]
    out = compare(GRPOCompareConfig(experiments=dirs, output=str(tmp_path / "cmp")))
    text = out.read_text()
    # kl_beta=0.05: +20% and -10%, mean +5%, sample sd 21.2 points; kl_beta=0.01: one run meeting every target
    assert "| `kl_beta=0.05` | 2 (0, 1) | +5.0% | 21.2 pt | -10.0% .. +20.0% | 0 of 2 |" in text
    assert "| `kl_beta=0.01` | 1 (0) | +50.0% | - | +50.0% .. +50.0% | 1 of 1 |" in text
    assert "`lambda_vel_limit=1e6`, `max_minutes=30`" in text  # the shared settings, named once
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0


def test_seeds_from_different_before_evaluations_are_flagged(tmp_path):
    dirs = [experiment(tmp_path, "a0", [], reward=0.48), experiment(tmp_path, "a1", ["seed=1"], reward=0.36)]
    text = compare(GRPOCompareConfig(experiments=dirs, output=str(tmp_path / "same"))).read_text()
    assert "do not pool cleanly" not in text
    before = tmp_path / "a1" / "eval_before" / "wm_eval.json"  # as if the base model had been retrained
    before.write_text(json.dumps(wm_eval(**{**BEFORE, "reward": 0.41})))
    text = compare(GRPOCompareConfig(experiments=dirs, output=str(tmp_path / "differ"))).read_text()
    assert "start from different before rewards (0.4000, 0.4100)" in text and "do not pool cleanly" in text


def test_a_missing_evaluation_names_the_file_and_the_command(tmp_path):
    experiment(tmp_path, "a", [])
    (tmp_path / "a" / "eval_executability" / "wm_eval.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"eval_executability/wm_eval.json: missing; run eva-grpo-experiment"):
        load_run(tmp_path / "a", "executability", 0.2, 0.05)
    with pytest.raises(ValueError, match="experiments"):
        GRPOCompareConfig(experiments=[])
