"""LeRobot v3.0 datasets, written with pyarrow and PyAV (no dependency on ``lerobot``).

Layout (LeRobot v3.0)::

    meta/info.json                 codebase_version, fps, features, totals, path templates
    meta/stats.json                per-feature min/max/mean/std/count
    meta/tasks.parquet             task_index <-> task string (our instructions)
    meta/episodes/chunk-XXX/file-XXX.parquet   one row per episode
    data/chunk-XXX/file-XXX.parquet            frames: observation.state, action, timestamp, ...
    videos/<video_key>/chunk-XXX/file-XXX.mp4

We write one episode per data/video/episode-meta file, which v3 allows (a file may hold
any number of episodes). That makes every episode an atomic commit: its videos and data
are moved into place first and its ``meta/episodes`` file is written last, by rename.
An episode without that file is partial: reopening the dataset deletes it. So a killed
collection loses at most the episode in flight.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from configs.constants import (
    ACTION_DIM,
    ACTION_KEY,
    CLIP_ACTION,
    CLIP_EPISODE,
    CLIP_FRAMES,
    CLIP_INSTRUCTION,
    CLIP_START,
    CLIP_STATE,
    FRAME_COLUMNS,
    LEROBOT_CODEBASE_VERSION,
    STATE_KEY,
    image_key,
)
from configs.run_files import atomic_write_json
from sim.video import VideoError, read_mp4, video_codec_name, write_mp4

log = logging.getLogger(__name__)

DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
STAGING = ".staging"
EVA_INFO_KEY = "eva"  # our additions to info.json: embodiment name, cameras


class DatasetError(RuntimeError):
    """A dataset on disk that is inconsistent, damaged or not what the caller asked for."""


def _atomic_write_table(path: Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def _vector_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    x = x.astype(np.float64)
    return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}


def _image_stats(frames: np.ndarray, max_frames: int = 64) -> dict[str, np.ndarray]:
    """Per-channel stats of images scaled to [0, 1], shape (3, 1, 1) as LeRobot stores them."""
    idx = np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).astype(int)
    x = frames[idx].astype(np.float64) / 255.0
    x = x.reshape(-1, 3)
    out = {k: v.reshape(3, 1, 1) for k, v in _vector_stats(x).items() if k != "count"}
    out["count"] = np.array([len(frames)])
    return out


def _merge_stats(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Exact pooled mean/std/min/max from per-episode stats (weights = frame counts)."""
    n = np.array([float(s["count"][0]) for s in per_episode])
    w = (n / n.sum()).reshape((-1,) + (1,) * per_episode[0]["mean"].ndim)
    means = np.stack([s["mean"] for s in per_episode])
    mean = (w * means).sum(0)
    var = (w * (np.stack([s["std"] for s in per_episode]) ** 2 + (means - mean) ** 2)).sum(0)
    return {
        "min": np.min(np.stack([s["min"] for s in per_episode]), 0),
        "max": np.max(np.stack([s["max"] for s in per_episode]), 0),
        "mean": mean,
        "std": np.sqrt(var),
        "count": np.array([int(n.sum())]),
    }


@dataclass
class EpisodeRecord:
    """One collected episode, ready to commit. Videos are already encoded in the staging dir."""

    states: np.ndarray  # (T, 14)
    actions: np.ndarray  # (T, 14)
    instruction: str
    videos: dict[str, Path]  # camera -> staged mp4
    image_stats: dict[str, dict[str, np.ndarray]]  # camera -> stats
    task: str  # simulator task name
    seed: int
    success: bool


class LeRobotDatasetWriter:
    """Writes a LeRobot v3.0 dataset one atomic episode at a time; reopening resumes."""

    def __init__(self, root: str | Path, *, repo_id: str, fps: int, robot_type: str, embodiment: str,
                 joint_names: list[str], cameras: list[str], image_shape: tuple[int, int],
                 tasks: list[str], video_codec: str = "libx264", video_crf: int = 18, chunk_size: int = 1000):
        self.root = Path(root)
        self.fps, self.cameras, self.chunk_size = int(fps), list(cameras), int(chunk_size)
        self.video_codec, self.video_crf = video_codec, video_crf
        self.tasks = list(dict.fromkeys(tasks))
        self.info = self._make_info(repo_id, robot_type, embodiment, joint_names, image_shape)
        info_path = self.root / "meta" / "info.json"
        if info_path.exists():
            self._check_compatible(json.loads(info_path.read_text()), info_path)
        self.staging = self.root / STAGING
        self.episodes: list[dict[str, Any]] = self._recover()
        self._write_meta()

    # ------------------------------------------------------------------ setup
    def _make_info(self, repo_id, robot_type, embodiment, joint_names, image_shape) -> dict[str, Any]:
        h, w = image_shape
        scalar = {"shape": [1], "names": None}
        features: dict[str, Any] = {}
        for cam in self.cameras:
            features[image_key(cam)] = {
                "dtype": "video",
                "shape": [h, w, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": h, "video.width": w, "video.codec": video_codec_name(self.video_codec),
                    "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": self.fps,
                    "video.channels": 3, "has_audio": False,
                },
            }
        features[STATE_KEY] = {"dtype": "float32", "shape": [ACTION_DIM], "names": list(joint_names)}
        features[ACTION_KEY] = {"dtype": "float32", "shape": [ACTION_DIM], "names": list(joint_names)}
        features["timestamp"] = {"dtype": "float32", **scalar}
        for col in ("frame_index", "episode_index", "index", "task_index"):
            features[col] = {"dtype": "int64", **scalar}
        return {
            "codebase_version": LEROBOT_CODEBASE_VERSION,
            "robot_type": robot_type,
            "total_episodes": 0,
            "total_frames": 0,
            "total_tasks": len(self.tasks),
            "chunks_size": self.chunk_size,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500,
            "fps": self.fps,
            "splits": {"train": "0:0"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
            EVA_INFO_KEY: {"embodiment": embodiment, "repo_id": repo_id, "cameras": self.cameras},
        }

    def _check_compatible(self, old: dict[str, Any], path: Path) -> None:
        # chunks_size decides where each episode's files live: a different value would make
        # _recover() treat committed files as partial and delete them.
        for key in ("fps", "robot_type", "codebase_version", "chunks_size"):
            if old.get(key) != self.info[key]:
                raise DatasetError(f"{path}: existing dataset has {key}={old.get(key)!r}, "
                                   f"this run writes {key}={self.info[key]!r}; use another dataset.root")
        old_eva, new_eva = old.get(EVA_INFO_KEY, {}), self.info[EVA_INFO_KEY]
        for key in ("embodiment", "cameras"):
            if old_eva.get(key) != new_eva[key]:
                raise DatasetError(f"{path}: existing dataset has {key}={old_eva.get(key)!r}, "
                                   f"this run writes {key}={new_eva[key]!r}; use another dataset.root")
        if old["features"] != self.info["features"]:
            raise DatasetError(f"{path}: existing dataset's features differ from this run's (image size or names)")

    def _paths(self, ep: int) -> dict[str, Path]:
        loc = {"chunk_index": ep // self.chunk_size, "file_index": ep % self.chunk_size}
        paths = {"data": self.root / DATA_PATH.format(**loc), "meta": self.root / EPISODES_PATH.format(**loc)}
        for cam in self.cameras:
            paths[cam] = self.root / VIDEO_PATH.format(video_key=image_key(cam), **loc)
        return paths

    def _recover(self) -> list[dict[str, Any]]:
        """Load committed episodes; delete partial ones and the staging area."""
        episodes = []
        meta_files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        for f in meta_files:
            try:
                episodes.extend(pq.read_table(f).to_pylist())
            except Exception as e:  # noqa: BLE001 - pyarrow raises several types
                raise DatasetError(f"{f}: cannot read episode metadata ({e})") from e
        episodes.sort(key=lambda r: r["episode_index"])
        if [r["episode_index"] for r in episodes] != list(range(len(episodes))):
            raise DatasetError(f"{self.root}: committed episodes are not contiguous: "
                               f"{[r['episode_index'] for r in episodes]}")
        committed = {p for ep in range(len(episodes)) for p in self._paths(ep).values()}
        removed = []
        for sub in ("data", "videos"):
            for f in (self.root / sub).rglob("*"):
                if f.is_file() and f not in committed:
                    f.unlink()
                    removed.append(f)
        if removed:
            log.warning("removed %d files of a partial episode: %s", len(removed), [str(p) for p in removed])
        shutil.rmtree(self.staging, ignore_errors=True)
        if episodes:
            log.info("resuming %s with %d committed episodes", self.root, len(episodes))
        return episodes

    # ------------------------------------------------------------------ commit
    def staging_dir(self, name: str) -> Path:
        d = self.staging / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def add_episode(self, rec: EpisodeRecord) -> int:
        """Commit one episode: videos, then frames, then its meta file (the commit marker)."""
        t = len(rec.states)
        if rec.states.shape != (t, ACTION_DIM) or rec.actions.shape != (t, ACTION_DIM):
            raise ValueError(f"states/actions must be ({t}, {ACTION_DIM}), got {rec.states.shape} {rec.actions.shape}")
        if rec.instruction not in self.tasks:
            raise ValueError(f"instruction {rec.instruction!r} is not among the dataset's tasks")
        if set(rec.videos) != set(self.cameras):
            raise ValueError(f"episode has videos for {sorted(rec.videos)}, dataset expects {self.cameras}")
        ep = len(self.episodes)
        start = sum(e["length"] for e in self.episodes)
        paths = self._paths(ep)
        task_index = self.tasks.index(rec.instruction)
        for cam in self.cameras:
            paths[cam].parent.mkdir(parents=True, exist_ok=True)
            os.replace(rec.videos[cam], paths[cam])
        frames = pa.table({
            STATE_KEY: pa.array(list(rec.states.astype(np.float32)), type=pa.list_(pa.float32(), ACTION_DIM)),
            ACTION_KEY: pa.array(list(rec.actions.astype(np.float32)), type=pa.list_(pa.float32(), ACTION_DIM)),
            "timestamp": pa.array(np.arange(t, dtype=np.float32) / self.fps),
            "frame_index": pa.array(np.arange(t, dtype=np.int64)),
            "episode_index": pa.array(np.full(t, ep, dtype=np.int64)),
            "index": pa.array(np.arange(start, start + t, dtype=np.int64)),
            "task_index": pa.array(np.full(t, task_index, dtype=np.int64)),
        })
        _atomic_write_table(paths["data"], frames)
        loc = {"chunk_index": ep // self.chunk_size, "file_index": ep % self.chunk_size}
        row: dict[str, Any] = {
            "episode_index": ep,
            "tasks": [rec.instruction],
            "length": t,
            "data/chunk_index": loc["chunk_index"],
            "data/file_index": loc["file_index"],
            "dataset_from_index": start,
            "dataset_to_index": start + t,
            "meta/episodes/chunk_index": loc["chunk_index"],
            "meta/episodes/file_index": loc["file_index"],
        }
        for cam in self.cameras:
            key = image_key(cam)
            row[f"videos/{key}/chunk_index"] = loc["chunk_index"]
            row[f"videos/{key}/file_index"] = loc["file_index"]
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = t / self.fps
        feature_stats = {STATE_KEY: _vector_stats(rec.states), ACTION_KEY: _vector_stats(rec.actions)}
        feature_stats.update({image_key(c): s for c, s in rec.image_stats.items()})
        for feat, stats in feature_stats.items():
            for name, value in stats.items():
                row[f"stats/{feat}/{name}"] = np.asarray(value).tolist()
        row.update({"eva/task": rec.task, "eva/seed": int(rec.seed), "eva/success": bool(rec.success)})
        _atomic_write_table(paths["meta"], pa.Table.from_pylist([row]))
        self.episodes.append(row)
        self._write_meta()
        return ep

    def _write_meta(self) -> None:
        info = dict(self.info)
        n = len(self.episodes)
        info["total_episodes"] = n
        info["total_frames"] = int(sum(e["length"] for e in self.episodes))
        info["splits"] = {"train": f"0:{n}"}
        atomic_write_json(self.root / "meta" / "info.json", info)
        _atomic_write_table(self.root / "meta" / "tasks.parquet",
                            pa.table({"task_index": np.arange(len(self.tasks), dtype=np.int64), "task": self.tasks}))
        if self.episodes:
            stats = {}
            feats = sorted({k.split("/")[1] for k in self.episodes[0] if k.startswith("stats/")})
            for feat in feats:
                per_ep = [{name: np.asarray(e[f"stats/{feat}/{name}"]) for name in ("min", "max", "mean", "std", "count")}
                          for e in self.episodes]
                stats[feat] = {k: v.tolist() for k, v in _merge_stats(per_ep).items()}
            atomic_write_json(self.root / "meta" / "stats.json", stats)


def stage_episode_videos(staging: Path, frames: dict[str, np.ndarray], fps: int, codec: str, crf: int
                         ) -> tuple[dict[str, Path], dict[str, dict[str, np.ndarray]]]:
    """Encode each camera's frames into ``staging`` (runs in a worker process)."""
    videos, stats = {}, {}
    for cam, arr in frames.items():
        videos[cam] = staging / f"{cam}.mp4"
        write_mp4(videos[cam], arr, fps=fps, codec=codec, crf=crf)
        stats[cam] = _image_stats(arr)
    return videos, stats


# ====================================================================== reading
REQUIRED_INFO = ("codebase_version", "fps", "features", "total_episodes", "total_frames", "total_tasks",
                 "robot_type", "data_path", "video_path", "chunks_size", "splits")
REQUIRED_EPISODE_COLUMNS = ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                            "dataset_from_index", "dataset_to_index")


class LeRobotDataset:
    """Reads a LeRobot v3.0 dataset (ours or any with the same layout) and validates it field by field."""

    def __init__(self, root: str | Path, *, expected_fps: int | None = None, expected_embodiment: str | None = None):
        self.root = Path(root)
        info_path = self.root / "meta" / "info.json"
        if not info_path.exists():
            raise DatasetError(f"{info_path}: missing; is {self.root} a LeRobot v3.0 dataset?")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{info_path}: invalid JSON ({e})") from e
        missing = [k for k in REQUIRED_INFO if k not in self.info]
        if missing:
            raise DatasetError(f"{info_path}: missing fields {missing}")
        if self.info["codebase_version"] != LEROBOT_CODEBASE_VERSION:
            raise DatasetError(f"{info_path}: codebase_version {self.info['codebase_version']!r}, "
                               f"expected {LEROBOT_CODEBASE_VERSION!r}")
        self.fps = int(self.info["fps"])
        if expected_fps is not None and self.fps != expected_fps:
            raise DatasetError(f"{info_path}: dataset fps is {self.fps}, the config expects {expected_fps}")
        self.embodiment = self.info.get(EVA_INFO_KEY, {}).get("embodiment")
        if expected_embodiment is not None and self.embodiment != expected_embodiment:
            raise DatasetError(f"{info_path}: dataset embodiment is {self.embodiment!r}, "
                               f"the config expects {expected_embodiment!r}")
        self.features = self.info["features"]
        self.cameras = [k.removeprefix("observation.images.") for k, v in self.features.items()
                        if v.get("dtype") == "video"]
        for key in (STATE_KEY, ACTION_KEY, *FRAME_COLUMNS):
            if key not in self.features:
                raise DatasetError(f"{info_path}: features lack {key!r}")
        self.episodes = self._load_episodes()
        tasks = pq.read_table(self.root / "meta" / "tasks.parquet").to_pydict()
        self.tasks = dict(zip(tasks["task_index"], tasks["task"]))
        if len(self.episodes) != self.info["total_episodes"]:
            raise DatasetError(f"{info_path}: total_episodes={self.info['total_episodes']} but "
                               f"meta/episodes lists {len(self.episodes)}")
        total = sum(e["length"] for e in self.episodes)
        if total != self.info["total_frames"]:
            raise DatasetError(f"{info_path}: total_frames={self.info['total_frames']} but episodes sum to {total}")

    def _load_episodes(self) -> list[dict[str, Any]]:
        rows = []
        for f in sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet")):
            try:
                rows.extend(pq.read_table(f).to_pylist())
            except Exception as e:  # noqa: BLE001
                raise DatasetError(f"{f}: cannot read episode metadata ({e})") from e
        for r in rows:
            missing = [c for c in REQUIRED_EPISODE_COLUMNS if c not in r]
            if missing:
                raise DatasetError(f"{self.root}/meta/episodes: episode {r.get('episode_index')} lacks {missing}")
        rows.sort(key=lambda r: r["episode_index"])
        return rows

    def __len__(self) -> int:
        return len(self.episodes)

    def data_path(self, ep: int) -> Path:
        e = self.episodes[ep]
        return self.root / self.info["data_path"].format(chunk_index=e["data/chunk_index"],
                                                         file_index=e["data/file_index"])

    def video_path(self, ep: int, camera: str) -> Path:
        e, key = self.episodes[ep], image_key(camera)
        return self.root / self.info["video_path"].format(video_key=key, chunk_index=e[f"videos/{key}/chunk_index"],
                                                          file_index=e[f"videos/{key}/file_index"])

    def episode_table(self, ep: int) -> dict[str, np.ndarray]:
        """Frames of episode ``ep``: observation.state, action (T, 14) and the index columns."""
        path = self.data_path(ep)
        try:
            table = pq.read_table(path)
        except Exception as e:  # noqa: BLE001
            raise DatasetError(f"{path}: episode {ep}: cannot read parquet ({e})") from e
        table = table.filter(pc.equal(table["episode_index"], ep))
        expected = self.episodes[ep]["length"]
        if table.num_rows != expected:
            raise DatasetError(f"{path}: episode {ep}: {table.num_rows} frames, meta says {expected}")
        out = {k: np.asarray(table[k].to_pylist(), dtype=np.float32) for k in (STATE_KEY, ACTION_KEY)}
        for k in FRAME_COLUMNS:
            out[k] = table[k].to_numpy()
        if not np.array_equal(out["frame_index"], np.arange(expected)):
            raise DatasetError(f"{path}: episode {ep}: frame_index is not 0..{expected - 1}")
        return out

    def episode_video(self, ep: int, camera: str) -> np.ndarray:
        if camera not in self.cameras:
            raise DatasetError(f"{self.root}: no camera {camera!r}; cameras: {self.cameras}")
        path = self.video_path(ep, camera)
        try:
            frames = read_mp4(path, expected_frames=self.episodes[ep]["length"])
        except VideoError as e:
            raise DatasetError(f"episode {ep}, camera {camera}: {e}") from e
        h, w = self.features[image_key(camera)]["shape"][:2]
        return frames[:, :h, :w]

    def instruction(self, ep: int) -> str:
        return self.episodes[ep]["tasks"][0]


class ClipDataset:
    """Training clips: windows of ``clip_len`` frames at ``fps`` from chosen cameras.

    Each item is a dict with the keys of ``configs.constants`` (``frames``: camera ->
    (T, H, W, 3) uint8, ``state`` and ``action``: (T, 14) float32, ``instruction``,
    ``episode_index``, ``start_frame``). ``fps`` must divide the dataset's frame rate;
    every valid window start is an item (stride ``window_stride`` at the clip rate).
    Decoded episodes are cached (``cache_episodes`` most recent).
    """

    def __init__(self, root: str | Path, *, clip_len: int, fps: int | None = None, cameras: list[str] | None = None,
                 episodes: list[int] | None = None, window_stride: int = 1, expected_embodiment: str | None = None,
                 expected_fps: int | None = None, cache_episodes: int = 8):
        self.ds = LeRobotDataset(root, expected_fps=expected_fps, expected_embodiment=expected_embodiment)
        fps = fps or self.ds.fps
        if self.ds.fps % fps:
            raise DatasetError(f"{self.ds.root}: clip fps {fps} does not divide the dataset fps {self.ds.fps}")
        self.step = self.ds.fps // fps
        self.clip_len = clip_len
        self.cameras = cameras or self.ds.cameras
        unknown = [c for c in self.cameras if c not in self.ds.cameras]
        if unknown:
            raise DatasetError(f"{self.ds.root}: no cameras {unknown}; cameras: {self.ds.cameras}")
        self.episode_ids = list(range(len(self.ds))) if episodes is None else list(episodes)
        span = (clip_len - 1) * self.step + 1
        self.index: list[tuple[int, int]] = []
        for ep in self.episode_ids:
            length = self.ds.episodes[ep]["length"]
            self.index.extend((ep, s) for s in range(0, length - span + 1, window_stride * self.step))
        self._cache: dict[int, dict[str, Any]] = {}
        self._cache_size = cache_episodes

    def __len__(self) -> int:
        return len(self.index)

    def _episode(self, ep: int) -> dict[str, Any]:
        if ep not in self._cache:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            table = self.ds.episode_table(ep)
            self._cache[ep] = {
                "table": table,
                "videos": {c: self.ds.episode_video(ep, c) for c in self.cameras},
            }
        return self._cache[ep]

    def __getitem__(self, i: int) -> dict[str, Any]:
        ep, start = self.index[i]
        data = self._episode(ep)
        sel = slice(start, start + (self.clip_len - 1) * self.step + 1, self.step)
        return {
            CLIP_FRAMES: {c: data["videos"][c][sel] for c in self.cameras},
            CLIP_STATE: data["table"][STATE_KEY][sel],
            CLIP_ACTION: data["table"][ACTION_KEY][sel],
            CLIP_INSTRUCTION: self.ds.instruction(ep),
            CLIP_EPISODE: ep,
            CLIP_START: start,
        }
