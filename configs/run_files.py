"""Files every app writes into its run directory: the resolved config, and results written
atomically (a reader never sees a half-written file, a killed run never leaves one)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # per process: several ranks may write one file
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def replace_dir(tmp: str | Path, path: str | Path) -> None:
    """Swap a completely written directory ``tmp`` in at ``path`` (a checkpoint, a saved model).

    A kill at any moment leaves either the old directory or the new one under ``path`` (or, between
    the two renames, the old one under ``path.old``), never a half-written one.
    """
    tmp, path = Path(tmp), Path(path)
    old = path.with_name(path.name + ".old")
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def save_resolved_config(cfg: DictConfig, directory: str | Path, name: str) -> Path:
    """The composed config with every interpolation resolved, next to the run's outputs."""
    path = Path(directory) / name
    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
    return path
