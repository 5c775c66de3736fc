"""World-model training clips, held in memory as uint8 at the world model's frame rate.

A clip is ``H + N`` consecutive frames at ``fps`` (history, then future) from one camera, with the
action at each frame and the episode's instruction. Every phase of the dataset's rate is a start
(at 50 Hz data and 10 fps, starts are any 50 Hz frame), so no frame goes unused.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from configs.constants import ACTION_KEY
from sim.dataset import DatasetError, LeRobotDataset


class ClipWindows:
    def __init__(self, ds: LeRobotDataset, episodes: list[int], camera: str, fps: int, clip_frames: int,
                 image_size: tuple[int, int], progress: bool = True):
        if ds.fps % fps:
            raise DatasetError(f"{ds.root}: world-model fps {fps} does not divide the dataset fps {ds.fps}")
        if camera not in ds.cameras:
            raise DatasetError(f"{ds.root}: no camera '{camera}'; cameras: {ds.cameras}")
        shape = tuple(ds.features[f"observation.images.{camera}"]["shape"][:2])
        if shape != tuple(image_size):
            raise DatasetError(f"{ds.root}: camera '{camera}' is {shape[0]}x{shape[1]}, the world model expects "
                               f"{image_size[0]}x{image_size[1]}")
        self.step, self.clip_frames = ds.fps // fps, clip_frames
        span = (clip_frames - 1) * self.step + 1
        self.frames, self.actions, self.instructions, self.starts = [], [], [], []
        for ep in tqdm(episodes, desc="load episodes", unit="ep", disable=not progress):
            video = ds.episode_video(ep, camera)  # (T, H, W, 3) uint8
            if len(video) < span:
                raise DatasetError(f"{ds.root}: episode {ep} has {len(video)} frames, a clip spans {span}")
            self.frames.append(np.ascontiguousarray(video.transpose(0, 3, 1, 2)))
            self.actions.append(ds.episode_table(ep)[ACTION_KEY].astype(np.float32))
            self.instructions.append(ds.instruction(ep))
            self.starts.append(len(video) - span + 1)
        self.starts = np.asarray(self.starts)

    def __len__(self) -> int:
        return int(self.starts.sum())

    def sample_index(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Uniform over all clip starts of all episodes: (episode ids, start frames)."""
        flat = rng.integers(0, len(self), size=n)
        ends = np.cumsum(self.starts)
        ep = np.searchsorted(ends, flat, side="right")
        return ep, flat - (ends - self.starts)[ep]

    def batch(self, episodes, starts) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """frames (B, H+N, 3, h, w) float in [0, 1], actions (B, H+N, 14), instructions."""
        offsets = np.arange(self.clip_frames) * self.step
        frames = np.stack([self.frames[e][s + offsets] for e, s in zip(episodes, starts)])
        actions = np.stack([self.actions[e][s + offsets] for e, s in zip(episodes, starts)])
        return (torch.from_numpy(frames).float().div_(255.0), torch.from_numpy(actions),
                [self.instructions[e] for e in episodes])

    def sample_frames(self, rng: np.random.Generator, n: int) -> torch.Tensor:
        """``n`` frames (n, 3, h, w) float in [0, 1], uniform over all frames of all episodes."""
        lengths = np.array([len(f) for f in self.frames])
        flat = rng.integers(0, lengths.sum(), size=n)
        ends = np.cumsum(lengths)
        ep = np.searchsorted(ends, flat, side="right")
        idx = flat - (ends - lengths)[ep]
        return torch.from_numpy(np.stack([self.frames[e][i] for e, i in zip(ep, idx)])).float().div_(255.0)
