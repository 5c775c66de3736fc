"""Gymnasium wrapper of the MuJoCo tasks, registered as ``gym_eva/<Task>-v0``.

Observation ``{"pixels": {camera: HxWx3 uint8}, "agent_pos": (14,)}`` (gym-aloha's layout),
action: 14-D joint targets, reward 1 on success, ``info["is_success"]``; an episode
terminates on success and truncates at the task's step limit.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from configs import load_task_config
from configs.constants import ACTION_DIM
from configs.embodiment import load_embodiment
from configs.schema import RenderConfig
from sim.tasks import TASKS, make_task

ENV_NAMESPACE = "gym_eva"


def env_id(task: str) -> str:
    return f"{ENV_NAMESPACE}/{''.join(p.capitalize() for p in task.split('_'))}-v0"


class BimanualEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}

    def __init__(self, task: str, embodiment: str = "aloha_viperx", render: RenderConfig | None = None,
                 instruction_split: str = "train", render_mode: str | None = "rgb_array"):
        self.task = make_task(load_task_config(task), load_embodiment(embodiment), render, instruction_split)
        self.render_mode = render_mode
        emb = self.task.embodiment
        h, w = self.task.render_cfg.height, self.task.render_cfg.width
        self.observation_space = spaces.Dict({
            "pixels": spaces.Dict({c: spaces.Box(0, 255, (h, w, 3), np.uint8) for c in self.task.camera_ids}),
            "agent_pos": spaces.Box(-np.inf, np.inf, (ACTION_DIM,), np.float64),
        })
        self.action_space = spaces.Box(emb.position_lower, emb.position_upper, (ACTION_DIM,), np.float64)
        self.metadata = {**self.metadata, "render_fps": emb.control_rate_hz}

    def _obs(self) -> dict:
        obs = self.task.get_obs()
        return {"pixels": {c: v["rgb"] for c, v in obs["observation"].items()},
                "agent_pos": obs["joint_action"]["vector"]}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(2**31))
        self.task.setup_demo(seed=seed)
        return self._obs(), {"is_success": False, "instruction": self.task.get_instruction()}

    def step(self, action):
        self.task.take_action(np.asarray(action, dtype=np.float64))
        success = self.task.check_success()
        truncated = not success and self.task.take_action_cnt >= self.task.step_lim
        return self._obs(), float(success), success, truncated, {"is_success": success}

    def render(self):
        return self.task.render(next(iter(self.task.camera_ids)))

    def close(self):
        self.task.close_env()


def register_envs() -> list[str]:
    ids = []
    for task in TASKS:
        eid = env_id(task)
        if eid not in gym.registry:
            gym.register(id=eid, entry_point="sim.gym_env:BimanualEnv", kwargs={"task": task})
        ids.append(eid)
    return ids


register_envs()
