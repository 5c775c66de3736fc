"""Structured (dataclass) configs. Hydra composes the YAML groups beside this file;
``validate(cfg, Schema)`` merges the result onto the dataclass, which type-checks every
field and runs ``__post_init__``, so a bad value fails at start with its field name.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from configs.constants import CAMERAS


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"config field '{where}': {msg}")


@dataclass
class TaskConfig:
    name: str = MISSING
    step_limit: int = 400  # control steps before an episode is declared failed
    instructions: list[str] = field(default_factory=list)  # training paraphrases
    eval_instructions: list[str] = field(default_factory=list)  # held out for evaluation
    # object -> [x_min, x_max, y_min, y_max] of its initial position on the table (m)
    randomization: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"tasks.{self.name}"
        _check(self.step_limit > 0, f"{where}.step_limit", f"must be positive, got {self.step_limit}")
        _check(len(self.instructions) > 0, f"{where}.instructions", "needs at least one instruction")
        _check(len(self.eval_instructions) > 0, f"{where}.eval_instructions", "needs at least one held-out instruction")
        overlap = set(self.instructions) & set(self.eval_instructions)
        _check(not overlap, f"{where}.eval_instructions", f"must be held out, but overlaps training: {sorted(overlap)}")
        for obj, r in self.randomization.items():
            _check(len(r) == 4 and r[0] <= r[1] and r[2] <= r[3], f"{where}.randomization.{obj}",
                   f"expected [x_min, x_max, y_min, y_max], got {list(r)}")


@dataclass
class RenderConfig:
    height: int = 128
    width: int = 128
    cameras: list[str] = field(default_factory=lambda: list(CAMERAS))
    shadows: bool = False
    multisample: bool = False

    def __post_init__(self) -> None:
        _check(self.height > 0 and self.width > 0, "render.height/width", f"got {self.height}x{self.width}")
        unknown = [c for c in self.cameras if c not in CAMERAS]
        _check(not unknown, "render.cameras", f"unknown {unknown}; known: {list(CAMERAS)}")
        _check(len(self.cameras) > 0, "render.cameras", "needs at least one camera")


@dataclass
class DatasetConfig:
    root: str = "runs/dataset"
    repo_id: str = "eva/sim_aloha"
    episodes_per_task: int = 10
    seed: int = 0  # RoboTwin protocol: episode seeds start at 100000 * (1 + seed)
    max_seed_tries: int = 3  # give up on a task after episodes_per_task * this many seeds
    video_codec: str = "libx264"
    video_crf: int = 18
    chunk_size: int = 1000  # files per chunk-XXX directory (LeRobot v3 default)

    def __post_init__(self) -> None:
        _check(self.episodes_per_task > 0, "dataset.episodes_per_task", f"must be positive, got {self.episodes_per_task}")
        _check(self.max_seed_tries >= 1, "dataset.max_seed_tries", f"must be >= 1, got {self.max_seed_tries}")
        _check(self.video_codec in ("libx264", "libsvtav1", "mpeg4"), "dataset.video_codec",
               f"unsupported '{self.video_codec}'; use libx264, libsvtav1 or mpeg4")
        _check(0 <= self.video_crf <= 51, "dataset.video_crf", f"must be in 0..51, got {self.video_crf}")


@dataclass
class PolicyConfig:
    kind: str = "expert"  # expert | noisy_expert | replay | import
    noise_level: float = 0.0  # noisy_expert: std (rad, normalised for grippers) of the perturbation
    noise_correlation: float = 0.9  # noisy_expert: AR(1) coefficient of the perturbation per step
    dataset_root: Optional[str] = None  # replay: dataset whose actions are replayed
    target: Optional[str] = None  # import: "package.module:Class", with reset() and select_action(obs)
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: Optional[str] = None  # label in reports; defaults to kind

    def __post_init__(self) -> None:
        kinds = ("expert", "noisy_expert", "replay", "import")
        _check(self.kind in kinds, "policy.kind", f"unknown '{self.kind}'; known: {list(kinds)}")
        _check(self.noise_level >= 0, "policy.noise_level", f"must be >= 0, got {self.noise_level}")
        _check(0 <= self.noise_correlation < 1, "policy.noise_correlation", f"must be in [0, 1), got {self.noise_correlation}")
        _check(self.kind != "replay" or bool(self.dataset_root), "policy.dataset_root", "replay needs a dataset root")
        _check(self.kind != "import" or bool(self.target), "policy.target", "import needs 'module:Class'")


@dataclass
class EvalConfig:
    episodes_per_task: int = 10
    seed: int = 0  # RoboTwin protocol: st_seed = 100000 * (1 + seed)
    only_expert_solvable: bool = True  # RoboTwin: keep only seeds the expert solves
    save_video: str = "all"  # all | failed | none
    use_eval_instructions: bool = True

    def __post_init__(self) -> None:
        _check(self.episodes_per_task > 0, "eval.episodes_per_task", f"must be positive, got {self.episodes_per_task}")
        _check(self.save_video in ("all", "failed", "none"), "eval.save_video",
               f"expected all | failed | none, got '{self.save_video}'")


@dataclass
class CollectConfig:
    embodiment: dict[str, Any] = MISSING  # contents of configs/embodiment/<name>.yaml
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    workers: int = 2

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "tasks", "no task selected")
        _check(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")


@dataclass
class EvaluateConfig:
    embodiment: dict[str, Any] = MISSING
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/eval"
    workers: int = 2
    video_fps: int = 25  # mp4 playback rate (frames are subsampled from the control rate)

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "tasks", "no task selected")
        _check(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")


@dataclass
class ReportConfig:
    run_dir: str = "runs/demo"
    title: str = "EVA stack: simulated data and expert evaluation"


# Sections that belong to one stage. An ``experiment=`` preset sets several stages at once
# (dataset size for eva-collect, episodes for eva-eval, ...); each app drops the sections of
# the other stages before validation. Unknown keys anywhere else are still errors.
STAGE_SECTIONS = ("dataset", "eval", "policy")


def validate(cfg: DictConfig | dict, schema: type) -> Any:
    """Merge a composed config onto its dataclass schema and return the typed object."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    own = {f.name for f in fields(schema)}
    keep = OmegaConf.masked_copy(cfg, [k for k in cfg if k in own or k not in STAGE_SECTIONS])
    merged = OmegaConf.merge(OmegaConf.structured(schema), keep)
    return OmegaConf.to_object(merged)
