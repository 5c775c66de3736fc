"""Policies for evaluation: any object with ``reset()`` and ``select_action(obs) -> (14,)``.

Built-ins: the scripted expert (privileged: it plans from the simulator state), a noisy
expert (the expert plus a temporally correlated AR(1) perturbation, so that failure rates
span a wide range with the noise level), replay of a dataset's actions for the same task
and seed, the receding-horizon ``planner`` (world model + IDM behind the safety filter, on
sim time), and ``import`` of any class by ``module:Class``.
"""

from __future__ import annotations

import dataclasses
import importlib

import numpy as np

from configs.constants import ACTION_DIM, GRIPPER_INDICES, PLANNER_POLICIES
from configs.schema import PlannerConfig, PolicyConfig
from sim.dataset import LeRobotDataset
from sim.tasks import BimanualTask


class ScriptedExpertPolicy:
    def __init__(self, env: BimanualTask):
        self.env = env
        self.plan = np.zeros((0, ACTION_DIM))
        self.t = 0

    def reset(self) -> None:
        self.plan = self.env.expert_actions()
        self.t = 0

    def select_action(self, obs: dict) -> np.ndarray:
        a = self.plan[min(self.t, len(self.plan) - 1)]
        self.t += 1
        return a.copy()


class NoisyExpertPolicy(ScriptedExpertPolicy):
    """Expert + AR(1) noise: n_t = rho n_{t-1} + sqrt(1 - rho^2) sigma eps (stationary std sigma).
    Gripper noise is scaled by 1/pi (a normalised unit is not a radian). Seeded by the episode seed."""

    def __init__(self, env: BimanualTask, noise_level: float, correlation: float):
        super().__init__(env)
        self.sigma, self.rho = noise_level, correlation
        self.scale = np.ones(ACTION_DIM)
        self.scale[list(GRIPPER_INDICES)] = 1.0 / np.pi
        self.noise = np.zeros(ACTION_DIM)
        self.rng = np.random.default_rng(0)

    def reset(self) -> None:
        super().reset()
        self.rng = np.random.default_rng([self.env.seed or 0, 7])
        self.noise = self.rng.normal(size=ACTION_DIM) * self.sigma

    def select_action(self, obs: dict) -> np.ndarray:
        a = super().select_action(obs)
        eps = self.rng.normal(size=ACTION_DIM)
        self.noise = self.rho * self.noise + np.sqrt(1 - self.rho**2) * self.sigma * eps
        out = a + self.noise * self.scale
        lo, hi = self.env.embodiment.position_lower, self.env.embodiment.position_upper
        return np.clip(out, lo, hi)


class ReplayPolicy:
    """Replays the actions of the dataset episode recorded for the same task and seed."""

    def __init__(self, env: BimanualTask, dataset_root: str):
        self.env = env
        self.ds = LeRobotDataset(dataset_root, expected_embodiment=env.embodiment.name,
                                 expected_fps=int(env.embodiment.control_rate_hz))
        self.by_seed = {(e.get("eva/task"), e.get("eva/seed")): e["episode_index"] for e in self.ds.episodes}
        self.actions = np.zeros((0, ACTION_DIM))
        self.t = 0

    def reset(self) -> None:
        key = (self.env.name, self.env.seed)
        if key not in self.by_seed:
            raise KeyError(f"dataset {self.ds.root} has no episode for task '{key[0]}' seed {key[1]}")
        self.actions = self.ds.episode_table(self.by_seed[key])["action"].astype(np.float64)
        self.t = 0

    def select_action(self, obs: dict) -> np.ndarray:
        a = self.actions[min(self.t, len(self.actions) - 1)]
        self.t += 1
        return a


class PlannerPolicy:
    """``real_robot.planner.Planner`` in the simulator: sim time (control steps since ``reset`` x dt) is the
    clock, the planner's camera frame and the joint state are stamped with it, and the policy executes what
    the safety filter returns (the current joint state when it has no command). It counts its own steps, so
    it runs unchanged in MuJoCo and in the neural simulator (``sim.neural_env``).

    ``lookahead=True`` (``policy=planner_lookahead``, MuJoCo only) replaces the world model with
    ``sim.lookahead.ExpertLookahead``: the planner with a perfect world model."""

    def __init__(self, env: BimanualTask, cfg: PlannerConfig, lookahead: bool = False):
        from real_robot.planner import Planner  # torch and diffusers only for this policy

        if cfg.camera not in env.camera_ids:
            raise ValueError(f"planner camera '{cfg.camera}' is not rendered; render.cameras = {list(env.camera_ids)}")
        self.env = env
        self.lookahead = None
        if lookahead:
            from idm.model import InverseDynamicsModel
            from sim.lookahead import ExpertLookahead

            idm = InverseDynamicsModel.from_pretrained(cfg.idm, embodiment=env.embodiment)
            self.lookahead = ExpertLookahead(env, cfg.camera, idm.config.fps, idm.config.image_size)
            self.planner = Planner(self.lookahead, idm, env.embodiment, cfg)
        else:
            self.planner = Planner.from_config(cfg, env.embodiment)
        size, wm_size = [env.render_cfg.height, env.render_cfg.width], list(self.planner.pipe.config.image_size)
        if size != wm_size:
            raise ValueError(f"render size {size} differs from the world model's {wm_size}")
        self.planner.warmup()
        self.t = 0

    def reset(self) -> None:
        if self.lookahead is not None:
            self.lookahead.reset()
        self.planner.reset(self.env.get_instruction())
        self.t = 0

    def select_action(self, obs: dict) -> np.ndarray:
        now = self.t * self.env.embodiment.dt
        self.t += 1
        camera = self.planner.cfg.camera
        self.planner.observe({camera: obs["observation"][camera]["rgb"]}, now)
        state = np.asarray(obs["joint_action"]["vector"], dtype=np.float64)
        command = self.planner.step(state, now)
        return state.copy() if command.position is None else command.position

    @property
    def timings(self) -> list[dict]:
        """One record of stage times per plan (``real_robot.planner.Planner.timings``)."""
        return self.planner.timings

    def latency_summary(self) -> dict[str, dict[str, float]]:
        """Median and p95 seconds of each planning stage (history, world_model, idm, total)."""
        return self.planner.latency_summary()


def import_object(target: str):
    """``package.module:Name`` -> the object."""
    if ":" not in target:
        raise ValueError(f"policy.target must look like 'package.module:Class', got '{target}'")
    module, name = target.split(":", 1)
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"policy.target '{target}' cannot be imported: {e}") from e


def make_policy(cfg: PolicyConfig, env: BimanualTask):
    if cfg.kind == "expert":
        return ScriptedExpertPolicy(env)
    if cfg.kind == "noisy_expert":
        return NoisyExpertPolicy(env, cfg.noise_level, cfg.noise_correlation)
    if cfg.kind == "replay":
        return ReplayPolicy(env, cfg.dataset_root)
    if cfg.kind in PLANNER_POLICIES:
        return PlannerPolicy(env, cfg.planner, lookahead=cfg.kind == "planner_lookahead")
    cls = import_object(cfg.target)
    policy = cls(**cfg.kwargs)
    for method in ("reset", "select_action"):
        if not callable(getattr(policy, method, None)):
            raise TypeError(f"policy {cfg.target} has no method {method}()")
    return policy


def policy_settings(cfg: PolicyConfig) -> dict:
    """The settings that decide what a policy does, for the settings digests of campaign and MPC records: the
    planner section only for ``kind: planner`` (a new planner field must not invalidate noisy-expert records)."""
    settings = dataclasses.asdict(cfg)
    if cfg.kind not in PLANNER_POLICIES:
        settings.pop("planner")
    return settings


def policy_label(cfg: PolicyConfig) -> str:
    if cfg.name:
        return cfg.name
    if cfg.kind == "noisy_expert":
        return f"noisy_expert(sigma={cfg.noise_level:g})"
    if cfg.kind == "import":
        return cfg.target
    return cfg.kind
