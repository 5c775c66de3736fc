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
the robot). Planning never runs while the e-stop is latched: the filter brakes and holds at the control
rate, and the first tick after a reset replans.

Synchronous planning (default, simulations that wait for the planner): :meth:`Planner.step` plans when the
chunk's executed part is used up. Asynchronous planning (``asynchronous: true``, the ROS node): the next plan
starts in a background thread ``lead`` ticks before the executed part ends (the median planning time so far),
from a snapshot of the history; meanwhile the current chunk keeps executing, and its last row is held if it
runs out. A finished plan is adopted at the next tick, skipping the rows whose time has passed. A plan that
started before a reset or an e-stop is discarded; one that raised is logged and its chunk is NaN, which the
filter turns into a hold.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

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
        # asynchronous planning: one worker thread, the plan in flight and the stamp of its newest history frame
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="planner") if cfg.asynchronous else None
        self._pending: Future | None = None
        self._pending_stamp = 0.0
        self._estop_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: PlannerConfig, embodiment: Embodiment) -> Planner:
        pipe = load_world_model(cfg.world_model)
        idm = InverseDynamicsModel.from_pretrained(cfg.idm, embodiment=embodiment)
        logger.info("planner: world model %s, IDM %s, camera %s, device %s", cfg.world_model, cfg.idm, cfg.camera,
                    cfg.device)
        return cls(pipe, idm, embodiment, cfg)

    def reset(self, instruction: str) -> None:
        """A new episode: empty history and chunk, a fresh safety filter. An e-stop stays latched and so does
        its hold: the fresh filter continues from the last command (and velocity, if still braking) instead of
        taking the new episode's joint state, so nothing published changes until the reset."""
        with self._estop_lock:  # an e-stop from another thread lands on the old filter (and is carried) or the new
            old = self.safety
            fresh = SafetyFilter(self.embodiment, old.cfg, cameras=[self.cfg.camera])
            if old.estopped:
                fresh.estop()
                fresh.command, fresh.velocity = old.command, old.velocity
            self.safety = fresh
        self.history.clear()
        self.instruction = instruction
        self.chunk, self.cursor, self.execute_until, self.num_plans = np.zeros((0, ACTION_DIM)), 0, 0, 0
        self._pending = None  # a plan still in flight belongs to the last episode: its result is dropped

    def estop(self) -> None:
        """Latch the e-stop; safe to call from another thread than the control loop (``reset`` never loses it)."""
        with self._estop_lock:
            self.safety.estop()

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
                                   seed=seed, **self.cfg.sampling_kwargs())
        t1 = time.perf_counter()
        video = torch.cat([history[None].to(future.device).float() / 255.0, future], dim=1)
        actions = decode_for_execution(self.idm, video, self.num_history, self.embodiment.control_rate_hz)[0]
        # chunk_len + 1 rows from the newest history frame on; the last one (edge-padded IDM window) is dropped
        return actions[:self.chunk_len], t1 - t0, time.perf_counter() - t1

    def plan(self, now: float) -> np.ndarray:
        """A new (num_future_frames * control_hz / fps, 14) chunk; row i is the target at frame_stamp + i * dt."""
        return self._plan_from(*self._snapshot(now))

    def _snapshot(self, now: float) -> tuple[torch.Tensor, float, float, int, float]:
        """What a plan needs, taken on the control thread: history, its newest stamp, now, plan number, seconds."""
        if self.instruction is None:
            raise RuntimeError("reset(instruction) before planning")
        t0 = time.perf_counter()
        history = self.history.frames(self.cfg.camera)
        number = self.num_plans
        self.num_plans += 1
        return history, self.history.latest_stamp(self.cfg.camera), now, number, time.perf_counter() - t0

    def _plan_from(self, history: torch.Tensor, stamp: float, now: float, number: int, t_history: float
                   ) -> np.ndarray:
        t0 = time.perf_counter()
        chunk, t_world_model, t_idm = self._imagine_and_decode(history, self.cfg.seed + number)
        self.timings.append({"history": t_history, "world_model": t_world_model, "idm": t_idm,
                             "total": t_history + time.perf_counter() - t0, "plan": number, "now": now,
                             "frame_age": now - stamp})
        logger.debug("plan %d at %.3f s took %.3f s", number, now, self.timings[-1]["total"])
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
            self._pending = None  # a plan in flight saw the world before the e-stop
            return self.safety.filter(self.safety.command, now)
        if self._worker is None:
            if self.cursor >= self.execute_until:
                self._adopt(self.plan(now), self.history.latest_stamp(self.cfg.camera), now)
        else:
            self._step_asynchronous(now)
            if not len(self.chunk):  # the first plan is still running
                return self.safety.filter(self.safety.command, now)
        target = self.chunk[min(self.cursor, len(self.chunk) - 1)]  # past the end: hold the last row
        self.cursor += 1
        return self.safety.filter(target, now)

    def _adopt(self, chunk: np.ndarray, stamp: float, now: float) -> None:
        """Execute ``chunk`` (row 0 at the frame ``stamp``) from the row of ``now``."""
        self.chunk = chunk
        elapsed = now - stamp
        self.cursor = min(max(int(round(elapsed * self.embodiment.control_rate_hz)), 0), self.chunk_len - 1)
        remaining = self.chunk_len - self.cursor
        self.execute_until = self.cursor + (min(self.cfg.replan_every, remaining) if self.cfg.replan_every
                                            else remaining)

    def _step_asynchronous(self, now: float) -> None:
        if self._pending is not None and self._pending.done():
            future, self._pending = self._pending, None
            try:
                self._adopt(future.result(), self._pending_stamp, now)
            except Exception:  # noqa: BLE001 - the control loop must go on; the filter holds on the NaN chunk
                logger.exception("planning failed; holding and replanning")
                self._adopt(np.full((self.chunk_len, ACTION_DIM), np.nan), self._pending_stamp, now)
                self.execute_until = self.cursor  # the next plan starts now
        if self._pending is None and self.cursor + self._lead_ticks() >= self.execute_until:
            snapshot = self._snapshot(now)
            self._pending_stamp = snapshot[1]
            self._pending = self._worker.submit(self._plan_from, *snapshot)

    def _lead_ticks(self) -> int:
        """Control ticks a plan takes (median so far): the next one starts that early."""
        if not self.timings:
            return 0
        return int(math.ceil(np.median([t["total"] for t in self.timings[-20:]]) * self.embodiment.control_rate_hz))

    def close(self) -> None:
        """Stop the planning thread (asynchronous mode); a plan in flight finishes and is dropped."""
        self._pending = None
        if self._worker is not None:
            self._worker.shutdown(wait=True)

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
