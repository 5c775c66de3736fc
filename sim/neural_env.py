"""The action-conditioned world model as a simulator: gymnasium-style ``reset``/``step``, batched over episodes.

``reset`` starts each episode from a real camera frame (the last H frames when given; one frame is repeated
H times: the robot rests before it starts) and the robot's joint state. ``step`` takes an action chunk at the
control rate, ``chunk_frames x (control rate / world-model fps)`` actions per episode, and returns the
``chunk_frames`` frames the world model imagines for it.

Actions reach the world model at its frame rate, as in training (``world_model.data.ClipWindows``): the
action of a frame is the command issued right after that frame was seen. Inside a chunk that starting at
control step ``t0``, future frame ``k`` (1..N, at ``t0 + k * every``) takes action ``t0 + k * every``; the
last frame's command is not issued yet, so it takes the chunk's last action, and the next ``step`` replaces
it by the command that was actually issued (the first of the next chunk). At reset the history frames take
the joint state as their action.

The observation is the newest imagined frame and, as the joint state, the last command: the world model
predicts pixels, not proprioception, so the simulator assumes perfect tracking (WorldGym and RLVR-World do
the same). Sample ``i`` of chunk ``c`` uses seed ``seeds[i] + 1000 * c``; a sample does not depend on the rest
of its batch (``WorldModelPipeline.rollout``), so an episode is reproducible from its seed alone.
"""

from __future__ import annotations

import numpy as np
import torch

from configs.constants import ACTION_DIM
from configs.schema import ImaginationConfig
from world_model.pipeline import WorldModelPipeline


class NeuralSimulator:
    def __init__(self, pipe: WorldModelPipeline, control_rate_hz: float, cfg: ImaginationConfig | None = None):
        self.pipe, self.cfg = pipe, cfg or ImaginationConfig()
        fps = pipe.config.fps
        if control_rate_hz % fps:
            raise ValueError(f"the world model's {fps} fps does not divide the control rate {control_rate_hz} Hz")
        self.every = int(control_rate_hz // fps)
        self.num_history = pipe.config.num_history_frames
        self.image_size = tuple(pipe.config.image_size)
        self.history: torch.Tensor | None = None  # (B, H, 3, h, w) float in [0, 1]
        self.history_actions: np.ndarray | None = None  # (B, H, 14)
        self.instructions: list[str] = []
        self.seeds: list[int] = []
        self.chunks = 0

    @property
    def chunk_steps(self) -> int:
        """Control steps per ``step`` call."""
        return self.cfg.chunk_frames * self.every

    def reset(self, frames: np.ndarray, states: np.ndarray, instructions: list[str], seeds: list[int]) -> np.ndarray:
        """frames (B, h, w, 3) or (B, T, h, w, 3) uint8 (the newest last), joint states (B, 14), one instruction
        and one seed per episode -> the newest frames (B, h, w, 3) uint8."""
        frames = np.asarray(frames)
        if frames.ndim == 4:
            frames = frames[:, None]
        b = len(frames)
        if frames.dtype != np.uint8 or frames.ndim != 5 or frames.shape[2:] != (*self.image_size, 3):
            raise ValueError(f"reset frames: expected (B, [T,] {self.image_size[0]}, {self.image_size[1]}, 3) uint8 "
                             f"(the world model's resolution), got {frames.dtype} {frames.shape}")
        states = np.asarray(states, dtype=np.float32)
        if states.shape != (b, ACTION_DIM) or not np.all(np.isfinite(states)):
            raise ValueError(f"reset states: expected finite ({b}, {ACTION_DIM}), got {states.shape}")
        if len(instructions) != b or len(seeds) != b:
            raise ValueError(f"reset: {b} episodes but {len(instructions)} instructions and {len(seeds)} seeds")
        frames = frames[:, -self.num_history:]
        pad = self.num_history - frames.shape[1]
        frames = np.concatenate([np.repeat(frames[:, :1], pad, axis=1), frames], axis=1)
        self.history = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 1, 4, 2, 3))).float().div_(255.0)
        self.history_actions = np.repeat(states[:, None], self.num_history, axis=1)
        self.instructions, self.seeds, self.chunks = list(instructions), [int(s) for s in seeds], 0
        return frames[:, -1]

    def step(self, actions: np.ndarray) -> torch.Tensor:
        """actions (B, chunk_steps, 14) at the control rate -> imagined frames (B, chunk_frames, 3, h, w) float in
        [0, 1] (``to_uint8`` gives camera images)."""
        if self.history is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions, dtype=np.float32)
        b = len(self.history)
        if actions.shape != (b, self.chunk_steps, ACTION_DIM):
            raise ValueError(f"step actions: expected ({b}, {self.chunk_steps}, {ACTION_DIM}) (chunk_frames "
                             f"{self.cfg.chunk_frames} x {self.every} control steps), got {actions.shape}")
        if not np.all(np.isfinite(actions)):
            raise ValueError(f"step actions: non-finite values in episodes {np.flatnonzero(~np.isfinite(actions).all(axis=(1, 2))).tolist()}")
        cond = frame_rate_actions(self.history_actions, actions, self.every, self.cfg.chunk_frames)
        device = torch.device(self.cfg.device)
        frames = self.pipe.rollout(self.history.to(device), self.instructions, torch.from_numpy(cond).to(device),
                                   num_frames=self.cfg.chunk_frames, seed=[s + 1000 * self.chunks for s in self.seeds],
                                   **self.cfg.sampling_kwargs()).float().cpu()
        self.chunks += 1
        self.history = torch.cat([self.history, frames], dim=1)[:, -self.num_history:]
        self.history_actions = cond[:, -self.num_history:]  # the newest H frames' actions, as conditioned
        return frames


def frame_rate_actions(history_actions: np.ndarray, chunk: np.ndarray, every: int, chunk_frames: int) -> np.ndarray:
    """The world model's action conditioning of a chunk: history actions (B, H, 14) and control-rate actions
    (B, S, 14) -> (B, H + chunk_frames, 14), with the newest history frame's action replaced by the command
    actually issued there (``chunk[:, 0]``) and future frame k taking the command issued at it (the last one
    when it is not issued within the chunk). See the module docstring."""
    hist = history_actions.copy()
    hist[:, -1] = chunk[:, 0]
    at = np.minimum(np.arange(1, chunk_frames + 1) * every, chunk.shape[1] - 1)
    return np.concatenate([hist, chunk[:, at]], axis=1).astype(np.float32)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(..., 3, h, w) float in [0, 1] -> (..., h, w, 3) uint8 camera images."""
    return frames.clamp(0, 1).mul(255).round().to(torch.uint8).movedim(-3, -1).numpy()
