"""Hydra configs of the EVA stack: YAML groups beside this file, structured schemas in
``configs.schema``, the embodiment files and the names shared by every package."""

from __future__ import annotations

from pathlib import Path

import yaml

from configs.schema import TaskConfig, validate

CONFIG_DIR = Path(__file__).resolve().parent


def known_tasks() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "task").glob("*.yaml"))


def load_task_config(name: str) -> TaskConfig:
    """A task's config from ``configs/task/<name>.yaml`` (outside a Hydra app)."""
    path = CONFIG_DIR / "task" / f"{name}.yaml"
    if not path.exists():
        raise ValueError(f"unknown task '{name}'; known: {', '.join(known_tasks())}")
    with open(path) as f:
        return validate(yaml.safe_load(f), TaskConfig)


def compose(config_name: str, overrides: list[str] | None = None):
    """Compose a primary config with Hydra's compose API (for tests and notebooks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    with initialize_config_module(config_module="configs", version_base=None):
        return hydra_compose(config_name, overrides=overrides or [])
