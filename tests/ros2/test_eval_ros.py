"""``eva-eval-ros``: the installed planner_node against sim_robot_node in episode mode, over loopback DDS, on
the seeds of an in-process ``eva-eval`` run, compared with it; a rerun resumes from the episode records.

Every DDS participant (the two node processes per task) runs with ``real_robot.ros_env.loopback_env``
(``real_robot.ros_workspace.workspace_env``) and a random domain id. Needs the ``ros`` extra; skipped without it.
"""

from __future__ import annotations

import json

import pytest

import configs
from configs.schema import EvalRosConfig, EvaluateConfig, validate

SIZE = 64
STEPS = 30  # control steps per episode: two plans of 4 imagined frames (20 steps each)


def overrides(wm, idm, tmp_path, name: str) -> list[str]:
    return ["policy=planner", f"policy.planner.world_model={wm}", f"policy.planner.idm={idm}",
            "policy.planner.num_future_frames=4", "policy.planner.steps=2", "task=[lift_bar]",
            f"tasks.lift_bar.step_limit={STEPS}", f"render.height={SIZE}", f"render.width={SIZE}",
            "render.cameras=[cam_high]", "eval.episodes_per_task=2", "eval.only_expert_solvable=false",
            f"output_dir={tmp_path / name}"]


def test_eval_ros_runs_the_reference_seeds_through_ros_and_resumes(install, tiny_world_model, tmp_path):
    pytest.importorskip("rclpy")
    from real_robot.ros_eval import EPISODES_FILE, evaluate_ros
    from sim.evaluate import evaluate
    from tests.conftest import tiny_idm

    idm = tiny_idm(tmp_path / "idm", size=SIZE)
    reference = evaluate(validate(configs.compose("evaluate", [
        *overrides(tiny_world_model, idm, tmp_path, "in_process"), "eval.save_video=none", "workers=1"]),
        EvaluateConfig))
    cfg = validate(configs.compose("eval_ros", [
        *overrides(tiny_world_model, idm, tmp_path, "ros"), f"install={install}",
        f"reference={tmp_path / 'in_process' / 'eval_info.json'}", "episode_timeout_s=240"]), EvalRosConfig)
    assert cfg.policy.planner.asynchronous  # planner_node's mode; the reference planned synchronously

    info = evaluate_ros(cfg)
    ours = info["per_task"]["lift_bar"]["per_episode"]
    ref = reference["per_task"]["lift_bar"]["per_episode"]
    assert [e["seed"] for e in ours] == [e["seed"] for e in ref] == [100000, 100001]
    for mine, theirs in zip(ours, ref):
        assert mine["instruction"] == theirs["instruction"]  # the same (eval) instruction split
        assert mine["steps"] == STEPS or mine["success"]  # until success or the step limit, as in process
        assert mine["sim_s"] == pytest.approx(mine["steps"] * 0.02)
    rows = json.loads((tmp_path / "ros" / "comparison.json").read_text())
    assert rows["pooled"]["n_seeds"] == 2 and rows["pooled"]["instruction_mismatches"] == 0
    assert 0.0 <= rows["pooled"]["fisher_p"] <= 1.0
    assert (tmp_path / "ros" / "report.md").is_file() and (tmp_path / "ros" / "comparison.png").is_file()
    sim_log = (tmp_path / "ros" / "logs" / "lift_bar_sim_robot_node.log").read_text()
    assert sim_log.count(": started;") == 2, sim_log  # each episode began only after the planner's echo
    planner_log = (tmp_path / "ros" / "logs" / "lift_bar_planner_node.log").read_text()
    assert "episode 2 from" in planner_log, planner_log

    # a rerun finds every episode done with the same settings: no node starts, the records stay as they were
    records = (tmp_path / "ros" / EPISODES_FILE).read_text()
    again = evaluate_ros(cfg)
    assert (tmp_path / "ros" / EPISODES_FILE).read_text() == records
    assert (tmp_path / "ros" / "logs" / "lift_bar_sim_robot_node.log").read_text() == sim_log
    assert again["per_task"] == info["per_task"]


def test_eval_ros_refuses_a_reference_of_another_planner(tiny_world_model, tmp_path):
    from real_robot.ros_eval import reference_seeds

    ref = tmp_path / "eval_info.json"
    ref.write_text(json.dumps({"policy": {"kind": "planner", "planner": {"world_model": "other", "steps": 2}},
                               "per_task": {"lift_bar": {"per_episode": [{"seed": 100000}]}}}))
    cfg = validate(configs.compose("eval_ros", overrides(tiny_world_model, "idm", tmp_path, "ros")), EvalRosConfig)
    with pytest.raises(ValueError, match=r"policy.planner.world_model is 'other' there"):
        reference_seeds(cfg, ref)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        reference_seeds(cfg, tmp_path / "missing.json")
