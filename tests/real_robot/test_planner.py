"""Planner core: history buffer, chunk shape and timing, determinism, replanning, and the safety
filter between the models and the robot (NaN from the IDM, stale frames); then ``policy=planner``
closed loop in MuJoCo. Tiny world model (one training step) and random IDM, 64x64 at 10 fps."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import configs
from configs.constants import ACTION_DIM
from configs.schema import EvaluateConfig, PlannerConfig, RenderConfig, validate
from idm.model import InverseDynamicsModel
from real_robot.planner import STAGES, HistoryBuffer, Planner
from tests.conftest import tiny_idm
from tests.world_model.conftest import wm_train_config
from world_model.pipeline import load_world_model
from world_model.train import train

SIZE = 64
FUTURE = 4  # imagined frames per plan: 4 frames at 10 fps = 20 control steps at 50 Hz
CHUNK = FUTURE * 50 // 10


def frame(value: int) -> np.ndarray:
    return np.full((SIZE, SIZE, 3), value, dtype=np.uint8)


# ------------------------------------------------------------------------------------ history
def test_history_pads_the_start_with_the_oldest_frame():
    h = HistoryBuffer(["cam_high"], length=4, fps=10, image_size=[SIZE, SIZE])
    assert not h.ready
    assert h.push("cam_high", frame(7), 0.0)
    assert h.ready
    first = h.frames("cam_high")
    assert first.shape == (4, 3, SIZE, SIZE) and first.dtype == torch.uint8 and bool((first == 7).all())
    assert h.push("cam_high", frame(9), 0.1)
    assert h.frames("cam_high")[:, 0, 0, 0].tolist() == [7, 7, 7, 9]


def test_history_keeps_frames_at_the_world_model_rate():
    h = HistoryBuffer(["cam_high"], length=4, fps=10, image_size=[SIZE, SIZE])
    kept = [t for t in range(25) if h.push("cam_high", frame(t), t * 0.02)]  # a 50 Hz camera
    assert kept == [0, 5, 10, 15, 20]
    assert list(h.stamps["cam_high"]) == pytest.approx([0.1, 0.2, 0.3, 0.4])  # the last 4
    assert h.frames("cam_high")[:, 0, 0, 0].tolist() == [5, 10, 15, 20]
    assert h.push("cam_high", frame(1), 0.4 + 0.099)  # camera jitter within the tolerance
    assert not h.push("cam_high", frame(2), 0.4 + 0.099 + 0.05)


def test_history_rejects_out_of_order_stamps_and_wrong_frames():
    h = HistoryBuffer(["cam_high"], length=4, fps=10, image_size=[SIZE, SIZE])
    h.push("cam_high", frame(1), 1.0)
    h.push("cam_high", frame(1), 1.05)  # too soon: not kept, but seen
    with pytest.raises(ValueError, match=r"cam_high.*1\.040000.*1\.050000"):
        h.push("cam_high", frame(1), 1.04)
    with pytest.raises(ValueError, match=r"expected a \(64, 64, 3\) uint8"):
        h.push("cam_high", np.zeros((32, 32, 3), np.uint8), 2.0)
    with pytest.raises(ValueError, match=r"expected a \(64, 64, 3\) uint8"):
        h.push("cam_high", np.zeros((SIZE, SIZE, 3), np.float32), 2.0)
    with pytest.raises(ValueError, match=r"expected a \(64, 64, 3\) uint8"):
        h.push("cam_high", np.zeros((SIZE, SIZE, 4), np.uint8), 2.0)
    with pytest.raises(ValueError, match="unknown camera 'cam_left_wrist'"):
        h.push("cam_left_wrist", frame(1), 2.0)


# ------------------------------------------------------------------------------------ config
def test_planner_policy_config_composes_and_checks_the_safety_settings():
    cfg = validate(configs.compose("evaluate", ["policy=planner", "policy.planner.safety.velocity_scale=0.5",
                                                "policy.planner.replan_every=10"]), EvaluateConfig)
    assert cfg.policy.kind == "planner" and cfg.policy.planner.replan_every == 10
    assert cfg.policy.planner.safety.velocity_scale == 0.5
    with pytest.raises(ValueError, match="safety.velocity_scale"):
        validate(configs.compose("evaluate", ["policy=planner", "policy.planner.safety.velocity_scale=2"]),
                 EvaluateConfig)
    with pytest.raises(Exception, match="max_age"):  # an unknown field
        validate(configs.compose("evaluate", ["policy=planner", "+policy.planner.safety.max_age=1.0"]),
                 EvaluateConfig)
    with pytest.raises(ValueError, match="planner.sampler"):
        PlannerConfig(sampler="ddim")


# ------------------------------------------------------------------------------------ planner
@pytest.fixture(scope="module")
def checkpoints(lift_dataset, tmp_path_factory):
    root = tmp_path_factory.mktemp("planner")
    wm = train(wm_train_config(lift_dataset, root / "run", "max_steps=1"))
    return wm, tiny_idm(root / "idm")


def make_planner(checkpoints, embodiment, **overrides) -> Planner:
    wm, idm = checkpoints
    cfg = PlannerConfig(world_model=str(wm), idm=str(idm), num_future_frames=FUTURE, steps=2, **overrides)
    return Planner.from_config(cfg, embodiment)


def run_steps(planner: Planner, embodiment, n: int, observe_ticks: int | None = None, start: int = 0) -> list:
    """n control ticks at rest from tick ``start``, observing a frame at each of the first ``observe_ticks``
    ticks (default all)."""
    commands = []
    for t in range(start, start + n):
        now = t * embodiment.dt
        if observe_ticks is None or t < observe_ticks:
            planner.observe({"cam_high": frame(t % 256)}, now)
        commands.append(planner.step(embodiment.home, now))
    return commands


def test_plan_is_one_finite_chunk_at_the_control_rate(checkpoints, embodiment):
    planner = make_planner(checkpoints, embodiment)
    planner.reset("lift the bar")
    planner.observe({"cam_high": frame(100)}, 0.0)
    chunk = planner.plan(0.0)
    assert chunk.shape == (CHUNK, ACTION_DIM) and np.all(np.isfinite(chunk))
    assert len(planner.timings) == 1 and all(planner.timings[0][s] >= 0 for s in STAGES)
    assert planner.timings[0]["total"] >= planner.timings[0]["world_model"] + planner.timings[0]["idm"]


def test_plans_are_deterministic_for_a_seed(checkpoints, embodiment):
    def first_plans(planner: Planner) -> tuple[np.ndarray, np.ndarray]:
        planner.reset("lift the bar")
        planner.observe({"cam_high": frame(100)}, 0.0)
        return planner.plan(0.0), planner.plan(0.0)

    a0, a1 = first_plans(make_planner(checkpoints, embodiment))
    warm = make_planner(checkpoints, embodiment)
    assert warm.warmup() > 0
    b0, b1 = first_plans(warm)
    np.testing.assert_array_equal(a0, b0)
    np.testing.assert_array_equal(a1, b1)  # plan 1 uses seed + 1, after a reset too
    assert not np.array_equal(a0, a1)
    c0, _ = first_plans(make_planner(checkpoints, embodiment, seed=5))
    assert not np.array_equal(a0, c0)
    # noise_scale reaches the sampler: at 0 the initial noise, the only thing a seed decides, is gone
    z0, z1 = first_plans(make_planner(checkpoints, embodiment, noise_scale=0.0))
    np.testing.assert_allclose(z0, z1, atol=1e-6)
    assert not np.allclose(a0, z0, atol=1e-6)


def test_sampling_settings_reach_the_world_model(checkpoints, embodiment, monkeypatch):
    planner = make_planner(checkpoints, embodiment, noise_scale=0.5, init_sigma=0.8)
    calls, rollout = [], planner.pipe.rollout
    monkeypatch.setattr(planner.pipe, "rollout", lambda *a, **kw: calls.append(kw) or rollout(*a, **kw))
    planner.reset("lift the bar")
    planner.observe({"cam_high": frame(100)}, 0.0)
    planner.plan(0.0)
    assert calls and {k: calls[0][k] for k in ("steps", "sampler", "flow_shift", "noise_scale", "init_sigma")} == \
        {"steps": 2, "sampler": "euler", "flow_shift": 3.0, "noise_scale": 0.5, "init_sigma": 0.8}


@pytest.mark.parametrize("replan_every,plans", [(0, 3), (7, 7)])
def test_replans_when_the_chunk_is_used_up(checkpoints, embodiment, replan_every, plans):
    planner = make_planner(checkpoints, embodiment, replan_every=replan_every)
    planner.reset("lift the bar")
    commands = run_steps(planner, embodiment, 2 * CHUNK + 5)  # 45 ticks: plans at 0, 20, 40 (or every 7)
    assert planner.num_plans == plans and len(planner.timings) == plans
    assert not any(c.hold for c in commands)
    assert all(np.all(np.isfinite(c.position)) for c in commands)
    summary = planner.latency_summary()
    assert set(summary) == set(STAGES) and summary["total"]["count"] == plans
    assert 0 < summary["total"]["median"] <= summary["total"]["p95"]


def test_replanning_mid_frame_skips_the_rows_already_past(checkpoints, embodiment):
    planner = make_planner(checkpoints, embodiment, replan_every=7)
    planner.reset("lift the bar")
    run_steps(planner, embodiment, 8)  # second plan at tick 7; newest history frame is tick 5
    assert planner.cursor == 7 - 5 + 1 and planner.execute_until == 2 + 7


def test_nan_from_the_idm_becomes_a_hold(checkpoints, embodiment, monkeypatch):
    import real_robot.planner as planner_module

    monkeypatch.setattr(planner_module, "decode_for_execution",
                        lambda idm, video, num_history, hz: np.full((1, CHUNK + 1, ACTION_DIM), np.nan))
    planner = make_planner(checkpoints, embodiment)
    planner.reset("lift the bar")
    commands = run_steps(planner, embodiment, 5)
    for c in commands:
        assert c.hold and any("invalid" in r for r in c.reasons)
        assert c.position is not None and np.all(np.isfinite(c.position))
    np.testing.assert_allclose(commands[-1].position, embodiment.home)  # held at rest


def test_stale_or_out_of_order_frames_hold(checkpoints, embodiment):
    planner = make_planner(checkpoints, embodiment)
    planner.reset("lift the bar")
    commands = run_steps(planner, embodiment, 35, observe_ticks=6)  # the camera stops after tick 5
    last_frame, max_age = 5 * embodiment.dt, planner.safety.cfg.max_frame_age_s
    assert sum(c.hold for c in commands) == 4  # ticks 31..34
    for t, c in enumerate(commands):
        stale = t * embodiment.dt - last_frame > max_age
        assert c.hold == stale and (not stale or any("stale frame" in r for r in c.reasons))
        assert np.all(np.isfinite(c.position))
    planner.observe({"cam_high": frame(3)}, 0.05)  # back in time: dropped, and the filter holds
    assert planner.history.latest_stamp("cam_high") == last_frame
    command = planner.step(embodiment.home, 0.7)
    assert command.hold and any("out-of-order" in r for r in command.reasons)


def test_no_planning_while_estopped_and_a_fresh_plan_after_the_reset(checkpoints, embodiment):
    planner = make_planner(checkpoints, embodiment)
    planner.reset("lift the bar")
    run_steps(planner, embodiment, 3)
    assert planner.num_plans == 1 and planner.cursor < planner.execute_until  # mid-chunk
    planner.safety.estop()
    held = run_steps(planner, embodiment, 30, start=3)  # well past the chunk's end
    assert planner.num_plans == 1 and all(c.hold and c.reasons == ("e-stop latched",) for c in held)
    planner.safety.reset()
    command = run_steps(planner, embodiment, 1, start=33)[0]
    assert planner.num_plans == 2 and not command.hold


def test_a_new_episode_while_estopped_keeps_the_held_command(checkpoints, embodiment):
    """The simulator starts a new episode (a different joint state) while the e-stop is latched: the published
    command must not move to the new state until the reset."""
    planner = make_planner(checkpoints, embodiment)
    planner.reset("lift the bar")
    run_steps(planner, embodiment, 3)
    planner.safety.estop()
    held = run_steps(planner, embodiment, 20, start=3)[-1].position
    planner.reset("lift the bar")
    moved = embodiment.home + 0.05
    for t in range(23, 33):
        planner.observe({"cam_high": frame(t)}, t * embodiment.dt)
        command = planner.step(moved, t * embodiment.dt)
        assert command.hold and np.array_equal(command.position, held)


class GatedPlans:
    """Stands in for the models in asynchronous tests: each plan waits until the test releases it, then returns
    rows whose first joint counts 0, 0.001, ... from ``base`` (plan i: base = 0.1 * i), or raises."""

    def __init__(self, fail: bool = False):
        self.release, self.started, self.calls, self.fail = threading.Event(), threading.Event(), 0, fail

    def __call__(self, history, seed):
        self.started.set()
        assert self.release.wait(10), "the test never released the plan"
        self.release.clear()
        self.calls += 1
        if self.fail:
            raise RuntimeError("model exploded")
        chunk = np.zeros((CHUNK, ACTION_DIM))
        chunk[:, 0] = 0.1 * (self.calls - 1) + 0.001 * np.arange(CHUNK)
        return chunk, 0.0, 0.0


def async_planner(checkpoints, embodiment, plans: GatedPlans, **overrides) -> Planner:
    planner = make_planner(checkpoints, embodiment, asynchronous=True, **overrides)
    planner._imagine_and_decode = plans
    planner.reset("lift the bar")
    planner.observe({"cam_high": frame(1)}, 0.0)
    return planner


def wait_for(plans: GatedPlans, planner: Planner) -> None:
    plans.release.set()
    planner._pending.result(timeout=10)


def test_asynchronous_planning_keeps_the_loop_running_and_adopts_the_plan_on_time(checkpoints, embodiment):
    plans = GatedPlans()
    planner = async_planner(checkpoints, embodiment, plans)
    state = embodiment.home
    first = planner.step(state, 0.0)  # starts plan 0 in the background and returns at once
    assert plans.started.wait(10) and planner.num_plans == 1
    for t in range(1, 6):  # no plan yet: the arm stays where it is, at the control rate
        c = planner.step(state, t * embodiment.dt)
        np.testing.assert_allclose(c.position, state)
    assert first.position is not None and not len(planner.chunk)
    wait_for(plans, planner)
    planner.step(state, 6 * embodiment.dt)  # adopted 6 ticks after the frame: rows 0..5 are past
    assert planner.cursor == 7 and planner.chunk[6, 0] == pytest.approx(0.006)
    assert planner.timings[0]["frame_age"] == 0.0 and planner._pending is None


def test_asynchronous_planning_starts_early_holds_the_last_row_and_drops_stale_plans(checkpoints, embodiment):
    plans = GatedPlans()
    planner = async_planner(checkpoints, embodiment, plans)
    planner.step(embodiment.home, 0.0)
    wait_for(plans, planner)
    planner.timings[0]["total"] = 5 * embodiment.dt  # plans take 5 ticks: the next one starts 5 ticks early
    planner.step(embodiment.home, embodiment.dt)  # adopts plan 0
    t = 2
    while planner._pending is None:
        planner.step(embodiment.home, t * embodiment.dt)
        t += 1
    assert planner.execute_until - planner.cursor <= 5 and planner.num_plans == 2
    for _ in range(2 * CHUNK):  # plan 1 is late: past the chunk's end its last row is the target
        planner.step(embodiment.home, t * embodiment.dt)
        t += 1
    assert planner.cursor > CHUNK and planner.chunk[-1, 0] == pytest.approx(0.001 * (CHUNK - 1))
    stale = planner._pending
    planner.reset("lift the bar")  # plan 1 belongs to the last episode
    plans.release.set()
    stale.result(timeout=10)
    planner.observe({"cam_high": frame(2)}, t * embodiment.dt)
    planner.step(embodiment.home, t * embodiment.dt)
    assert not len(planner.chunk) and planner.num_plans == 1  # nothing adopted; plan 0 of the new episode started
    wait_for(plans, planner)
    planner.close()


def test_a_failed_asynchronous_plan_holds(checkpoints, embodiment, caplog):
    plans = GatedPlans(fail=True)
    planner = async_planner(checkpoints, embodiment, plans)
    planner.step(embodiment.home, 0.0)
    wait_for_failure = planner._pending
    plans.release.set()
    with pytest.raises(RuntimeError):
        wait_for_failure.result(timeout=10)
    command = planner.step(embodiment.home, embodiment.dt)
    assert command.hold and any("invalid" in r for r in command.reasons)
    assert "planning failed" in caplog.text
    assert planner.num_plans == 2 and planner._pending is not None  # the next plan started at once
    wait_for_failure = planner._pending
    plans.release.set()
    with pytest.raises(RuntimeError):
        wait_for_failure.result(timeout=10)
    planner.close()


def test_checkpoints_must_match_the_planner(checkpoints, embodiment, tmp_path):
    wm, _ = checkpoints
    other = InverseDynamicsModel(image_size=(32, 32), channels=(8, 16), num_keypoints=4, mlp_hidden=16,
                                 joint_names=tuple(embodiment.joint_names))
    with pytest.raises(ValueError, match="must agree"):
        Planner(load_world_model(wm), other, embodiment, PlannerConfig(num_future_frames=FUTURE))
    with pytest.raises(ValueError, match="replan_every"):
        make_planner(checkpoints, embodiment, replan_every=CHUNK + 1)


# ------------------------------------------------------------------------------------ simulator
def test_planner_policy_closed_loop_in_mujoco(checkpoints, embodiment):
    from sim.policies import PlannerPolicy, make_policy
    from sim.rollout import run_policy
    from sim.tasks import make_task

    wm, idm = checkpoints
    cfg = validate(configs.compose("evaluate", [
        "policy=planner", f"policy.planner.world_model={wm}", f"policy.planner.idm={idm}",
        f"policy.planner.num_future_frames={FUTURE}", "policy.planner.steps=2", "task=[lift_bar]"]), EvaluateConfig)
    env = make_task(configs.load_task_config("lift_bar"), embodiment,
                    RenderConfig(height=SIZE, width=SIZE, cameras=["cam_high"]))
    env.step_lim = 60
    try:
        policy = make_policy(cfg.policy, env)
        assert isinstance(policy, PlannerPolicy)
        ep = run_policy(env, policy, seed=100000)
    finally:
        env.close_env()
    assert ep.failure_reason is None or ep.failure_reason.startswith("step limit"), ep.failure_reason
    assert ep.steps == 60 or ep.success
    assert np.all(embodiment.within_position_limits(ep.actions))
    summary = policy.latency_summary()
    assert summary["total"]["count"] == -(-ep.steps // CHUNK)  # one plan per 20-step chunk
    assert all(np.isfinite(summary[s]["median"]) and np.isfinite(summary[s]["p95"]) for s in STAGES)


def test_eva_eval_with_the_planner_reports_stage_latency(checkpoints, tmp_path):
    from sim.evaluate import evaluate

    wm, idm = checkpoints
    cfg = validate(configs.compose("evaluate", [
        "policy=planner", f"policy.planner.world_model={wm}", f"policy.planner.idm={idm}",
        f"policy.planner.num_future_frames={FUTURE}", "policy.planner.steps=2", "task=[lift_bar]",
        "tasks.lift_bar.step_limit=40", f"render.height={SIZE}", f"render.width={SIZE}", "render.cameras=[cam_high]",
        "eval.episodes_per_task=1", "eval.only_expert_solvable=false", "eval.save_video=none", "workers=1",
        f"output_dir={tmp_path}"]), EvaluateConfig)
    info = evaluate(cfg)
    latency = info["per_task"]["lift_bar"]["planner_latency_s"]
    assert latency["total"]["count"] == 2 and latency["world_model"]["median"] > 0  # 40 steps, 20-step chunks
    assert len(info["per_episode"][0]["plan_timings"]) == 2
