"""Episode loops shared by collection, evaluation and the benchmarks (run in worker processes)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from configs.constants import ACTION_DIM
from configs.embodiment import Embodiment
from configs.schema import RenderConfig, TaskConfig
from sim.tasks import BimanualTask, make_task


class TaskCache:
    """One task instance per (task, instruction split) in a process: models compile once."""

    def __init__(self, tasks: dict[str, TaskConfig], embodiment: Embodiment, render: RenderConfig | None):
        self.tasks, self.embodiment, self.render = tasks, embodiment, render
        self._envs: dict[tuple[str, str], BimanualTask] = {}

    def get(self, task: str, split: str = "train") -> BimanualTask:
        if task not in self.tasks:
            raise ValueError(f"unknown task '{task}'; configured: {sorted(self.tasks)}")
        key = (task, split)
        if key not in self._envs:
            self._envs[key] = make_task(self.tasks[task], self.embodiment, self.render, split)
        return self._envs[key]

    def close(self) -> None:
        for env in self._envs.values():
            env.close_env()
        self._envs.clear()


def expert_solves(env: BimanualTask, seed: int) -> bool:
    """RoboTwin keeps a seed only if its scripted expert solves it (no rendering needed)."""
    env.setup_demo(seed=seed)
    env.play_once()
    return env.check_success()


def solvable_seeds(env: BimanualTask, first_seed: int, needed: int, max_tries: int | None = None) -> list[int]:
    """The first ``needed`` seeds from ``first_seed`` on that the scripted expert solves (RoboTwin's protocol),
    searched in this process; raises after ``max_tries`` (default 10 x needed) seeds."""
    max_tries = 10 * needed if max_tries is None else max_tries
    seeds = []
    for seed in range(first_seed, first_seed + max_tries):
        if len(seeds) == needed:
            break
        if expert_solves(env, seed):
            seeds.append(seed)
    if len(seeds) < needed:
        raise RuntimeError(f"task '{env.cfg.name}': only {len(seeds)} of {needed} seeds solved by the expert in "
                           f"{max_tries} tries from {first_seed}")
    return seeds


@dataclass
class RecordedEpisode:
    states: np.ndarray
    actions: np.ndarray
    frames: dict[str, np.ndarray]
    instruction: str
    success: bool
    steps: int
    failure_reason: str | None = None
    rewards: list[float] = field(default_factory=list)


def record_expert(env: BimanualTask, seed: int) -> RecordedEpisode:
    """Run the scripted expert and record state, action and every camera before each action."""
    env.setup_demo(seed=seed)
    actions = env.expert_actions()
    states = np.empty_like(actions)
    frames = {cam: np.empty((len(actions), env.render_cfg.height, env.render_cfg.width, 3), np.uint8)
              for cam in env.camera_ids}
    for t, a in enumerate(actions):
        obs = env.get_obs()
        states[t] = obs["joint_action"]["vector"]
        for cam in frames:
            frames[cam][t] = obs["observation"][cam]["rgb"]
        env.take_action(a)
    return RecordedEpisode(states=states, actions=actions, frames=frames, instruction=env.get_instruction(),
                           success=env.check_success(), steps=len(actions))


def query_policy(policy, obs: dict, where: str) -> tuple[np.ndarray | None, str | None]:
    """``policy.select_action(obs)`` -> (action (14,) float64, None), or (None, reason) when the policy raised
    or returned a wrong shape or non-finite values: such an episode fails with the reason, the run goes on."""
    try:
        action = np.asarray(policy.select_action(obs), dtype=np.float64)
    except Exception as e:  # noqa: BLE001 - any policy error fails the episode, not the run
        return None, f"{where}: policy raised {type(e).__name__}: {e}"
    if action.shape != (ACTION_DIM,):
        return None, f"{where}: policy returned an action of shape {action.shape}, expected ({ACTION_DIM},)"
    if not np.all(np.isfinite(action)):
        return None, f"{where}: policy returned non-finite values at indices {np.flatnonzero(~np.isfinite(action)).tolist()}"
    return action, None


def run_policy(env: BimanualTask, policy, seed: int, record_cameras: list[str] | None = None,
               record_every: int = 1) -> RecordedEpisode:
    """Closed loop until success or the task's step limit. A policy that raises or returns a
    bad action ends the episode as failed, with the reason."""
    env.setup_demo(seed=seed)
    policy.reset()
    frames: dict[str, list[np.ndarray]] = {c: [] for c in record_cameras or []}
    states, actions, rewards = [], [], []
    success, reason = False, None
    for t in range(env.step_lim):
        obs = env.get_obs()
        if t % record_every == 0:
            for cam in frames:
                frames[cam].append(obs["observation"][cam]["rgb"])
        action, reason = query_policy(policy, obs, f"step {t}")
        if action is None:
            break
        states.append(obs["joint_action"]["vector"])
        actions.append(action)
        env.take_action(action)
        success = env.check_success()
        rewards.append(float(success))
        if success:
            break
    if not success and reason is None:
        reason = f"step limit {env.step_lim} reached"
    for cam in frames:  # last observed frame
        frames[cam].append(env.render(cam))
    return RecordedEpisode(
        states=np.array(states).reshape(-1, ACTION_DIM), actions=np.array(actions).reshape(-1, ACTION_DIM),
        frames={c: np.stack(v) for c, v in frames.items()}, instruction=env.get_instruction(), success=success,
        steps=len(actions), failure_reason=None if success else reason, rewards=rewards)


def execute_open_loop(env, seed: int, actions: np.ndarray, hold_steps: int) -> tuple[bool, int]:
    """Execute (T, 14) control-rate actions from ``seed``; success at any step, as in eva-eval."""
    env.setup_demo(seed=seed)
    plan = np.concatenate([actions, np.repeat(actions[-1:], hold_steps, axis=0)])
    for t, a in enumerate(plan):
        env.take_action(a)
        if env.check_success():
            return True, t + 1
    return False, len(plan)
