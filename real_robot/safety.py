"""Robot-side safety filter: the only guard between the planner and the arms.

The vendor driver clamps nothing but the gripper and has no command timeout, so every
command sent to the robot goes through :class:`SafetyFilter`. It is plain Python (no ROS):
the ROS nodes feed it joint states, camera frame stamps and planner targets, and publish
what it returns.

Rules, applied on every control tick by :meth:`SafetyFilter.filter`:

1. No joint state yet: nothing to command. The result has ``position=None`` and the caller
   publishes nothing. The first accepted joint state (clipped into the position limits)
   becomes the first command, at rest.
2. Hold when any of these holds (all reasons are reported, not just the first):
   the e-stop is latched (only :meth:`~SafetyFilter.reset` clears it); a camera frame or the
   joint state is older than ``max_frame_age_s`` / ``max_state_age_s`` (a camera that never
   sent a frame counts as stale); an input arrived with a timestamp older than the last one
   (out of order, cleared by the next in-order input of that source); the target is not a
   finite 14-vector. Garbage targets are never clamped into a command.
3. Otherwise the finite target is clamped into ``[lower + margin, upper - margin]`` (margin on
   the arm joints only; grippers keep their full 0..1 range) and the command moves towards it.

Every published command, hold or not, obeys the same motion limits: it is finite, inside the
position limits, moves at most ``velocity_limit * velocity_scale * dt`` per tick, and its
velocity changes by at most ``acceleration_limit * acceleration_scale * dt`` per tick. Hence a
hold is a controlled stop: the command decelerates at the acceleration limit to rest (at most
``v**2 / (2 a)`` further, about 0.2 rad at full speed on the ViperX) and then stays put.
Staying inside the limits while acceleration-bounded needs look-ahead: each joint's velocity
is capped so that braking at the acceleration limit, one tick at a time, stops it before the
position limit. The same stopping-speed cap towards the target makes the command settle
exactly on a reachable target without overshoot.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from configs.constants import ACTION_DIM, GRIPPER_INDICES
from configs.embodiment import Embodiment
from configs.schema import SafetyConfig  # noqa: F401  (re-exported: the filter's settings)

logger = logging.getLogger(__name__)

# Hold reasons, as counted in SafetyFilter.stats (Command.reasons carry the details).
NO_STATE = "no_state"
ESTOP = "estop"
STALE_FRAME = "stale_frame"
STALE_STATE = "stale_state"
OUT_OF_ORDER_FRAME = "out_of_order_frame"
OUT_OF_ORDER_STATE = "out_of_order_state"
INVALID_TARGET = "invalid_target"


@dataclass(frozen=True, eq=False)
class Command:
    """One tick's output. ``position`` is None only before the first joint state."""

    position: np.ndarray | None
    hold: bool
    reasons: tuple[str, ...] = ()


def stopping_speed(distance: np.ndarray, brake: np.ndarray, dt: float) -> np.ndarray:
    """Largest speed u >= 0 such that moving u for one tick, then slowing by ``brake`` (a velocity
    step) every tick until at rest, covers at most ``distance``.

    Starting at u = n * brake the distance is ``dt * brake * n (n + 1) / 2``; between two such
    speeds it grows linearly, which gives the closed form below.
    """
    d = np.maximum(distance, 0.0)
    n = np.floor((np.sqrt(1.0 + 8.0 * d / (dt * brake)) - 1.0) / 2.0)
    return (d / dt + brake * n * (n + 1.0) / 2.0) / (n + 1.0)


class SafetyFilter:
    """Stateful filter between planner targets and the robot; see the module docstring for the rules.

    ``cameras`` are the camera roles that must be fresh (default: all of the embodiment's).
    """

    def __init__(self, embodiment: Embodiment, cfg: SafetyConfig, cameras: Sequence[str] | None = None):
        self.cfg = cfg
        self.dt = embodiment.dt
        self.lower = embodiment.position_lower.copy()
        self.upper = embodiment.position_upper.copy()
        margin = np.full(ACTION_DIM, cfg.position_margin)
        margin[list(GRIPPER_INDICES)] = 0.0
        if np.any(self.lower + margin >= self.upper - margin):
            raise ValueError(f"SafetyConfig.position_margin={cfg.position_margin} leaves no room between the "
                             f"position limits of {embodiment.name}")
        self.target_lower, self.target_upper = self.lower + margin, self.upper - margin
        self.max_velocity = embodiment.velocity_limit * cfg.velocity_scale
        self.max_velocity_step = embodiment.acceleration_limit * cfg.acceleration_scale * self.dt
        self.cameras = tuple(embodiment.cameras) if cameras is None else tuple(cameras)
        unknown = set(self.cameras) - set(embodiment.cameras)
        if unknown:
            raise ValueError(f"unknown cameras {sorted(unknown)}; {embodiment.name} has {sorted(embodiment.cameras)}")

        self.command: np.ndarray | None = None  # last published position
        self.velocity = np.zeros(ACTION_DIM)  # of the last published command
        self.estopped = False
        self.state_stamp: float | None = None
        self.frame_stamps: dict[str, float] = {}
        self.out_of_order: set[str] = set()  # "state" or camera names
        self.stats: Counter[str] = Counter()  # holds by reason
        self._last_hold_kinds: tuple[str, ...] = ()

    # ----------------------------------------------------------------- inputs
    def _in_order(self, source: str, last: float | None, stamp: float) -> bool:
        if last is not None and stamp < last:
            if source not in self.out_of_order:
                logger.warning("out-of-order %s: stamp %.6f is older than the last one %.6f", source, stamp, last)
            self.out_of_order.add(source)
            return False
        self.out_of_order.discard(source)
        return True

    def update_state(self, position: np.ndarray, stamp: float) -> bool:
        """A joint state captured at ``stamp`` (s). Returns False (and logs) when it is rejected."""
        position = np.asarray(position, dtype=np.float64)
        if position.shape != (ACTION_DIM,) or not np.all(np.isfinite(position)) or not math.isfinite(stamp):
            logger.warning("rejected joint state: shape %s, stamp %s, values %s", position.shape, stamp,
                           position.tolist())
            return False
        if not self._in_order("state", self.state_stamp, stamp):
            return False
        self.state_stamp = stamp
        if self.command is None:
            outside = np.nonzero((position < self.lower) | (position > self.upper))[0]
            if outside.size:
                logger.warning("initial joint state outside the position limits at indices %s; clipped",
                               outside.tolist())
            self.command = np.clip(position, self.lower, self.upper)
            self.velocity = np.zeros(ACTION_DIM)
        return True

    def update_frame(self, camera: str, stamp: float) -> bool:
        """A frame of ``camera`` captured at ``stamp`` (s). Returns False (and logs) when it is rejected."""
        if camera not in self.cameras:
            raise ValueError(f"unknown camera '{camera}'; expected one of {list(self.cameras)}")
        if not math.isfinite(stamp):
            logger.warning("rejected frame of %s: stamp %s", camera, stamp)
            return False
        if not self._in_order(camera, self.frame_stamps.get(camera), stamp):
            return False
        self.frame_stamps[camera] = stamp
        return True

    def estop(self) -> None:
        if not self.estopped:
            logger.warning("e-stop latched")
        self.estopped = True

    def reset(self) -> None:
        """Clear the e-stop latch. Nothing else: stale or out-of-order inputs still hold."""
        if self.estopped:
            logger.warning("e-stop reset")
        self.estopped = False

    # ----------------------------------------------------------------- output
    def _hold_reasons(self, target: np.ndarray | None, shape: tuple, now: float) -> list[tuple[str, str]]:
        reasons = []
        if self.estopped:
            reasons.append((ESTOP, "e-stop latched"))
        for camera in self.cameras:
            stamp = self.frame_stamps.get(camera)
            if stamp is None:
                reasons.append((STALE_FRAME, f"no frame from {camera}"))
            elif now - stamp > self.cfg.max_frame_age_s:
                reasons.append((STALE_FRAME, f"stale frame from {camera}: age {now - stamp:.3f} s "
                                             f"> {self.cfg.max_frame_age_s} s"))
            if camera in self.out_of_order:
                reasons.append((OUT_OF_ORDER_FRAME, f"out-of-order frame from {camera}"))
        if now - self.state_stamp > self.cfg.max_state_age_s:
            reasons.append((STALE_STATE, f"stale joint state: age {now - self.state_stamp:.3f} s "
                                         f"> {self.cfg.max_state_age_s} s"))
        if "state" in self.out_of_order:
            reasons.append((OUT_OF_ORDER_STATE, "out-of-order joint state"))
        if target is None or target.shape != (ACTION_DIM,):
            reasons.append((INVALID_TARGET, f"invalid target: shape {shape}, expected ({ACTION_DIM},)"))
        elif not np.all(np.isfinite(target)):
            bad = np.nonzero(~np.isfinite(target))[0].tolist()
            reasons.append((INVALID_TARGET, f"invalid target: non-finite at indices {bad}"))
        return reasons

    def filter(self, target: np.ndarray, now: float) -> Command:
        """The command to publish at time ``now`` (s, same clock as the input stamps)."""
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now}")
        if self.command is None:
            self.stats[NO_STATE] += 1
            return Command(position=None, hold=True, reasons=("no joint state yet",))
        try:
            target = np.asarray(target, dtype=np.float64)
            shape = target.shape
        except (TypeError, ValueError):
            target, shape = None, "unreadable"
        reasons = self._hold_reasons(target, shape, now)
        kinds = tuple(kind for kind, _ in reasons)
        if kinds != self._last_hold_kinds:
            if reasons:
                logger.warning("holding: %s", "; ".join(msg for _, msg in reasons))
            else:
                logger.info("resuming: all inputs fresh")
            self._last_hold_kinds = kinds
        self.stats.update(set(kinds))

        p0, v0, step = self.command, self.velocity, self.max_velocity_step
        if reasons:
            desired = np.zeros(ACTION_DIM)  # controlled stop
        else:
            error = np.clip(target, self.target_lower, self.target_upper) - p0
            desired = np.sign(error) * stopping_speed(np.abs(error), step, self.dt)
        # Velocity window: acceleration bound, velocity bound, and able to stop before the limits.
        lo = np.maximum.reduce([v0 - step, -self.max_velocity, -stopping_speed(p0 - self.lower, step, self.dt)])
        hi = np.minimum.reduce([v0 + step, self.max_velocity, stopping_speed(self.upper - p0, step, self.dt)])
        velocity = np.minimum(np.maximum(desired, lo), hi)
        position = np.clip(p0 + velocity * self.dt, self.lower, self.upper)
        self.velocity = (position - p0) / self.dt
        self.command = position
        return Command(position=position.copy(), hold=bool(reasons), reasons=tuple(msg for _, msg in reasons))
