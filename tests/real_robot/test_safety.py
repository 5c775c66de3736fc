"""Safety filter: motion limits hold for any planner output (hypothesis), and every hold rule."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from configs.constants import ACTION_DIM, GRIPPER_INDICES, LEFT_ARM, LEFT_GRIPPER
from configs.embodiment import load_embodiment
from real_robot.safety import (ESTOP, INVALID_TARGET, OUT_OF_ORDER_FRAME, OUT_OF_ORDER_STATE, STALE_FRAME,
                               STALE_STATE, SafetyConfig, SafetyFilter, stopping_speed)

EMBODIMENTS = {name: load_embodiment(name) for name in ("aloha_viperx", "agilex_piper")}
TOL = 1e-9


def feed(f: SafetyFilter, now: float, state: np.ndarray | None = None, cameras=None) -> None:
    """Fresh joint state and frames from every camera (or the given ones), stamped ``now``."""
    f.update_state(f.command if state is None else state, now)
    for cam in f.cameras if cameras is None else cameras:
        f.update_frame(cam, now)


def ready_filter(embodiment, cfg: SafetyConfig | None = None, now: float = 0.0) -> SafetyFilter:
    f = SafetyFilter(embodiment, cfg or SafetyConfig())
    feed(f, now, state=embodiment.home)
    return f


# ------------------------------------------------------------------------------------ properties
def within_limits(emb):
    return st.tuples(*[st.floats(lo, hi) for lo, hi in zip(emb.position_lower, emb.position_upper)]).map(np.array)


planner_output = st.one_of(
    arrays(np.float64, ACTION_DIM, elements=st.floats(-10.0, 10.0)),  # beyond the limits, both ways
    arrays(np.float64, ACTION_DIM, elements=st.floats(allow_nan=True, allow_infinity=True)),  # garbage, huge
    arrays(np.float64, st.integers(0, 20), elements=st.floats(-1.0, 1.0)),  # wrong shapes
)
# One tick: planner output, whether inputs arrive fresh this tick, and an optional e-stop / reset.
tick = st.tuples(planner_output, st.booleans(), st.sampled_from([None, None, None, "estop", "reset"]))


@st.composite
def scenario(draw):
    emb = EMBODIMENTS[draw(st.sampled_from(sorted(EMBODIMENTS)))]
    cfg = SafetyConfig(velocity_scale=draw(st.floats(0.05, 1.0)), acceleration_scale=draw(st.floats(0.05, 1.0)),
                       position_margin=draw(st.sampled_from([0.0, 0.05])))
    return emb, cfg, draw(within_limits(emb)), draw(st.lists(tick, min_size=1, max_size=60))


@settings(max_examples=150, deadline=None, database=None)
@given(scenario())
def test_every_command_is_finite_in_limits_and_velocity_acceleration_bounded(case):
    emb, cfg, start, ticks = case
    f = SafetyFilter(emb, cfg)
    f.update_state(start, 0.0)
    dt = emb.dt
    max_step = emb.velocity_limit * cfg.velocity_scale * dt + TOL
    max_step_change = emb.acceleration_limit * cfg.acceleration_scale * dt * dt + TOL
    published = [start, start]  # at rest before the first tick
    for k, (target, fresh, event) in enumerate(ticks, start=1):
        now = k * dt
        if fresh:
            feed(f, now, state=start)
        if event == "estop":
            f.estop()
        elif event == "reset":
            f.reset()
        cmd = f.filter(target, now)
        assert cmd.position is not None
        p = cmd.position
        assert p.shape == (ACTION_DIM,) and np.all(np.isfinite(p))
        assert np.all(p >= emb.position_lower) and np.all(p <= emb.position_upper)
        step, prev_step = p - published[-1], published[-1] - published[-2]
        assert np.all(np.abs(step) <= max_step)
        assert np.all(np.abs(step - prev_step) <= max_step_change)
        published.append(p)


@settings(max_examples=100, deadline=None, database=None)
@given(st.floats(0.0, 10.0), st.floats(0.01, 5.0), st.sampled_from([0.02, 0.005]))
def test_stopping_speed_covers_exactly_the_distance(distance, brake, dt):
    u = float(stopping_speed(np.array(distance), np.array(brake), dt))
    speeds = np.maximum(u - brake * np.arange(0, int(u / brake) + 2), 0.0)
    assert speeds.sum() * dt == pytest.approx(distance, rel=1e-9, abs=1e-12)


# ------------------------------------------------------------------------------------ hold rules
def test_no_command_before_first_joint_state(embodiment):
    f = SafetyFilter(embodiment, SafetyConfig())
    for cam in f.cameras:
        f.update_frame(cam, 0.0)
    cmd = f.filter(embodiment.home, 0.0)
    assert cmd.position is None and cmd.hold and "no joint state" in cmd.reasons[0]
    f.update_state(embodiment.home, 0.0)
    cmd = f.filter(embodiment.home, 0.0)
    assert not cmd.hold and np.array_equal(cmd.position, embodiment.home)


def test_stale_frame_holds(embodiment):
    f = ready_filter(embodiment)
    cams = [c for c in f.cameras if c != "cam_left_wrist"]
    target = embodiment.home.copy()
    target[0] += 0.5
    feed(f, 0.4, cameras=cams)
    assert not f.filter(target, 0.4).hold  # left wrist frame is 0.4 s old: fine
    feed(f, 0.6, cameras=cams)
    cmd = f.filter(target, 0.6)  # 0.6 s old: hold
    assert cmd.hold and any("cam_left_wrist" in r and "0.600" in r for r in cmd.reasons)
    assert f.stats[STALE_FRAME] == 1
    feed(f, 0.62)
    assert not f.filter(target, 0.62).hold


def test_camera_that_never_sent_a_frame_holds(embodiment):
    f = SafetyFilter(embodiment, SafetyConfig())
    f.update_state(embodiment.home, 0.0)
    f.update_frame("cam_high", 0.0)
    cmd = f.filter(embodiment.home, 0.0)
    assert cmd.hold and any("no frame from cam_left_wrist" in r for r in cmd.reasons)


def test_stale_joint_state_holds(embodiment):
    f = ready_filter(embodiment)
    f.filter(embodiment.home, 0.0)
    for cam in f.cameras:
        f.update_frame(cam, 0.15)
    cmd = f.filter(embodiment.home, 0.15)
    assert cmd.hold and any("joint state" in r and "0.150" in r for r in cmd.reasons)
    assert f.stats[STALE_STATE] == 1


def test_out_of_order_stamps_hold_until_fresh_in_order_input(embodiment):
    f = ready_filter(embodiment, now=1.0)
    assert f.update_state(embodiment.home, 0.9) is False
    assert f.filter(embodiment.home, 1.0).hold
    assert f.stats[OUT_OF_ORDER_STATE] == 1
    assert f.update_state(embodiment.home, 1.02)
    assert not f.filter(embodiment.home, 1.02).hold

    assert f.update_frame("cam_high", 0.5) is False
    cmd = f.filter(embodiment.home, 1.02)
    assert cmd.hold and any("out-of-order frame from cam_high" in r for r in cmd.reasons)
    assert f.filter(embodiment.home, 1.03).hold  # still held: no in-order frame yet
    feed(f, 1.04)
    assert not f.filter(embodiment.home, 1.04).hold
    assert f.stats[OUT_OF_ORDER_FRAME] == 2


def test_estop_holds_until_reset_even_with_fresh_inputs(embodiment):
    f = ready_filter(embodiment)
    target = embodiment.home.copy()
    target[LEFT_ARM] += 0.3
    f.estop()
    for k in range(1, 20):
        feed(f, k * embodiment.dt)
        cmd = f.filter(target, k * embodiment.dt)
        assert cmd.hold and cmd.reasons == ("e-stop latched",)
        assert np.array_equal(cmd.position, embodiment.home)
    assert f.stats[ESTOP] == 19
    f.reset()
    feed(f, 20 * embodiment.dt)
    cmd = f.filter(target, 20 * embodiment.dt)
    assert not cmd.hold and not np.array_equal(cmd.position, embodiment.home)


def test_hold_while_moving_is_a_controlled_stop(embodiment):
    f = ready_filter(embodiment)
    target = embodiment.home.copy()
    target[0] = 2.5
    dt = embodiment.dt
    for k in range(1, 30):
        feed(f, k * dt)
        f.filter(target, k * dt)
    assert f.velocity[0] == pytest.approx(embodiment.velocity_limit[0])
    f.estop()
    positions = []
    for k in range(30, 60):
        feed(f, k * dt)
        positions.append(f.filter(target, k * dt).position[0])
    steps = np.diff(positions)
    assert np.all(steps >= 0) and steps[-1] == 0.0  # slowed down monotonically, then stood still
    v = embodiment.velocity_limit[0]
    assert positions[-1] - positions[0] <= v * v / (2 * embodiment.acceleration_limit[0])


def test_nan_from_planner_holds_and_logs(embodiment, caplog):
    f = ready_filter(embodiment)
    target = embodiment.home.copy()
    target[LEFT_GRIPPER] = np.nan
    with caplog.at_level(logging.WARNING, logger="real_robot.safety"):
        cmd = f.filter(target, 0.0)
    assert cmd.hold and np.array_equal(cmd.position, embodiment.home)
    assert any("non-finite at indices [6]" in r for r in cmd.reasons)
    assert "non-finite" in caplog.text
    assert f.stats[INVALID_TARGET] == 1
    assert f.filter(np.zeros(13), 0.0).hold  # wrong shape too
    assert f.stats[INVALID_TARGET] == 2


def test_rejects_malformed_joint_state(embodiment):
    f = SafetyFilter(embodiment, SafetyConfig())
    assert f.update_state(np.zeros(13), 0.0) is False
    assert f.update_state(np.full(ACTION_DIM, np.inf), 0.0) is False
    assert f.command is None
    with pytest.raises(ValueError, match="unknown camera"):
        f.update_frame("cam_nope", 0.0)


# ------------------------------------------------------------------------------------ motion
def test_converges_to_a_reachable_target_without_overshoot(embodiment):
    f = ready_filter(embodiment)
    rng = np.random.default_rng(0)
    target = rng.uniform(embodiment.position_lower, embodiment.position_upper)
    positions = [embodiment.home]
    for k in range(1, 200):
        feed(f, k * embodiment.dt)
        positions.append(f.filter(target, k * embodiment.dt).position)
    np.testing.assert_allclose(positions[-1], target, atol=1e-12)
    steps = np.diff(positions, axis=0) * np.sign(target - embodiment.home)
    assert np.all(steps >= -1e-12)  # straight there, no overshoot
    np.testing.assert_allclose(f.velocity, 0.0, atol=1e-9)


def test_finite_out_of_limit_target_is_clamped_to_the_margin(embodiment):
    f = ready_filter(embodiment, SafetyConfig(position_margin=0.1))
    target = np.full(ACTION_DIM, 100.0)
    for k in range(1, 200):
        feed(f, k * embodiment.dt)
        cmd = f.filter(target, k * embodiment.dt)
    expected = embodiment.position_upper - 0.1
    expected[list(GRIPPER_INDICES)] = embodiment.position_upper[list(GRIPPER_INDICES)]  # no margin on grippers
    np.testing.assert_allclose(cmd.position, expected, atol=1e-12)


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("field, value", [
    ("velocity_scale", 0.0), ("velocity_scale", 1.5), ("acceleration_scale", -1.0),
    ("max_frame_age_s", 0.0), ("max_state_age_s", float("nan")), ("position_margin", -0.1),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"{field}.*{value}"):
        SafetyConfig(**{field: value})


def test_margin_that_leaves_no_room_is_refused(embodiment):
    with pytest.raises(ValueError, match="position_margin"):
        SafetyFilter(embodiment, SafetyConfig(position_margin=2.0))
