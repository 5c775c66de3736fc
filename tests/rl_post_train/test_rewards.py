"""Rewards against values computed by hand (EVA eqs 5-9; RLVR-World's perceptual and repetition rewards)."""

from __future__ import annotations

import json

import pytest
import torch

from configs.schema import ExecutabilityRewardConfig
from rl_post_train.rewards import (Calibration, ExecutabilityReward, finite_differences, huber, motion_reward,
                                   perceptual_reward, repetition_reward, weighted_sum)

# fps = 1 and rate = video: dt = 1, so velocities, accelerations and jerks are plain differences
FPS = 1.0
JOINT = 1  # left shoulder


def one_joint(values) -> torch.Tensor:
    a = torch.zeros(1, len(values), 14)
    a[0, :, JOINT] = torch.tensor(values, dtype=torch.float32)
    return a


def reward(embodiment, p0=2.0, min_speed=0.0, **cfg):
    cfg = ExecutabilityRewardConfig(**{"rate": "video", "delta_acc": 0.5, "delta_jerk": 1.5, "lambda_jerk": 1.0,
                                       "lambda_acc": 1.0, "lambda_vel_limit": 1.0, "lambda_acc_limit": 1.0,
                                       "gamma": 1.0, **cfg})
    return ExecutabilityReward(cfg, embodiment, Calibration(p0=p0, min_speed=min_speed, num_rollouts=1, source="test"))


def test_huber_matches_eq5():
    x = torch.tensor([0.0, 0.5, -1.0, 2.0, -3.0])
    want = [0.0, 0.125, 0.5, 1.0 * (2.0 - 0.5), 1.0 * (3.0 - 0.5)]
    assert huber(x, 1.0).tolist() == pytest.approx(want)


def test_finite_differences_of_a_cubic():
    t = torch.arange(8, dtype=torch.float64)
    a = (t ** 3).view(1, -1, 1)
    v, acc, jerk = finite_differences(a, dt=0.5)
    assert torch.allclose(jerk, torch.full_like(jerk, 6 / 0.5 ** 3))  # third difference of t^3 is 6
    assert v.shape[1] == 7 and acc.shape[1] == 6 and jerk.shape[1] == 5


def test_smooth_ramp_has_no_penalty(embodiment):
    r = reward(embodiment)(one_joint([0.1 * t for t in range(6)]), FPS)
    c = r.components
    for k in ("jerk", "acc_smooth", "vel_limit", "acc_limit", "penalty"):
        assert c[k].item() == pytest.approx(0.0, abs=1e-6), k
    assert r.total.item() == pytest.approx(1.0)


def test_step(embodiment):
    # a = 0 0 0 1 1 1: v = 0 0 1 0 0, acc = 0 1 -1 0, jerk = 1 -2 1
    r = reward(embodiment)(one_joint([0, 0, 0, 1, 1, 1]), FPS)
    c = r.components
    acc_smooth = (0.5 * (1 - 0.25) * 2) / 4  # Huber(+-1; 0.5) = 0.375, twice, over 4 steps
    jerk = (0.5 + 1.5 * (2 - 0.75) + 0.5) / 3  # Huber(1; 1.5) = 0.5, Huber(-2; 1.5) = 1.875
    assert c["acc_smooth"].item() == pytest.approx(acc_smooth)
    assert c["jerk"].item() == pytest.approx(jerk)
    assert c["vel_limit"].item() == 0 and c["acc_limit"].item() == 0
    assert r.total.item() == pytest.approx((1 + (acc_smooth + jerk) / 2.0) ** -1)


def test_term_shares_weigh_each_term(embodiment):
    # the step above: acc_smooth 0.1875, jerk 0.9583; a ramp at 4 rad/s adds vel_limit (4 - vmax)^2
    r = reward(embodiment, lambda_jerk=2.0, lambda_vel_limit=10.0)
    step, ramp = one_joint([0, 0, 0, 1, 1, 1]), one_joint([4.0 * t for t in range(6)])
    parts = r.penalty(torch.cat([step, ramp]), FPS)
    vmax = float(embodiment.velocity_limit[JOINT])
    acc_smooth, jerk, vel = 0.1875 / 2, (0.5 + 1.875 + 0.5) / 3 / 2, (4 - vmax) ** 2 / 2  # means over 2 samples
    weighted = {"jerk": 2.0 * jerk, "acc_smooth": acc_smooth, "vel_limit": 10.0 * vel, "acc_limit": 0.0}
    total = sum(weighted.values())
    shares = r.term_shares(parts)
    assert shares == pytest.approx({k: v / total for k, v in weighted.items()}, rel=1e-5)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert r.term_shares(r.penalty(one_joint([0.0] * 6), FPS)) == {k: 0.0 for k in weighted}  # no penalty


def test_jitter(embodiment):
    e = 0.1  # a = 0 e 0 e 0 e: acc = -+2e, jerk = +-4e, all inside the Huber thresholds
    r = reward(embodiment, gamma=2.0)(one_joint([0, e, 0, e, 0, e]), FPS)
    p = 0.5 * (2 * e) ** 2 + 0.5 * (4 * e) ** 2
    assert r.components["penalty"].item() == pytest.approx(p)
    assert r.total.item() == pytest.approx((1 + p / 2.0) ** -2.0)


def test_limit_violation(embodiment):
    # slope 4 rad/s on a joint limited to pi rad/s: P_vel = (4 - pi)^2 at every step
    vmax = float(embodiment.velocity_limit[JOINT])
    r = reward(embodiment, lambda_vel_limit=10.0)(one_joint([4.0 * t for t in range(6)]), FPS)
    assert r.components["vel_limit"].item() == pytest.approx((4 - vmax) ** 2, rel=1e-5)
    assert r.components["vel_violation_frac"].item() == 1.0
    assert r.components["gripper_vel_violation_frac"].item() == 0.0  # the shoulder, not a gripper
    assert r.components["seam_jump"].item() == pytest.approx(4.0)  # the first step, on its largest joint
    assert r.total.item() == pytest.approx(1 / (1 + 10 * (4 - vmax) ** 2 / 2.0), rel=1e-5)
    # at 10 fps the left gripper (limit 5 /s) opens fully in the third step only: one of five steps over
    assert embodiment.joint_names[6] == "left_gripper"
    gripper = torch.zeros(1, 6, 14)
    gripper[0, 3:, 6] = 1.0
    g = reward(embodiment)(gripper, 10.0).components
    assert g["gripper_vel_violation_frac"].item() == pytest.approx(0.2)
    assert g["vel_violation_frac"].item() == pytest.approx(0.2) and g["seam_jump"].item() == 0.0
    # an acceleration beyond 25 rad/s^2: a jump of 30 rad/s in one step
    amax = float(embodiment.acceleration_limit[JOINT])
    r = reward(embodiment, lambda_jerk=0, lambda_acc=0, lambda_vel_limit=0)(one_joint([0, 0, 0, 30, 60, 90]), FPS)
    assert r.components["acc_limit"].item() == pytest.approx((30 - amax) ** 2 / 4)


def test_frozen_video_earns_nothing(embodiment):
    """The reward hack EVA reports: a static robot has zero jerk. The motion gate removes its reward."""
    frozen = one_joint([0.3] * 8)
    moving = one_joint([0.1 * t for t in range(8)])
    r = reward(embodiment, min_speed=0.1 / 14 / 2)
    assert r(frozen, FPS).components["penalty"].item() == 0.0
    assert r(frozen, FPS).total.item() == 0.0
    assert r(moving, FPS).total.item() == pytest.approx(1.0)


def test_recorded_motion_gate_asks_for_the_commanded_motion_of_each_window(embodiment):
    """motion_reference=recorded: the floor is a fraction of the speed recorded in the same window."""
    r = reward(embodiment, motion_reference="recorded", min_speed_fraction=0.5)
    ramp = [0.1 * t for t in range(8)]  # 0.1 rad/s on one joint: mean speed 0.1 / 14
    recorded = torch.cat([one_joint(ramp), one_joint([0.3] * 8)])  # the robot moved, then stood still
    decoded = torch.cat([one_joint([0.025 * t for t in range(8)]), one_joint([0.3] * 8)])  # a quarter speed, frozen
    out = r(decoded, FPS, recorded)
    # window 0: a quarter of the recorded speed against a floor of half of it; window 1 asked for no motion
    assert out.components["motion_floor"].tolist() == pytest.approx([0.5 * 0.1 / 14, 0.0])
    assert out.components["motion_gate"].tolist() == pytest.approx([0.5, 1.0])
    assert out.total.tolist() == pytest.approx([0.5, 1.0])
    assert r(torch.cat([one_joint([0.3] * 8)] * 2), FPS, recorded).total.tolist() == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="recorded actions"):
        r(decoded, FPS)
    with pytest.raises(ValueError, match="batch of 2"):
        r(decoded, FPS, recorded[:1])


def two_windows():
    """Decoded actions at full speed in two windows; the newest history frame, the recording and a prediction:
    the first recording steps by 0.2 into its first frame and holds, the prediction by 0.05; the second
    recording and prediction stand still."""
    decoded = torch.cat([one_joint([0.1 * t for t in range(8)])] * 2)
    newest = torch.full((2, 1, 3, 4, 4), 0.5)
    truth = torch.stack([torch.full((3, 3, 4, 4), 0.7), torch.full((3, 3, 4, 4), 0.5)])
    pred = torch.stack([torch.full((3, 3, 4, 4), 0.55), torch.full((3, 3, 4, 4), 0.5)])
    return decoded, newest, truth, pred


def test_video_gate_reads_motion_from_the_frames_not_the_idm(embodiment):
    """video_motion_fraction: the frames' own change from the newest history frame against the recorded video's.

    The decoded actions move at full speed in both windows (the IDM reads motion), but the first prediction
    changes its pixels by 0.05 where the recording changed by 0.2: a floor of half of it (0.1) halves the reward.
    The second window's recording did not change, so it asks for no motion.
    """
    r = reward(embodiment, video_motion_fraction=0.5)
    decoded, newest, truth, pred = two_windows()
    out = r(decoded, FPS, newest=newest, pred=pred, truth=truth)
    assert out.components["video_motion"].tolist() == pytest.approx([0.05, 0.0])
    assert out.components["video_motion_floor"].tolist() == pytest.approx([0.1, 0.0])
    assert out.components["video_gate"].tolist() == pytest.approx([0.5, 1.0])
    assert out.total.tolist() == pytest.approx([0.5, 1.0])
    # a prediction that moves more than the floor is not rewarded for moving more
    assert r(decoded, FPS, newest=newest, pred=truth, truth=truth).total.tolist() == pytest.approx([1.0, 1.0])
    # off (the default): the gate is logged but does not scale the reward
    off = reward(embodiment)(decoded, FPS, newest=newest, pred=pred, truth=truth)
    assert off.components["video_gate"].tolist() == pytest.approx([1.0, 1.0])
    assert off.total.tolist() == pytest.approx([1.0, 1.0])
    with pytest.raises(ValueError, match="predicted and recorded frames"):
        r(decoded, FPS)
    with pytest.raises(ValueError, match="expected"):
        r(decoded, FPS, newest=newest, pred=pred, truth=truth[:, :2])


def test_video_gate_by_agreement_marks_down_flicker(embodiment):
    """video_motion_measure=agreement: the gate opens fully at an agreement of video_motion_fraction.

    The same windows as above: a quarter of the recorded step (agreement 0.4) against 0.5 gives 0.8; a still
    recording and a still prediction agree (1). A flicker that the displacement gate passes agrees by 1/3.
    """
    r = reward(embodiment, video_motion_fraction=0.5, video_motion_measure="agreement")
    decoded, newest, truth, pred = two_windows()
    out = r(decoded, FPS, newest=newest, pred=pred, truth=truth)
    assert out.components["video_agreement"].tolist() == pytest.approx([0.4, 1.0])
    assert out.total.tolist() == pytest.approx([0.8, 1.0])
    flicker = torch.stack([torch.stack([torch.full((3, 4, 4), v) for v in (0.7, 0.3, 0.7)]), truth[1]])
    assert r(decoded, FPS, newest=newest, pred=flicker, truth=truth).total.tolist() == pytest.approx([2 / 3, 1.0])
    displacement = reward(embodiment, video_motion_fraction=0.5)
    assert displacement(decoded, FPS, newest=newest, pred=flicker, truth=truth).total.tolist() == pytest.approx([1, 1])
    with pytest.raises(ValueError, match="video_motion_fraction"):
        ExecutabilityRewardConfig(video_motion_fraction=2.0, video_motion_measure="agreement")


def test_motion_reward_displacement_is_the_video_gate_alone():
    """The same frames as above, scored without any actions: 0.05 moved against a floor of 0.5 x 0.2."""
    _, newest, truth, pred = two_windows()
    out = motion_reward(newest, pred, truth, "displacement", fraction=0.5)
    assert out.total.tolist() == pytest.approx([0.5, 1.0])
    assert out.components["video_motion"].tolist() == pytest.approx([0.05, 0.0])
    held = motion_reward(newest, newest.expand(-1, 3, -1, -1, -1), truth, "displacement", fraction=0.5)
    assert held.total.tolist() == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError, match="expected"):
        motion_reward(newest, pred, truth[:, :2], "displacement", fraction=0.5)
    with pytest.raises(ValueError, match="motion measure 'speed'"):
        motion_reward(newest, pred, truth, "speed", fraction=0.5)


def test_motion_reward_agreement_marks_down_flicker_the_gate_passes():
    """The recording steps by 0.2 into its first frame and holds; changes per frame (0.2, 0, 0)."""
    newest = torch.full((1, 1, 3, 4, 4), 0.5)
    truth = torch.full((1, 3, 3, 4, 4), 0.7)
    frames = lambda *values: torch.stack([torch.full((3, 4, 4), v) for v in values])[None]  # noqa: E731
    # a quarter of the step, then a hold: changes (0.05, 0, 0); 2 * 0.05 / (0.05 + 0.2) = 0.4
    assert motion_reward(newest, frames(0.55, 0.55, 0.55), truth, "agreement", 0.5).total.item() == pytest.approx(0.4)
    # a flicker around the newest frame: it moves 0.2 from the newest frame in every frame, so the gate is 1,
    # but changes (0.2, 0.4, 0.4) where the recording holds: 2 * 0.2 / (1.0 + 0.2) = 1/3
    flicker = frames(0.7, 0.3, 0.7)
    assert motion_reward(newest, flicker, truth, "displacement", 0.5).total.item() == pytest.approx(1.0)
    out = motion_reward(newest, flicker, truth, "agreement", 0.5)
    assert out.total.item() == pytest.approx(1 / 3)
    assert out.components["motion_agreement"].item() == pytest.approx(1 / 3)
    assert motion_reward(newest, truth, truth, "agreement", 0.5).total.item() == pytest.approx(1.0)


def test_control_rate_interpolation_differences_at_the_control_interval(embodiment):
    r = reward(embodiment, rate="control")
    a = one_joint([0.1 * t for t in range(6)])
    c = r(a, video_fps=10.0).components
    # a ramp of 0.1 rad per video frame at 10 fps is 1 rad/s at any rate
    assert c["mean_speed"].item() == pytest.approx(1.0 / 14, rel=1e-5)
    assert c["penalty"].item() == pytest.approx(0.0, abs=1e-4)


def test_missing_calibration_names_the_command(embodiment, tmp_path):
    with pytest.raises(FileNotFoundError, match="eva-calibrate-reward"):
        Calibration.load(tmp_path / "nope.json")
    r = ExecutabilityReward(ExecutabilityRewardConfig(), embodiment, None)
    with pytest.raises(ValueError, match="eva-calibrate-reward"):
        r(one_joint([0.0] * 6), FPS)


def test_calibration_round_trip(tmp_path):
    c = Calibration(p0=0.5, min_speed=0.01, num_rollouts=4, source="x", term_shares={"jerk": 0.9, "vel_limit": 0.1})
    c.save(tmp_path / "c.json")
    assert Calibration.load(tmp_path / "c.json") == c
    legacy = {k: v for k, v in c.__dict__.items() if k != "term_shares"}  # a file written before term_shares
    (tmp_path / "old.json").write_text(json.dumps(legacy))
    assert Calibration.load(tmp_path / "old.json").term_shares == {}


def test_wrong_action_dim_is_refused(embodiment):
    with pytest.raises(ValueError, match="aloha_viperx"):
        reward(embodiment)(torch.zeros(1, 6, 7), FPS)


def test_perceptual_reward():
    torch.manual_seed(0)
    truth = torch.rand(2, 3, 3, 64, 64)
    pred = truth.clone()
    pred[1] = (pred[1] + 0.2).clamp(0, 1)
    r = perceptual_reward(pred, truth)
    assert r.components["l1"][0].item() == 0 and r.components["lpips"][0].item() == pytest.approx(0, abs=1e-6)
    assert r.total[0] > r.total[1]
    assert r.total[1].item() == pytest.approx(-(r.components["l1"][1] + r.components["lpips"][1]).item())
    for metric in ("psnr", "ssim", "mse", "mae"):  # the exact prediction scores higher under every variant
        scores = perceptual_reward(pred, truth, metric).total
        assert scores[0] > scores[1], metric
    with pytest.raises(ValueError, match="perceptual metric"):
        perceptual_reward(pred, truth, "fid")


def test_repetition_and_weighted_sum():
    video = torch.rand(2, 4, 3, 8, 8)
    video[0, 1:] = video[0, :1]  # sample 0: three repeats out of three transitions
    rep = repetition_reward(video)
    assert rep.total.tolist() == pytest.approx([-1.0, 0.0])
    total = weighted_sum({"rep": rep, "rep2": rep}, {"rep": 1.0, "rep2": 0.5})
    assert total.total.tolist() == pytest.approx([-1.5, 0.0])
    assert set(total.components) == {"rep", "rep2", "rep/repetition_rate", "rep2/repetition_rate"}
    with pytest.raises(ValueError, match="differ"):
        weighted_sum({"rep": rep}, {"other": 1.0})
