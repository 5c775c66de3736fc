"""Task registry: adding a task means one module here and one YAML in configs/task/."""

from __future__ import annotations

from configs.embodiment import Embodiment
from configs.schema import RenderConfig, TaskConfig
from sim.tasks.base import BimanualTask
from sim.tasks.insertion import Insertion
from sim.tasks.lift_bar import LiftBar
from sim.tasks.transfer_cube import TransferCube

TASKS: dict[str, type[BimanualTask]] = {cls.name: cls for cls in (TransferCube, Insertion, LiftBar)}


def make_task(cfg: TaskConfig, embodiment: Embodiment, render: RenderConfig | None = None,
              instruction_split: str = "train") -> BimanualTask:
    if cfg.name not in TASKS:
        raise ValueError(f"unknown task '{cfg.name}'; known: {', '.join(sorted(TASKS))}")
    return TASKS[cfg.name](cfg, embodiment, render, instruction_split)


__all__ = ["TASKS", "BimanualTask", "make_task"]
