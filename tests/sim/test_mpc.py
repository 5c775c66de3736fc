"""eva-mpc: candidate construction, the optimisers on a known cost, and whole episodes on tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import configs
from configs.constants import ACTION_DIM, GRIPPER_INDICES
from configs.schema import MPCConfig, validate
from sim.mpc import EPISODES_FILE, RECORD_KEY, ChunkMPC, run_mpc
from sim.records import load_records
from world_model.pipeline import load_world_model

SIZE = 64


def mpc_config(tmp_path, wm, *overrides) -> MPCConfig:
    return validate(configs.compose("mpc", [
        f"checkpoint={wm}", f"output_dir={tmp_path}", "tasks.lift_bar.step_limit=60", f"render.height={SIZE}",
        f"render.width={SIZE}", "episodes_per_task=1", "candidates=3", "iterations=2", "elites=1",
        "imagination.chunk_frames=4", "imagination.steps=2", *overrides]), MPCConfig)


@pytest.fixture(scope="module")
def pipe(tiny_world_model):
    return load_world_model(tiny_world_model)


def test_candidates_start_at_the_proposal_and_interpolate_between_frames(tmp_path, pipe, embodiment):
    mpc = ChunkMPC(pipe, mpc_config(tmp_path, "unused"), embodiment)
    assert (mpc.every, mpc.frames, mpc.steps) == (5, 4, 20)
    proposal = np.tile((embodiment.position_lower + embodiment.position_upper) / 2, (20, 1))
    np.testing.assert_array_equal(mpc.chunks(proposal, np.zeros((1, 4, ACTION_DIM)))[0], proposal)
    offsets = np.zeros((1, 4, ACTION_DIM))
    offsets[0, :, 0] = [0.1, 0.2, 0.3, 0.4]
    offsets[0, :, GRIPPER_INDICES[0]] = np.pi * 0.1
    chunk = mpc.chunks(proposal, offsets)[0] - proposal
    np.testing.assert_allclose(chunk[[0, 5, 10, 15, 19], 0], [0.0, 0.1, 0.2, 0.3, 0.4], atol=1e-12)
    np.testing.assert_allclose(chunk[2, 0], 0.04, atol=1e-12)  # linear between step 0 and the first frame
    np.testing.assert_allclose(chunk[5, GRIPPER_INDICES[0]], 0.1, atol=1e-12)  # grippers scaled by 1/pi
    huge = mpc.chunks(proposal, np.full((1, 4, ACTION_DIM), 100.0))[0]
    assert np.all(huge <= embodiment.position_upper) and np.all(huge >= embodiment.position_lower)


@pytest.mark.parametrize("controller", ["random_shooting", "cem", "mppi"])
def test_the_optimisers_lower_a_known_cost(tmp_path, pipe, embodiment, monkeypatch, controller):
    """Cost: squared distance of the chunk's last command to a target 0.15 rad away on two joints."""
    cfg = mpc_config(tmp_path, "unused", "candidates=32", "iterations=4", "elites=6", "noise_std=0.1")
    mpc = ChunkMPC(pipe, cfg, embodiment)
    proposal = np.tile((embodiment.position_lower + embodiment.position_upper) / 2, (20, 1))
    target = proposal[-1].copy()
    target[[1, 8]] += 0.15

    def evaluate(offsets, proposal, *args):
        chunks = mpc.chunks(proposal, offsets)
        return chunks, ((chunks[:, -1] - target) ** 2).sum(axis=1)

    monkeypatch.setattr(mpc, "evaluate", evaluate)
    chunk, info = mpc.plan(controller, proposal, None, None, "", "lift_bar", None, 0, np.random.default_rng(0))
    assert info["cost_proposal"] == pytest.approx(2 * 0.15 ** 2)
    assert info["cost_chosen"] == pytest.approx(((chunk[-1] - target) ** 2).sum())
    # random shooting in 4 x 14 dimensions barely beats the proposal; CEM's and MPPI's updates get most of the way
    assert info["cost_chosen"] < (1.0 if controller == "random_shooting" else 0.5) * info["cost_proposal"]
    np.testing.assert_array_equal(chunk[0], proposal[0])  # a chunk starts where the robot is
    base, empty = mpc.plan("base", proposal, None, None, "", "lift_bar", None, 0, np.random.default_rng(0))
    assert base is proposal and empty == {}


def test_imagined_candidates_match_separate_rollouts(tmp_path, pipe, embodiment):
    """One history encoded once for all candidates = the same rollouts with the history repeated."""
    mpc = ChunkMPC(pipe, mpc_config(tmp_path, "unused"), embodiment)
    rng = np.random.default_rng(0)
    history = rng.integers(0, 255, (4, SIZE, SIZE, 3), dtype=np.uint8)
    history_actions = rng.normal(0, 0.1, (4, ACTION_DIM))
    chunks = rng.normal(0, 0.1, (3, 20, ACTION_DIM))
    frames = mpc.imagine(history, history_actions, "lift the bar", chunks, seed=5)
    from sim.neural_env import frame_rate_actions

    cond = frame_rate_actions(np.repeat(history_actions[None], 3, axis=0), chunks, 5, 4)
    hist = torch.from_numpy(history.transpose(0, 3, 1, 2))[None].expand(3, -1, -1, -1, -1)
    separate = pipe.rollout(hist, "lift the bar", torch.from_numpy(cond), num_frames=4, steps=2, seed=[5, 5, 5])
    torch.testing.assert_close(frames, separate, rtol=0, atol=1e-6)
    assert frames.shape == (3, 4, 3, SIZE, SIZE)


@pytest.mark.parametrize("cost", ["goal", "judge"])
def test_eva_mpc_runs_every_controller_and_resumes(tmp_path, tiny_world_model, cost):
    overrides = [f"cost={cost}"]
    if cost == "judge":
        from sim.judge import SuccessJudge

        torch.manual_seed(0)
        SuccessJudge(tasks=("lift_bar",), image_size=(SIZE, SIZE), channels=(8, 16), num_keypoints=4,
                     hidden=16).save_pretrained(tmp_path / "judge")
        overrides.append(f"judge={tmp_path / 'judge'}")
    cfg = mpc_config(tmp_path / "out", tiny_world_model, *overrides)
    summary = run_mpc(cfg)["controllers"]
    records = load_records(tmp_path / "out" / EPISODES_FILE, RECORD_KEY)
    assert {k[0] for k in records} == {"base", "random_shooting", "cem", "mppi"} and len(records) == 4
    for (controller, task, seed), r in records.items():
        assert task == "lift_bar" and seed == 300000
        assert r["steps"] == 60 and r["plans"] == 3 and not r["success"]  # 60 steps: too short to lift the bar
        if controller in ("random_shooting", "cem"):  # the proposal is a candidate: never worse in the model's eyes
            assert r["cost_improvement_mean"] >= 0  # (MPPI executes its weighted mean, which may score worse)
    assert summary["cem"]["lift_bar"]["episodes"] == 1
    assert json.loads((tmp_path / "out" / "mpc.json").read_text())["config"]["cost"] == cost
    assert (tmp_path / "out" / "report.md").is_file() and (tmp_path / "out" / "success.png").is_file()
    before = (tmp_path / "out" / EPISODES_FILE).read_text()
    run_mpc(cfg)  # everything recorded: nothing runs again
    assert (tmp_path / "out" / EPISODES_FILE).read_text() == before
    if cost == "goal":  # another optimiser setting: the MPC episodes run again, the base policy's do not
        run_mpc(mpc_config(tmp_path / "out", tiny_world_model, *overrides, "noise_std=0.05"))
        assert len((tmp_path / "out" / EPISODES_FILE).read_text().splitlines()) == 4 + 3


def test_mpc_config_refuses_bad_values(tmp_path):
    with pytest.raises(ValueError, match="'elites'"):
        mpc_config(tmp_path, "x", "elites=3")
    with pytest.raises(ValueError, match="'controllers'"):
        mpc_config(tmp_path, "x", "controllers=[cem,mpc_by_hand]")
    with pytest.raises(ValueError, match="base_policy.kind"):
        mpc_config(tmp_path, "x", "base_policy.kind=planner")


def test_settings_digest_holds_only_what_each_optimiser_reads(tmp_path):
    from sim.mpc import episode_settings

    base = mpc_config(tmp_path, "x")
    changed = {"elites=2": {"cem"}, "min_std=0.02": {"cem"}, "temperature=0.5": {"mppi"},
               "noise_std=0.05": {"random_shooting", "cem", "mppi"}}
    for override, readers in changed.items():
        other = mpc_config(tmp_path, "x", override)
        differ = {c for c in ("base", "random_shooting", "cem", "mppi")
                  if episode_settings(other, c, "lift_bar") != episode_settings(base, c, "lift_bar")}
        assert differ == readers, override
