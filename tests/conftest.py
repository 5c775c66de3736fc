"""Shared fixtures: the embodiment, small render settings and one tiny dataset per session.

Headless MuJoCo rendering needs ``MUJOCO_GL`` before ``mujoco`` is imported, so it is set
here at import time (the Makefile sets the same).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

import configs  # noqa: E402
from configs.embodiment import Embodiment, load_embodiment  # noqa: E402
from configs.schema import CollectConfig, RenderConfig, validate  # noqa: E402

# Small and fast: one 64x64 camera. Tests that need all cameras ask for them.
SMALL_RENDER = {"height": 64, "width": 64, "cameras": ["cam_high"]}
TINY_EPISODES_PER_TASK = 1


@pytest.fixture(scope="session")
def embodiment() -> Embodiment:
    return load_embodiment("aloha_viperx")


@pytest.fixture(scope="session")
def small_render() -> RenderConfig:
    return RenderConfig(**SMALL_RENDER)


def tiny_collect_config(root: Path, *, episodes: int, tasks: list[str] | None = None, workers: int = 1,
                        cameras: list[str] | None = None) -> CollectConfig:
    """A collect config composed through Hydra (as ``eva-collect`` does) with tiny settings."""
    cams = cameras or SMALL_RENDER["cameras"]
    overrides = [
        f"dataset.root={root}",
        f"dataset.episodes_per_task={episodes}",
        f"render.height={SMALL_RENDER['height']}",
        f"render.width={SMALL_RENDER['width']}",
        f"render.cameras=[{','.join(cams)}]",
        f"workers={workers}",
    ]
    if tasks is not None:
        overrides.append(f"task=[{','.join(tasks)}]")
    return validate(configs.compose("collect", overrides), CollectConfig)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """One collected episode per task (all three tasks), written once per session."""
    from sim.collect import collect

    root = tmp_path_factory.mktemp("tiny") / "dataset"
    cfg = tiny_collect_config(root, episodes=TINY_EPISODES_PER_TASK, workers=1)
    return collect(cfg)


@pytest.fixture(scope="session")
def lift_dataset(tmp_path_factory):
    """A two-episode lift_bar dataset (64x64 head camera) for the world-model and post-training tests."""
    from sim.collect import collect

    root = tmp_path_factory.mktemp("wm") / "dataset"
    return collect(tiny_collect_config(root, episodes=2, tasks=["lift_bar"], workers=1))


def tiny_idm(path: Path, size: int = 64) -> Path:
    """A random IDM at the tiny world model's resolution and frame rate, saved in the real format."""
    from idm.model import InverseDynamicsModel

    model = InverseDynamicsModel(image_size=(size, size), channels=(8, 16), num_keypoints=4, mlp_hidden=16,
                                 context_k=1, joint_names=tuple(load_embodiment("aloha_viperx").joint_names))
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_world_model(lift_dataset, tmp_path_factory) -> Path:
    """The tiny world model (64x64, 4 future frames) after one SFT step, saved in the real format."""
    from tests.world_model.conftest import wm_train_config
    from world_model.train import train

    return train(wm_train_config(lift_dataset, tmp_path_factory.mktemp("tiny_wm") / "run", "max_steps=1"))
