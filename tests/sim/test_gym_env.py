import gymnasium as gym
import numpy as np

import sim.gym_env  # noqa: F401 - registers gym_eva/*
from configs.schema import RenderConfig
from sim.tasks import TASKS


def test_registered_ids():
    for task in TASKS:
        assert sim.gym_env.env_id(task) in gym.registry
    assert "gym_eva/TransferCube-v0" in gym.registry


def test_step_api_and_success_with_expert():
    env = gym.make("gym_eva/LiftBar-v0", render=RenderConfig(height=64, width=64, cameras=["cam_high"]))
    obs, info = env.reset(seed=100000)
    assert obs["agent_pos"].shape == (14,)
    assert obs["pixels"]["cam_high"].shape == (64, 64, 3) and obs["pixels"]["cam_high"].dtype == np.uint8
    assert info["is_success"] is False and isinstance(info["instruction"], str)
    task = env.unwrapped.task
    plan = task.expert_actions()
    terminated = False
    for a in plan:
        obs, reward, terminated, truncated, info = env.step(a)
        if terminated:
            break
    assert terminated and reward == 1.0 and info["is_success"]
    env.close()
