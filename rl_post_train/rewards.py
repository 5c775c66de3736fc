"""Verifiable rewards for post-training the world model.

Every reward returns a :class:`RewardOutput`: per-sample totals ``(B,)`` (higher is better) and
named per-sample components for logging. Rewards never clean up bad values: a NaN or inf in a
sample's total is left there for the GRPO step to drop and count (``rl_post_train.grpo``).

* :class:`ExecutabilityReward` (EVA, section 4.2, eqs 5-9): finite differences of the IDM-decoded
  actions at the control interval; Huber penalties on acceleration and jerk; squared violations of
  the embodiment's velocity and acceleration limits; ``R = (1 + P / P_0)^(-gamma)``. Vector
  quantities are summed over the 14 joints, then averaged over time. A frozen video decodes to
  constant actions with zero penalty, the reward hack EVA reports (static robots, its figure S2); the
  motion gate multiplies R by ``min(1, mean speed / floor)``, so a video whose decoded joints move
  less than the floor earns proportionally less, and a frozen one earns 0. The floor is either one
  speed calibrated with ``P_0`` (``motion_reference: pretrained``), or a fraction of the speed the robot
  was commanded in the same recorded window (``recorded``, DESIGN.md's "IDM check against commanded
  motion"): slowing down then costs reward in every window that moves, and a window where the robot
  stood still asks for no motion. Both read speed through the IDM, which finds some speed even in
  blurred, nearly still predictions; the video gate (``video_motion_fraction > 0``, DESIGN.md's
  "progress term") multiplies R by ``min(1, moved / (fraction x recorded))`` of the frames themselves:
  the prediction's mean absolute change from the newest history frame against the recorded video's
  (``video_motion_measure: displacement``), or by ``min(1, agreement / fraction)`` of the motion agreement
  with the recording (``agreement``), which a flickering texture does not satisfy.
* :func:`perceptual_reward` (RLVR-World): ``-(L1 + LPIPS)`` of predicted against ground-truth frames,
  averaged over frames (RLVR-World sums over frames; the mean keeps the scale independent of the
  clip length, which group-normalised advantages ignore anyway), or MSE, MAE, PSNR, SSIM variants.
* :func:`repetition_reward` (RLVR-World's repetition penalty): minus the rate of consecutive
  identical frames.
* :func:`motion_reward`: pixel motion as a reward of its own, for the perceptual reward, which a
  prediction that holds the newest frame games as surely as it games EVA's: the agreement of the
  predicted with the recorded frame-to-frame changes, or the video gate above.
* :func:`weighted_sum`: several rewards into one, components kept under ``<name>/<component>``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from configs.constants import GRIPPER_INDICES, MOTION_MEASURES
from configs.embodiment import Embodiment
from configs.run_files import atomic_write_json
from configs.schema import PERCEPTUAL_METRICS, ExecutabilityRewardConfig
from idm.decode import to_control_rate
from world_model.metrics import lpips_model, mae, motion, motion_agreement, mse, psnr, repetition_rate, ssim

log = logging.getLogger(__name__)

CALIBRATION_FILE = "executability_calibration.json"
CALIBRATE_COMMAND = "eva-calibrate-reward"


@dataclass
class RewardOutput:
    total: torch.Tensor  # (B,), higher is better
    components: dict[str, torch.Tensor]  # name -> (B,)


def huber(x: torch.Tensor, delta: float) -> torch.Tensor:
    """EVA eq. 5, element-wise: x^2 / 2 inside |x| <= delta, delta (|x| - delta / 2) outside."""
    a = x.abs()
    return torch.where(a <= delta, 0.5 * x * x, delta * (a - 0.5 * delta))


def finite_differences(actions: torch.Tensor, dt: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Velocity, acceleration and jerk of (B, T, D) actions by backward differences at interval dt.

    Shapes (B, T-1, D), (B, T-2, D), (B, T-3, D); T must be at least 4 for a jerk.
    """
    if actions.ndim != 3:
        raise ValueError(f"actions: expected (B, T, D), got {tuple(actions.shape)}")
    if actions.shape[1] < 4:
        raise ValueError(f"actions: {actions.shape[1]} steps; the jerk needs at least 4")
    v = torch.diff(actions, dim=1) / dt
    acc = torch.diff(v, dim=1) / dt
    jerk = torch.diff(acc, dim=1) / dt
    return v, acc, jerk


PENALTY_TERMS = {"jerk": "lambda_jerk", "acc_smooth": "lambda_acc", "vel_limit": "lambda_vel_limit",
                 "acc_limit": "lambda_acc_limit"}  # EVA eq. 8: term -> its weight in ExecutabilityRewardConfig


@dataclass
class Calibration:
    """The reward scale estimated from rollouts of the pre-trained model, stored with the run.

    ``term_shares``: each weighted term's share of the mean penalty on those rollouts (EVA eq. 8), which
    shows whether a weight lets its term matter at all; informative only, the reward does not read it.
    """

    p0: float
    min_speed: float
    num_rollouts: int
    source: str  # what produced it (checkpoint, IDM, prompts)
    term_shares: dict[str, float] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        atomic_write_json(Path(path), self.__dict__)

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no executability calibration (P_0); make it with "
                                    f"`{CALIBRATE_COMMAND} checkpoint=<world model> idm_checkpoint=<idm> "
                                    f"output={path}`")
        d = json.loads(path.read_text())
        missing = [k for k in ("p0", "min_speed", "num_rollouts", "source") if k not in d]
        if missing:
            raise ValueError(f"{path}: calibration lacks fields {missing}")
        if not d["p0"] > 0:
            raise ValueError(f"{path}: field 'p0' must be positive, got {d['p0']}")
        return cls(**{k: d[k] for k in ("p0", "min_speed", "num_rollouts", "source")},
                   term_shares=d.get("term_shares", {}))


class ExecutabilityReward:
    """EVA's IDM executability reward on decoded actions at the video frame rate.

    ``penalty`` computes EVA's P(A) and its four terms; ``__call__`` maps it to the bounded reward.
    The actions are first interpolated to the embodiment's control rate (``rate='control'``, the
    same linear interpolation the robot executes, ``idm.decode.to_control_rate``) or differenced at
    the video interval (``rate='video'``).
    """

    def __init__(self, cfg: ExecutabilityRewardConfig, embodiment: Embodiment, calibration: Calibration | None):
        self.cfg = cfg
        self.embodiment = embodiment
        self.calibration = calibration
        self.v_max = torch.as_tensor(embodiment.velocity_limit, dtype=torch.float32)
        self.a_max = torch.as_tensor(embodiment.acceleration_limit, dtype=torch.float32)

    def rate_and_actions(self, actions: torch.Tensor, video_fps: float) -> tuple[torch.Tensor, float]:
        actions = torch.as_tensor(actions, dtype=torch.float32)
        if actions.ndim != 3 or actions.shape[-1] != len(self.embodiment.joint_names):
            raise ValueError(f"actions: expected (B, T, {len(self.embodiment.joint_names)}) for "
                             f"{self.embodiment.name}, got {tuple(actions.shape)}")
        if self.cfg.rate == "control":
            return to_control_rate(actions, video_fps, self.embodiment.control_rate_hz), self.embodiment.dt
        return actions, 1.0 / video_fps

    def penalty(self, actions: torch.Tensor, video_fps: float) -> dict[str, torch.Tensor]:
        """EVA eqs 6-8 per sample: the four terms, their weighted sum ``penalty`` and diagnostics: the mean
        speed, the fraction of steps over a limit (any joint; grippers alone) and ``seam_jump``, the largest
        joint change over the first video interval (history to prediction, as the callers pass actions)."""
        actions = torch.as_tensor(actions, dtype=torch.float32)
        a, dt = self.rate_and_actions(actions, video_fps)
        v, acc, jerk = finite_differences(a, dt)
        c = self.cfg
        p_acc_smooth = huber(acc, c.delta_acc).sum(-1).mean(-1)
        p_jerk = huber(jerk, c.delta_jerk).sum(-1).mean(-1)
        p_vel = (torch.clamp(v.abs() - self.v_max, min=0) ** 2).sum(-1).mean(-1)
        over_v = v.abs() > self.v_max
        p_acc = (torch.clamp(acc.abs() - self.a_max, min=0) ** 2).sum(-1).mean(-1)
        terms = {"jerk": p_jerk, "acc_smooth": p_acc_smooth, "vel_limit": p_vel, "acc_limit": p_acc}
        total = sum(getattr(c, PENALTY_TERMS[k]) * p for k, p in terms.items())
        return {"penalty": total, **terms, "mean_speed": v.abs().mean(dim=(1, 2)),
                "vel_violation_frac": over_v.any(-1).float().mean(-1),
                "gripper_vel_violation_frac": over_v[..., list(GRIPPER_INDICES)].any(-1).float().mean(-1),
                "acc_violation_frac": (acc.abs() > self.a_max).any(-1).float().mean(-1),
                "seam_jump": (actions[:, 1] - actions[:, 0]).abs().amax(-1)}

    def term_shares(self, parts: dict[str, torch.Tensor]) -> dict[str, float]:
        """Each weighted term's share of the mean penalty of ``penalty``'s output (EVA eq. 8)."""
        weighted = {k: getattr(self.cfg, w) * parts[k].mean().item() for k, w in PENALTY_TERMS.items()}
        total = sum(weighted.values())
        return {k: v / total if total > 0 else 0.0 for k, v in weighted.items()}

    def motion_floor(self, recorded: torch.Tensor | None, video_fps: float, batch: int) -> torch.Tensor:
        """(B,) speeds below which the reward is scaled down; 0 where no motion is asked for."""
        if self.cfg.motion_reference == "pretrained":
            return torch.full((batch,), float(self.calibration.min_speed))
        if recorded is None:
            raise ValueError("reward.motion_reference=recorded needs the recorded actions of each window")
        speed = self.penalty(recorded, video_fps)["mean_speed"]
        if speed.shape != (batch,):
            raise ValueError(f"recorded actions: {tuple(recorded.shape)} for a batch of {batch}")
        return self.cfg.min_speed_fraction * speed

    def video_gate(self, newest: torch.Tensor | None, pred: torch.Tensor | None, truth: torch.Tensor | None,
                   batch: int) -> dict[str, torch.Tensor]:
        """:func:`video_motion_gate` at ``video_motion_fraction``; empty without frames and with the gate off.

        The decoded-speed gate trusts the IDM, and on blurred, nearly still predictions the IDM reads speed
        from artefacts; this gate looks at the frames themselves.
        """
        fraction = self.cfg.video_motion_fraction
        if pred is None:
            if fraction > 0:
                raise ValueError("reward.video_motion_fraction > 0 needs the predicted and recorded frames")
            return {}
        parts = video_motion_gate(newest, pred, truth, fraction, self.cfg.video_motion_measure)
        if len(parts["video_gate"]) != batch:
            raise ValueError(f"video gate: {len(parts['video_gate'])} videos for a batch of {batch}")
        return parts

    def __call__(self, actions: torch.Tensor, video_fps: float, recorded: torch.Tensor | None = None, *,
                 newest: torch.Tensor | None = None, pred: torch.Tensor | None = None,
                 truth: torch.Tensor | None = None) -> RewardOutput:
        """``recorded``: the commanded actions of the same windows and frames as ``actions`` (needed by
        ``motion_reference: recorded``); ``newest``, ``pred``, ``truth``: the newest history frame and the
        predicted and recorded future frames, in [0, 1] (needed by ``video_motion_fraction > 0``, logged
        when given)."""
        if self.calibration is None:
            raise ValueError(f"the executability reward needs P_0; run `{CALIBRATE_COMMAND}` first")
        parts = self.penalty(actions, video_fps)
        r = (1 + parts["penalty"] / self.calibration.p0) ** (-self.cfg.gamma)
        floor = self.motion_floor(recorded, video_fps, len(r))
        gate = torch.where(floor > 0, torch.clamp(parts["mean_speed"] / floor, max=1.0), torch.ones_like(r))
        parts["motion_floor"] = floor
        parts["motion_gate"] = gate
        parts["smoothness"] = r
        parts |= self.video_gate(newest, pred, truth, len(r))
        return RewardOutput(total=before_video_gate(parts) * parts.get("video_gate", 1.0), components=parts)


def before_video_gate(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """The executability reward before its video gate, from its components: smoothness x motion gate."""
    return parts["smoothness"] * parts["motion_gate"]


def video_motion_gate(newest: torch.Tensor | None, pred: torch.Tensor, truth: torch.Tensor | None,
                      fraction: float, measure: str = "displacement") -> dict[str, torch.Tensor]:
    """The video gate per sample and its inputs, (B,) each; frames in [0, 1].

    ``displacement``: ``min(1, moved / (fraction x recorded))``, where ``moved`` is the prediction's mean
    absolute pixel change from the newest history frame ``newest`` (B, 1, 3, H, W) and ``recorded`` the same
    of the recorded future ``truth``; a window whose recorded video stands still (or ``fraction`` 0) asks for
    no motion: gate 1. ``agreement``: ``min(1, agreement / fraction)`` with
    :func:`world_model.metrics.motion_agreement`, which a flickering texture does not satisfy.
    """
    if newest is None or truth is None or pred.shape != truth.shape or pred.ndim != 5 or newest.shape[1] != 1:
        raise ValueError(f"video gate: newest {None if newest is None else tuple(newest.shape)}, pred "
                         f"{tuple(pred.shape)}, truth {None if truth is None else tuple(truth.shape)}; expected "
                         "(B, 1, 3, H, W) and two equal (B, T, 3, H, W)")
    if measure == "agreement":
        agreement = motion_agreement(pred, truth, newest)
        gate = torch.clamp(agreement / fraction, max=1.0) if fraction > 0 else torch.ones_like(agreement)
        return {"video_agreement": agreement, "video_gate": gate}
    if measure != "displacement":
        raise ValueError(f"motion measure '{measure}': expected one of {MOTION_MEASURES}")
    moved, asked = motion(pred, newest).mean(1), fraction * motion(truth, newest).mean(1)
    gate = torch.where(asked > 0, torch.clamp(moved / asked.clamp(min=1e-12), max=1.0), torch.ones_like(moved))
    return {"video_motion": moved, "video_motion_floor": asked, "video_gate": gate}


def motion_reward(newest: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor, measure: str,
                  fraction: float) -> RewardOutput:
    """Pixel motion as a reward of its own, for composing with the others: a frame held still matches the
    ground truth's static background and earns perceptual reward; this does not.

    ``agreement``: :func:`world_model.metrics.motion_agreement`, the overlap of the predicted and recorded
    frame-to-frame changes, which also marks down motion the recording lacks (a flickering texture, which
    games the displacement gate); ``displacement``: :func:`video_motion_gate` at ``fraction``.
    """
    if measure == "agreement":
        agreement = motion_agreement(pred, truth, newest)
        return RewardOutput(total=agreement, components={"motion_agreement": agreement})
    parts = video_motion_gate(newest, pred, truth, fraction, measure)
    return RewardOutput(total=parts["video_gate"], components=parts)


def perceptual_reward(pred: torch.Tensor, truth: torch.Tensor, metric: str = "l1_lpips") -> RewardOutput:
    """RLVR-World's reward of predicted vs ground-truth frames, (B, T, 3, H, W) in [0, 1] -> (B,).

    ``l1_lpips``: -(L1 + LPIPS); ``l1``, ``lpips``, ``mse``, ``mae``: minus that; ``psnr``, ``ssim``: as is.
    Every component is a per-sample mean over frames.
    """
    if metric not in PERCEPTUAL_METRICS:
        raise ValueError(f"perceptual metric '{metric}': expected one of {PERCEPTUAL_METRICS}")
    if pred.shape != truth.shape or pred.ndim != 5:
        raise ValueError(f"pred {tuple(pred.shape)} and truth {tuple(truth.shape)}: expected equal (B, T, 3, H, W)")
    comps: dict[str, torch.Tensor] = {}
    if metric in ("l1_lpips", "l1", "mae"):
        comps["l1"] = mae(pred, truth).mean(1)
    if metric in ("l1_lpips", "lpips"):
        lp = lpips_model(pred.device)
        with torch.no_grad():
            comps["lpips"] = lp(pred.flatten(0, 1), truth.flatten(0, 1)).view(pred.shape[:2]).mean(1)
    if metric == "mse":
        comps["mse"] = mse(pred, truth).mean(1)
    if metric == "psnr":
        comps["psnr"] = psnr(pred, truth).mean(1)
    if metric == "ssim":
        comps["ssim"] = ssim(pred, truth).mean(1)
    sign = 1.0 if metric in ("psnr", "ssim") else -1.0
    return RewardOutput(total=sign * sum(comps.values()), components=comps)


def repetition_reward(video: torch.Tensor, tol: float = 1.0 / 255) -> RewardOutput:
    """Minus the rate of consecutive (near-)identical frames of (B, T, 3, H, W) videos."""
    rate = repetition_rate(video, tol=tol)
    return RewardOutput(total=-rate, components={"repetition_rate": rate})


def weighted_sum(outputs: dict[str, RewardOutput], weights: dict[str, float]) -> RewardOutput:
    """sum_k w_k R_k, with every component kept as ``<reward>/<component>`` and each total as ``<reward>``."""
    missing = sorted(set(outputs) ^ set(weights))
    if missing:
        raise ValueError(f"rewards {sorted(outputs)} and weights {sorted(weights)} differ in {missing}")
    total = sum(weights[k] * o.total for k, o in outputs.items())
    comps = {k: o.total for k, o in outputs.items()}
    for k, o in outputs.items():
        comps |= {f"{k}/{c}": v for c, v in o.components.items()}
    return RewardOutput(total=total, components=comps)
