"""Embodiment files: the one place that knows a robot's joints, limits, cameras and topics."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from configs.constants import ACTION_DIM, ARMS, CAMERAS

EMBODIMENT_DIR = Path(__file__).resolve().parent / "embodiment"


def known_embodiments() -> list[str]:
    return sorted(p.stem for p in EMBODIMENT_DIR.glob("*.yaml"))


@dataclass(frozen=True)
class CameraSpec:
    sim: str | None
    ros_topic: str


@dataclass(frozen=True)
class Embodiment:
    """A bimanual arm described in the 14-D action layout of ``configs.constants``."""

    name: str
    robot_type: str
    control_rate_hz: float
    joint_names: tuple[str, ...]
    position_lower: np.ndarray
    position_upper: np.ndarray
    velocity_limit: np.ndarray
    acceleration_limit: np.ndarray
    gripper_closed_m: float
    gripper_open_m: float
    home: np.ndarray
    cameras: dict[str, CameraSpec]
    ros: dict[str, Any]
    sim: dict[str, Any] | None = None
    source: str = field(default="<memory>", compare=False)

    def __eq__(self, other: object) -> bool:
        # The generated __eq__ compares tuples of numpy arrays and raises; compare arrays by value.
        if not isinstance(other, Embodiment):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.compare and not (np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b):
                return False
        return True

    @property
    def dt(self) -> float:
        return 1.0 / self.control_rate_hz

    def gripper_to_metres(self, normalised: np.ndarray | float) -> np.ndarray:
        return self.gripper_closed_m + np.asarray(normalised) * (self.gripper_open_m - self.gripper_closed_m)

    def gripper_from_metres(self, metres: np.ndarray | float) -> np.ndarray:
        return (np.asarray(metres) - self.gripper_closed_m) / (self.gripper_open_m - self.gripper_closed_m)

    def within_position_limits(self, action: np.ndarray, tol: float = 1e-6) -> np.ndarray:
        a = np.asarray(action)
        return np.all((a >= self.position_lower - tol) & (a <= self.position_upper + tol), axis=-1)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<memory>") -> "Embodiment":
        def fail(fieldname: str, msg: str) -> None:
            raise ValueError(f"{source}: field '{fieldname}': {msg}")

        required = ["name", "robot_type", "control_rate_hz", "joint_names", "position_lower", "position_upper",
                    "velocity_limit", "acceleration_limit", "gripper_closed_m", "gripper_open_m", "home",
                    "cameras", "ros"]
        for key in required:
            if key not in d:
                fail(key, "missing")
        vectors = {}
        for key in ["position_lower", "position_upper", "velocity_limit", "acceleration_limit", "home"]:
            v = np.asarray(d[key], dtype=np.float64)
            if v.shape != (ACTION_DIM,):
                fail(key, f"expected {ACTION_DIM} values, got shape {v.shape}")
            if not np.all(np.isfinite(v)):
                fail(key, f"non-finite value in {v.tolist()}")
            vectors[key] = v
        if len(d["joint_names"]) != ACTION_DIM:
            fail("joint_names", f"expected {ACTION_DIM} names, got {len(d['joint_names'])}")
        bad = np.nonzero(vectors["position_lower"] >= vectors["position_upper"])[0]
        if bad.size:
            fail("position_lower", f"not below position_upper at indices {bad.tolist()}")
        for key in ["velocity_limit", "acceleration_limit"]:
            if np.any(vectors[key] <= 0):
                fail(key, f"limits must be positive, got {vectors[key].tolist()}")
        if float(d["control_rate_hz"]) <= 0:
            fail("control_rate_hz", f"must be positive, got {d['control_rate_hz']}")
        if not np.all(
            (vectors["home"] >= vectors["position_lower"]) & (vectors["home"] <= vectors["position_upper"])
        ):
            fail("home", "outside the position limits")
        cams = d["cameras"]
        if set(cams) != set(CAMERAS):
            fail("cameras", f"expected camera roles {list(CAMERAS)}, got {sorted(cams)}")
        for arm in ARMS:
            for key in ("state_topics", "command_topics"):
                if arm not in d["ros"].get(key, {}):
                    fail(f"ros.{key}", f"missing arm '{arm}'")
        return cls(
            name=str(d["name"]),
            robot_type=str(d["robot_type"]),
            control_rate_hz=float(d["control_rate_hz"]),
            joint_names=tuple(d["joint_names"]),
            gripper_closed_m=float(d["gripper_closed_m"]),
            gripper_open_m=float(d["gripper_open_m"]),
            cameras={k: CameraSpec(sim=v.get("sim"), ros_topic=v["ros_topic"]) for k, v in cams.items()},
            ros=dict(d["ros"]),
            sim=d.get("sim"),
            source=source,
            **vectors,
        )


def load_embodiment(name_or_path: str | Path) -> Embodiment:
    """Load an embodiment by name (``configs/embodiment/<name>.yaml``) or by file path."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = EMBODIMENT_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ValueError(f"unknown embodiment '{name_or_path}'; known: {', '.join(known_embodiments())}")
    with open(path) as f:
        data = yaml.safe_load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return Embodiment.from_dict(data, source=str(path))
