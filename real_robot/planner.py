"""The receding-horizon planner core (EVA section 5), without ROS: the same object runs in the
simulator (``sim.policies.PlannerPolicy``), in tests and behind the robot's ROS nodes.

Loop: keep the last H camera frames at the world model's frame rate (:class:`HistoryBuffer`); when
the current action chunk is used up, imagine the next ``num_future_frames`` frames from that history
and the instruction, decode them with the IDM into 14-D targets at the control rate, and execute the
chunk one control tick at a time. Every target goes through the :class:`~real_robot.safety.SafetyFilter`
(fed with the joint state and the frame stamps), and only what the filter returns is published.

Chunk timing: row i of a plan is the IDM's action at ``frame_stamp + i * dt``, where ``frame_stamp``
is the capture time of the newest history frame (action t is the command issued at frame t, as in the
datasets and in ``world_model.imagine``). When a plan starts later than that frame, the rows already in
the past are skipped. All times are seconds on one clock (sim time in simulation, capture stamps on
the robot). Planning runs synchronously inside :meth:`Planner.step`, and never while the e-stop is
latched: the filter brakes and holds at the control rate, and the first tick after a reset replans.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence

import numpy as np
import torch

from configs.constants import ACTION_DIM
from configs.embodiment import Embodiment
from configs.schema import PlannerConfig
from idm.decode import decode_for_execution
from idm.model import InverseDynamicsModel
from real_robot.safety import Command, SafetyFilter
from world_model.pipeline import WorldModelPipeline, load_world_model

logger = logging.getLogger(__name__)

STAGES = ("history", "world_model", "idm", "total")  # timed per plan, in seconds


class HistoryBuffer:
    """The last ``length`` frames per camera, spaced at least ``1 / fps`` apart (less ``tolerance_s``)."""

    def __init__(self, cameras: Sequence[str], length: int, fps: float, image_size: Sequence[int],
                 tolerance_s: float | None = None):
        self.cameras = tuple(cameras)
        self.length = length
        self.period = 1.0 / fps
        self.tolerance_s = 0.1 * self.period if tolerance_s is None else tolerance_s  # camera jitter
        self.shape = (int(image_size[0]), int(image_size[1]), 3)
        self._frames: dict[str, deque[np.ndarray]] = {c: deque(maxlen=length) for c in self.cameras}
        self.stamps: dict[str, deque[float]] = {c: deque(maxlen=length) for c in self.cameras}
        self.last_seen: dict[str, float] = {}

    def push(self, camera: str, frame: np.ndarray, stamp: float) -> bool:
        """Offer a frame captured at ``stamp``; True when it was kept, False when it came too soon."""
        if camera not in self.cameras:
            raise ValueError(f"unknown camera '{camera}'; the history keeps {list(self.cameras)}")
        if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == self.shape):
            got = (frame.shape, frame.dtype) if isinstance(frame, np.ndarray) else type(frame).__name__
            raise ValueError(f"frame of '{camera}': expected a {self.shape} uint8 array (HxWx3), got {got}")
        if not math.isfinite(stamp):
            raise ValueError(f"frame of '{camera}': stamp {stamp} is not finite")
        last = self.last_seen.get(camera)
        if last is not None and stamp < last:
            raise ValueError(f"frame of '{camera}': stamp {stamp:.6f} goes back before the last one {last:.6f}")
        self.last_seen[camera] = stamp
        kept = self.stamps[camera]
        if kept and stamp - kept[-1] < self.period - self.tolerance_s:
            return False
        self._frames[camera].append(frame.copy())
        kept.append(stamp)
        return True

    @property
    def ready(self) -> bool:
        return all(self.stamps[c] for c in self.cameras)

    def latest_stamp(self, camera: str) -> float:
        if not self.stamps[camera]:
            raise ValueError(f"no frame from '{camera}' yet")
        return self.stamps[camera][-1]

    def frames(self, camera: str) -> torch.Tensor:
        """(length, 3, h, w) uint8, oldest first; the start is padded with the oldest frame (the robot rested)."""
        kept = list(self._frames[camera])
        if not kept:
            raise ValueError(f"no frame from '{camera}' yet")
        kept = [kept[0]] * (self.length - len(kept)) + kept
        return torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2).contiguous()

    def clear(self) -> None:
        for c in self.cameras:
            self._frames[c].clear()
            self.stamps[c].clear()
        self.last_seen.clear()


class Planner:
    """World model + IDM in a receding-horizon loop behind the safety filter."""

    def __init__(self, pipe: WorldModelPipeline, idm: InverseDynamicsModel, embodiment: Embodiment,
                 cfg: PlannerConfig):
        if list(idm.config.cameras) != [cfg.camera]:
            raise ValueError(f"the IDM reads cameras {list(idm.config.cameras)}, the planner uses ['{cfg.camera}']")
        if idm.config.fps != pipe.config.fps or list(idm.config.image_size) != list(pipe.config.image_size):
            raise ValueError(f"IDM ({idm.config.fps} fps, {list(idm.config.image_size)}) and world model "
                             f"({pipe.config.fps} fps, {list(pipe.config.image_size)}) must agree")
        ratio = embodiment.control_rate_hz / pipe.config.fps
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"control rate {embodiment.control_rate_hz} Hz is not a multiple of {pipe.config.fps} fps")
        self.chunk_len = cfg.num_future_frames * int(round(ratio))  # control steps per plan
        if cfg.replan_every > self.chunk_len:
            raise ValueError(f"planner.replan_every={cfg.replan_every} exceeds the {self.chunk_len} control steps "
                             f"of {cfg.num_future_frames} imagined frames")
        self.pipe, self.idm, self.embodiment, self.cfg = pipe.to(cfg.device), idm.to(cfg.device), embodiment, cfg
        self.num_history = pipe.config.num_history_frames
        self.history = HistoryBuffer([cfg.camera], self.num_history, pipe.config.fps, pipe.config.image_size)
        self.safety = SafetyFilter(embodiment, cfg.safety, cameras=[cfg.camera])
        self.instruction: str | None = None
        self.chunk = np.zeros((0, ACTION_DIM))
        self.cursor = 0  # next row of the chunk
        self.execute_until = 0  # replan when the cursor reaches this row
        self.num_plans = 0  # in this episode; plan i uses seed + i
        self.timings: list[dict[str, float]] = []  # one entry per plan, kept across episodes

    @classmethod
    def from_config(cls, cfg: PlannerConfig, embodiment: Embodiment) -> Planner:
        pipe = load_world_model(cfg.world_model)
        idm = InverseDynamicsModel.from_pretrained(cfg.idm, embodiment=embodiment)
        logger.info("planner: world model %s, IDM %s, camera %s, device %s", cfg.world_model, cfg.idm, cfg.camera,
                    cfg.device)
        return cls(pipe, idm, embodiment, cfg)

    def reset(self, instruction: str) -> None:
        """A new episode: empty history and chunk, a fresh safety filter (an e-stop stays latched)."""
        estopped = self.safety.estopped
        self.safety = SafetyFilter(self.embodiment, self.safety.cfg, cameras=[self.cfg.camera])
        if estopped:
            self.safety.estop()
        self.history.clear()
        self.instruction = instruction
        self.chunk, self.cursor, self.execute_until, self.num_plans = np.zeros((0, ACTION_DIM)), 0, 0, 0

    def observe(self, frames: dict[str, np.ndarray], stamp: float) -> None:
        """Camera frames (HxWx3 uint8) captured at ``stamp``. An out-of-order frame is dropped, and the
        safety filter holds until the next in-order one."""
        for camera, frame in frames.items():
            if self.safety.update_frame(camera, stamp):
                self.history.push(camera, frame, stamp)

    @torch.no_grad()
    def _imagine_and_decode(self, history: torch.Tensor, seed: int) -> tuple[np.ndarray, float, float]:
        """(H, 3, h, w) uint8 history -> (chunk_len, 14) targets from its last frame on, world-model s, IDM s."""
        t0 = time.perf_counter()
        future = self.pipe.rollout(history[None], self.instruction or "", num_frames=self.cfg.num_future_frames,
                                   steps=self.cfg.steps, seed=seed, sampler=self.cfg.sampler,
                                   flow_shift=self.cfg.flow_shift)
        t1 = time.perf_counter()
        video = torch.cat([history[None].to(future.device).float() / 255.0, future], dim=1)
        actions = decode_for_execution(self.idm, video, self.num_history, self.embodiment.control_rate_hz)[0]
        # chunk_len + 1 rows from the newest history frame on; the last one (edge-padded IDM window) is dropped
        return actions[:self.chunk_len], t1 - t0, time.perf_counter() - t1

    def plan(self, now: float) -> np.ndarray:
        """A new (num_future_frames * control_hz / fps, 14) chunk; row i is the target at frame_stamp + i * dt."""
        if self.instruction is None:
            raise RuntimeError("reset(instruction) before planning")
        t0 = time.perf_counter()
        history = self.history.frames(self.cfg.camera)
        t_history = time.perf_counter() - t0
        chunk, t_world_model, t_idm = self._imagine_and_decode(history, self.cfg.seed + self.num_plans)
        self.timings.append({"history": t_history, "world_model": t_world_model, "idm": t_idm,
                             "total": time.perf_counter() - t0, "plan": self.num_plans, "now": now,
                             "frame_age": now - self.history.latest_stamp(self.cfg.camera)})
        logger.debug("plan %d at %.3f s took %.3f s", self.num_plans, now, self.timings[-1]["total"])
        self.num_plans += 1
        return chunk

    def warmup(self) -> float:
        """One rollout + decode on a dummy history, so the first real plan pays no one-off costs; seconds."""
        t0 = time.perf_counter()
        h, w = self.history.shape[:2]
        self._imagine_and_decode(torch.zeros(self.num_history, 3, h, w, dtype=torch.uint8), self.cfg.seed)
        elapsed = time.perf_counter() - t0
        logger.info("planner warm-up: %.2f s", elapsed)
        return elapsed

    def step(self, state: np.ndarray, now: float, state_stamp: float | None = None) -> Command:
        """One control tick: the command to publish at ``now`` for the joint ``state`` (captured at
        ``state_stamp``, default ``now``). Replans when the chunk's executed part is used up."""
        self.safety.update_state(state, now if state_stamp is None else state_stamp)
        if not self.history.ready:  # nothing to plan from; the filter holds (no frame)
            return self.safety.filter(self.safety.command, now)
        if self.safety.estopped:  # no planning while latched: the loop keeps its rate, and the
            self.execute_until = self.cursor  # first tick after the reset plans from fresh frames
            return self.safety.filter(self.safety.command, now)
        if self.cursor >= self.execute_until:
            self.chunk = self.plan(now)
            elapsed = now - self.history.latest_stamp(self.cfg.camera)
            self.cursor = min(max(int(round(elapsed * self.embodiment.control_rate_hz)), 0), self.chunk_len - 1)
            remaining = self.chunk_len - self.cursor
            self.execute_until = self.cursor + (min(self.cfg.replan_every, remaining) if self.cfg.replan_every
                                                else remaining)
        target = self.chunk[self.cursor]
        self.cursor += 1
        return self.safety.filter(target, now)

    def latency_summary(self) -> dict[str, dict[str, float]]:
        """Median and 95th percentile (seconds) of each planning stage over all plans so far."""
        return summarize_timings(self.timings)


def summarize_timings(timings: list[dict]) -> dict[str, dict[str, float]]:
    """Count, median and 95th percentile (seconds) of each stage of ``Planner.timings`` records."""
    summary = {}
    for stage in STAGES:
        values = np.array([t[stage] for t in timings])
        summary[stage] = {"count": len(values),
                          "median": float(np.median(values)) if len(values) else float("nan"),
                          "p95": float(np.percentile(values, 95)) if len(values) else float("nan")}
    return summary
