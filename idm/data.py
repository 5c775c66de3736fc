"""Training windows for the IDM, held in memory as uint8.

A window is centred on any frame c of an episode (at the dataset's rate, e.g. 50 fps) and
holds frames c + s*j for j = -k..k, where s = dataset fps / IDM fps: the IDM sees video at
its own frame rate, and every phase of the 50 Hz stream is a training sample. Indices past
either end are clamped to the first / last frame, which is the decode-time edge rule
(replicated edge frames). The target is the action at frame c.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from configs.constants import ACTION_KEY
from sim.dataset import DatasetError, LeRobotDataset


class IDMWindows:
    def __init__(self, ds: LeRobotDataset, episodes: list[int], cameras: list[str], fps: int, context_k: int,
                 image_size: tuple[int, int], progress: bool = True):
        if ds.fps % fps:
            raise DatasetError(f"{ds.root}: IDM fps {fps} does not divide the dataset fps {ds.fps}")
        for cam in cameras:
            shape = ds.features[f"observation.images.{cam}"]["shape"][:2] if cam in ds.cameras else None
            if shape is None:
                raise DatasetError(f"{ds.root}: no camera '{cam}'; cameras: {ds.cameras}")
            if tuple(shape) != tuple(image_size):
                raise DatasetError(f"{ds.root}: camera '{cam}' is {shape[0]}x{shape[1]}, the IDM expects "
                                   f"{image_size[0]}x{image_size[1]}")
        self.step, self.k, self.cameras = ds.fps // fps, context_k, cameras
        self.frames: list[np.ndarray] = []  # per episode (T, cams, 3, H, W) uint8
        self.actions: list[np.ndarray] = []  # per episode (T, 14) float32
        for ep in tqdm(episodes, desc="load episodes", unit="ep", disable=not progress):
            video = np.stack([ds.episode_video(ep, c) for c in cameras], axis=1)  # (T, cams, H, W, 3)
            self.frames.append(np.ascontiguousarray(video.transpose(0, 1, 4, 2, 3)))
            self.actions.append(ds.episode_table(ep)[ACTION_KEY])
        self.lengths = np.array([len(a) for a in self.actions])
        self.offsets = np.arange(-context_k, context_k + 1) * self.step

    def __len__(self) -> int:
        return int(self.lengths.sum())

    def sample_index(self, rng: np.random.Generator, n: int, episode_weights: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
        """(episode ids, centre frames): uniform over all frames of all episodes, or, with
        ``episode_weights`` (one per episode, summing to 1), an episode drawn by weight and a frame
        uniform within it."""
        if episode_weights is not None:
            ep = rng.choice(len(self.lengths), size=n, p=episode_weights)
            return ep, (rng.random(n) * self.lengths[ep]).astype(np.int64)
        flat = rng.integers(0, len(self), size=n)
        ep = np.searchsorted(np.cumsum(self.lengths), flat, side="right")
        centre = flat - np.concatenate([[0], np.cumsum(self.lengths)[:-1]])[ep]
        return ep, centre

    def batch(self, episodes: np.ndarray, centres: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """frames (B, cams, 2k+1, 3, H, W) uint8 (the model takes them as they are), actions (B, 14)."""
        frames, actions = [], []
        for ep, c in zip(episodes, centres):
            idx = np.clip(c + self.offsets, 0, self.lengths[ep] - 1)
            frames.append(self.frames[ep][idx].transpose(1, 0, 2, 3, 4))
            actions.append(self.actions[ep][c])
        return torch.from_numpy(np.stack(frames)), torch.from_numpy(np.stack(actions)).float()


def task_episode_weights(lengths: list[int], tasks: list[str], task_weights: dict[str, float]) -> np.ndarray:
    """Sampling weights of episodes (``lengths`` frames, ``tasks`` their task names) that give each task its
    share of ``task_weights``, a task's frames staying equally likely among themselves."""
    missing = sorted(set(tasks) - set(task_weights))
    if missing:
        raise ValueError(f"task_weights: no weight for task(s) {missing} of the training set; given {task_weights}")
    frames = {t: sum(n for n, u in zip(lengths, tasks) if u == t) for t in set(tasks)}
    total = sum(task_weights[t] for t in frames)
    w = np.array([task_weights[t] / total * n / frames[t] for n, t in zip(lengths, tasks)])
    return w / w.sum()


def split_episodes(ds: LeRobotDataset, val_per_task: int) -> tuple[list[int], list[int]]:
    """The last ``val_per_task`` episodes of every task are validation, the rest training."""
    by_task: dict[str, list[int]] = {}
    for e in ds.episodes:
        by_task.setdefault(e.get("eva/task", "?"), []).append(e["episode_index"])
    train, val = [], []
    for task, eps in by_task.items():
        if len(eps) <= val_per_task:
            raise DatasetError(f"{ds.root}: task '{task}' has {len(eps)} episodes, not enough to hold out "
                               f"{val_per_task} for validation")
        train += eps[:-val_per_task]
        val += eps[-val_per_task:]
    return sorted(train), sorted(val)
