"""eva-mpc: model-predictive control with the action-conditioned world model, evaluated in MuJoCo.

    eva-mpc checkpoint=runs/wm/model episodes_per_task=10

Every ``chunk_frames x (control rate / fps)`` control steps, a base policy proposes the next chunk of
actions; the controller imagines candidate chunks with the world model from the last H camera frames (the
history and the instruction encoded once, all candidates in one batch, the same noise for every candidate:
common random numbers), scores them, executes the best one in MuJoCo, and replans (receding horizon).

Candidates are the proposal plus an offset drawn at every imagined frame and interpolated linearly in
between (zero at the first control step, so a chunk starts where the robot is), clipped to the joint
limits. Controllers, compared on the same seeds:

- ``base``: the proposal as it is (the policy MPC starts from);
- ``random_shooting``: ``candidates x iterations`` offsets from N(0, noise_std), the best one (the proposal
  itself is one of them);
- ``cem``: the cross-entropy method, ``iterations`` rounds of ``candidates`` offsets (the current mean is one),
  refitting a diagonal Gaussian to the ``elites`` best; the best chunk seen is executed.
- ``mppi``: model-predictive path integral control (Williams et al., 2017), ``iterations`` rounds of
  ``candidates`` offsets around the current mean (which is one of them) with a fixed ``noise_std``; the mean
  moves to the candidates' average weighted by ``softmin(cost / (temperature * cost range))``. The final mean
  is executed, after one more model call that scores it.

Costs: ``goal`` (distance of the last imagined frame to a goal image: the scripted expert's demonstration of
the same seed at the end of the horizon, ``subgoal``, or its last frame, ``final``; in the world model's latent
space or LPIPS) or ``judge`` (minus the highest success probability of the imagined chunk, ``sim.judge``).

Episodes are recorded in ``<output_dir>/episodes.jsonl`` as they finish (a rerun resumes); ``mpc.json`` and
``report.md`` hold success per controller and task with Wilson intervals, and planning time per chunk.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from tqdm import tqdm  # noqa: E402

from configs.constants import ACTION_DIM, EPISODES_FILE, GRIPPER_INDICES, robotwin_start_seed  # noqa: E402
from configs.embodiment import Embodiment  # noqa: E402
from configs.run_files import atomic_write_json, atomic_write_text, save_resolved_config  # noqa: E402
from configs.schema import MPCConfig, validate  # noqa: E402
from sim.neural_env import frame_rate_actions  # noqa: E402
from sim.policies import make_policy, policy_settings  # noqa: E402
from sim.records import RecordLog, load_records, settings_digest  # noqa: E402
from sim.rollout import TaskCache, query_policy, solvable_seeds  # noqa: E402
from sim.stats import wilson_interval  # noqa: E402

log = logging.getLogger(__name__)

RECORD_KEY = ("controller", "task", "seed")


class ChunkMPC:
    def __init__(self, pipe, cfg: MPCConfig, embodiment: Embodiment, judge=None):
        self.pipe, self.cfg, self.judge = pipe, cfg, judge
        fps = pipe.config.fps
        if embodiment.control_rate_hz % fps:
            raise ValueError(f"the world model's {fps} fps does not divide the control rate {embodiment.control_rate_hz} Hz")
        self.every = int(embodiment.control_rate_hz // fps)
        self.frames = cfg.imagination.chunk_frames
        self.steps = self.frames * self.every  # control steps per chunk
        knots = np.minimum(np.arange(self.frames + 1) * self.every, self.steps - 1)
        eye = np.eye(self.frames + 1)
        # (steps, frames + 1): control-step offsets as linear interpolation of the offsets at the frames
        self.interp = np.stack([np.interp(np.arange(self.steps), knots, eye[j]) for j in range(self.frames + 1)], 1)
        self.scale = np.ones(ACTION_DIM)
        self.scale[list(GRIPPER_INDICES)] = 1.0 / np.pi
        self.lower, self.upper = embodiment.position_lower, embodiment.position_upper
        self.lpips = None
        if cfg.cost == "goal" and cfg.goal_metric == "lpips":
            from world_model.metrics import lpips_model

            self.lpips = lpips_model(cfg.imagination.device)
        if cfg.cost == "judge" and judge is None:
            raise ValueError("cost=judge needs a success judge")

    def chunks(self, proposal: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """proposal (steps, 14) + offsets at the imagined frames (C, frames, 14) -> clipped chunks (C, steps, 14)."""
        knots = np.concatenate([np.zeros((len(offsets), 1, ACTION_DIM)), offsets], axis=1)
        control = np.einsum("sk,ckd->csd", self.interp, knots) * self.scale
        return np.clip(proposal[None] + control, self.lower, self.upper)

    @torch.no_grad()
    def imagine(self, history: np.ndarray, history_actions: np.ndarray, instruction: str, chunks: np.ndarray,
                seed: int) -> torch.Tensor:
        """History (H, h, w, 3) uint8 with its actions (H, 14), candidate chunks (C, steps, 14) ->
        imagined frames (C, frames, 3, h, w) float in [0, 1]."""
        c = len(chunks)
        cond = frame_rate_actions(np.repeat(history_actions[None], c, axis=0), chunks, self.every, self.frames)
        device = torch.device(self.cfg.imagination.device)
        hist = torch.from_numpy(np.ascontiguousarray(history.transpose(0, 3, 1, 2)))[None]
        inputs = self.pipe.prepare_candidates(hist, instruction, torch.from_numpy(cond).to(device),
                                              num_frames=self.frames, seed=seed)
        return self.pipe.denoise(inputs, **self.cfg.imagination.sampling_kwargs()).float()

    @torch.no_grad()
    def cost(self, frames: torch.Tensor, task: str, goal: np.ndarray | None) -> np.ndarray:
        """Imagined chunks (C, frames, 3, h, w) -> (C,) costs, lower is better."""
        if self.cfg.cost == "judge":
            c, n = frames.shape[:2]
            probs = self.judge.predict(frames.flatten(0, 1).cpu(), [task] * (c * n)).reshape(c, n)
            return -probs.max(axis=1)
        target = torch.from_numpy(np.ascontiguousarray(goal.transpose(2, 0, 1))).float().div(255.0).to(frames.device)
        last = frames[:, -1]
        if self.lpips is not None:
            return self.lpips(last, target.expand_as(last)).float().cpu().numpy().reshape(-1)
        from world_model.latents import encode_video

        z = encode_video(self.pipe.vae, last[:, None])
        z_goal = encode_video(self.pipe.vae, target[None, None])
        return (z - z_goal).pow(2).flatten(1).mean(1).float().cpu().numpy()

    def evaluate(self, offsets: np.ndarray, proposal, history, history_actions, instruction, task, goal, seed):
        chunks = self.chunks(proposal, offsets)
        costs = np.concatenate([
            self.cost(self.imagine(history, history_actions, instruction, chunks[i:i + self.cfg.candidates], seed),
                      task, goal) for i in range(0, len(chunks), self.cfg.candidates)])
        return chunks, costs

    def plan(self, controller: str, proposal: np.ndarray, history: np.ndarray, history_actions: np.ndarray,
             instruction: str, task: str, goal: np.ndarray | None, seed: int, rng: np.random.Generator
             ) -> tuple[np.ndarray, dict[str, float]]:
        """The chunk to execute (steps, 14) and the costs of the proposal and of the chosen chunk."""
        if controller == "base":
            return proposal, {}
        cfg, shape = self.cfg, (self.frames, ACTION_DIM)
        args = (proposal, history, history_actions, instruction, task, goal, seed)
        if controller == "random_shooting":
            offsets = rng.normal(0.0, cfg.noise_std, (cfg.candidates * cfg.iterations, *shape))
            offsets[0] = 0.0  # the proposal itself
            chunks, costs = self.evaluate(offsets, *args)
            best = int(np.argmin(costs))
            return chunks[best], {"cost_proposal": float(costs[0]), "cost_chosen": float(costs[best])}
        if controller == "mppi":
            return self.mppi(shape, args, rng)
        mean, std = np.zeros(shape), np.full(shape, cfg.noise_std)
        best_chunk, best_cost, proposal_cost = proposal, np.inf, None
        for it in range(cfg.iterations):
            offsets = mean + std * rng.normal(size=(cfg.candidates, *shape))
            offsets[0] = mean  # the current mean (the proposal itself in the first round)
            chunks, costs = self.evaluate(offsets, *args)
            if it == 0:
                proposal_cost = float(costs[0])
            order = np.argsort(costs)
            if costs[order[0]] < best_cost:
                best_chunk, best_cost = chunks[order[0]], float(costs[order[0]])
            elites = offsets[order[:cfg.elites]]
            mean, std = elites.mean(axis=0), np.maximum(elites.std(axis=0), cfg.min_std)
        return best_chunk, {"cost_proposal": proposal_cost, "cost_chosen": best_cost}

    def mppi(self, shape: tuple[int, int], args: tuple, rng: np.random.Generator
             ) -> tuple[np.ndarray, dict[str, float]]:
        cfg = self.cfg
        mean, proposal_cost = np.zeros(shape), None
        for it in range(cfg.iterations):
            offsets = mean + cfg.noise_std * rng.normal(size=(cfg.candidates, *shape))
            offsets[0] = mean
            _, costs = self.evaluate(offsets, *args)
            if it == 0:
                proposal_cost = float(costs[0])
            span = max(float(costs.max() - costs.min()), 1e-12)
            weights = np.exp(-(costs - costs.min()) / (cfg.temperature * span))
            mean = np.einsum("c,cfd->fd", weights / weights.sum(), offsets)
        chunks, costs = self.evaluate(mean[None], *args)
        return chunks[0], {"cost_proposal": proposal_cost, "cost_chosen": float(costs[0])}


def expert_frames(env, seed: int, camera: str, every: int) -> np.ndarray:
    """The scripted expert's demonstration of ``seed``: frames of ``camera`` every ``every`` control steps and
    the last one (T, h, w, 3) uint8: the goal images of MPC."""
    env.setup_demo(seed=seed)
    frames = []
    for t, a in enumerate(env.expert_actions()):
        if t % every == 0:
            frames.append(env.render(camera))
        env.take_action(a)
    frames.append(env.render(camera))
    return np.stack(frames)


def mpc_episode(env, mpc: ChunkMPC, controller: str, policy, seed: int, camera: str) -> dict[str, Any]:
    """One MuJoCo episode under ``controller``; success at any step, as in eva-eval."""
    cfg = mpc.cfg
    goals = expert_frames(env, seed, camera, mpc.every) if controller != "base" and cfg.cost == "goal" else None
    env.setup_demo(seed=seed)
    policy.reset()
    obs = env.get_obs()
    h = mpc.pipe.config.num_history_frames
    history = [obs["observation"][camera]["rgb"]] * h
    history_actions = [np.asarray(obs["joint_action"]["vector"], dtype=np.float64)] * h
    instruction, rng = env.get_instruction(), np.random.default_rng([seed, 11])
    t, success, reason, plans, plan_s, improvements = 0, False, None, 0, [], []
    while t < env.step_lim and not success and reason is None:
        proposal = []
        for k in range(mpc.steps):
            a, reason = query_policy(policy, obs, f"step {t + k}")
            if a is None:
                break
            proposal.append(a)
        if reason is not None:
            break
        goal = None
        if goals is not None:  # the demonstration's frame at the end of this chunk, or its last frame
            goal = goals[min((t + mpc.steps) // mpc.every, len(goals) - 1)] if cfg.goal == "subgoal" else goals[-1]
        start = time.perf_counter()
        chunk, info = mpc.plan(controller, np.stack(proposal), np.stack(history[-h:]), np.stack(history_actions[-h:]),
                               instruction, env.name, goal, seed=1000 * seed + plans, rng=rng)
        plan_s.append(time.perf_counter() - start)
        if info:
            improvements.append(info["cost_proposal"] - info["cost_chosen"])
        plans += 1
        history_actions[-1] = chunk[0]
        for k, a in enumerate(chunk):
            if k > 0 and k % mpc.every == 0:
                history.append(env.render(camera))
                history_actions.append(a)
            env.take_action(a)
            t += 1
            success = env.check_success()
            if success or t >= env.step_lim:
                break
        if not success and t < env.step_lim:
            obs = env.get_obs()
            history.append(obs["observation"][camera]["rgb"])
            history_actions.append(chunk[-1])
            history, history_actions = history[-h:], history_actions[-h:]
    if not success and reason is None:
        reason = f"step limit {env.step_lim} reached"
    return {"controller": controller, "task": env.name, "seed": seed, "success": bool(success), "steps": t,
            "plans": plans, "failure_reason": None if success else reason,
            "plan_s_mean": float(np.mean(plan_s)) if plan_s else 0.0,
            "cost_improvement_mean": float(np.mean(improvements)) if improvements else None}


def episode_settings(cfg: MPCConfig, controller: str, task: str) -> str:
    """Digest of what decides an episode: the base policy, the task and rendering and, unless the controller
    is ``base``, the world model, the cost and the settings that controller's optimiser reads (not the batch
    size): ``elites`` and ``min_std`` only for CEM, ``temperature`` only for MPPI."""
    settings: dict[str, Any] = {"controller": controller, "base_policy": policy_settings(cfg.base_policy),
                                "task": dataclasses.asdict(cfg.tasks[task]), "render": dataclasses.asdict(cfg.render)}
    if controller != "base":
        im = {k: v for k, v in dataclasses.asdict(cfg.imagination).items() if k != "batch_size"}
        settings.update(checkpoint=cfg.checkpoint, cost=cfg.cost, goal=cfg.goal, goal_metric=cfg.goal_metric,
                        judge=cfg.judge if cfg.cost == "judge" else None, candidates=cfg.candidates,
                        iterations=cfg.iterations, noise_std=cfg.noise_std, imagination=im)
    if controller == "cem":
        settings.update(elites=cfg.elites, min_std=cfg.min_std)
    if controller == "mppi":
        settings["temperature"] = cfg.temperature
    return settings_digest(settings)


def summarize(cfg: MPCConfig, seeds: dict[str, list[int]], records: dict[tuple, dict]) -> dict[str, Any]:
    """Success per controller and task over this run's seeds and settings."""
    out: dict[str, Any] = {}
    for controller in cfg.controllers:
        for task in cfg.tasks:
            digest = episode_settings(cfg, controller, task)
            eps = [r for (c, t, s), r in records.items()
                   if (c, t) == (controller, task) and s in seeds[task] and r.get("settings") == digest]
            k, n = sum(r["success"] for r in eps), len(eps)
            gains = [r["cost_improvement_mean"] for r in eps if r["cost_improvement_mean"] is not None]
            out.setdefault(controller, {})[task] = {
                "successes": k, "episodes": n, "rate": k / n if n else float("nan"), "ci95": list(wilson_interval(k, n)),
                "plan_s_mean": float(np.mean([r["plan_s_mean"] for r in eps])) if eps else float("nan"),
                "cost_improvement_mean": float(np.mean(gains)) if gains else None}
    return out


def write_report(cfg: MPCConfig, summary: dict[str, Any], out: Path) -> None:
    tasks, controllers = list(cfg.tasks), list(cfg.controllers)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(tasks), 3.5))
    width = 0.8 / len(controllers)
    for i, c in enumerate(controllers):
        rates = np.array([summary[c][t]["rate"] for t in tasks])
        lo = rates - np.array([summary[c][t]["ci95"][0] for t in tasks])
        hi = np.array([summary[c][t]["ci95"][1] for t in tasks]) - rates
        ax.bar(np.arange(len(tasks)) + i * width, rates, width, yerr=[lo, hi], capsize=3, label=c)
    ax.set_xticks(np.arange(len(tasks)) + width * (len(controllers) - 1) / 2, tasks)
    ax.set(ylim=(0, 1.05), ylabel="MuJoCo success rate", title=f"MPC ({cfg.cost} cost) vs baselines")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "success.png", dpi=120)
    plt.close(fig)
    lines = ["# Model-predictive control with the world model", "",
             f"Base policy `{cfg.base_policy.name or cfg.base_policy.kind}`; cost `{cfg.cost}`"
             + (f" ({cfg.goal}, {cfg.goal_metric})" if cfg.cost == "goal" else "")
             + f"; {cfg.candidates} candidates x {cfg.iterations} iterations, {cfg.elites} elites, "
             f"noise {cfg.noise_std} rad; world model `{cfg.checkpoint}`.", "", "![success](success.png)", "",
             "| controller | task | success (95% CI) | planning s / chunk | cost gain over the proposal |",
             "|---|---|---|---|---|"]
    for c in controllers:
        for t in tasks:
            s = summary[c][t]
            gain = "" if s["cost_improvement_mean"] is None else f"{s['cost_improvement_mean']:.4g}"
            lines.append(f"| {c} | {t} | {s['successes']}/{s['episodes']} ({100 * s['ci95'][0]:.0f}-"
                         f"{100 * s['ci95'][1]:.0f}%) | {s['plan_s_mean']:.2f} | {gain} |")
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")


def run_mpc(cfg: MPCConfig) -> dict[str, Any]:
    from sim.judge import SuccessJudge
    from world_model.pipeline import load_world_model

    out = Path(cfg.output_dir)
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    pipe = load_world_model(cfg.checkpoint).to(cfg.imagination.device)
    if pipe.action_encoder is None:
        raise ValueError(f"{cfg.checkpoint}: MPC needs an action-conditioned world model (no action encoder)")
    judge = SuccessJudge.from_pretrained(cfg.judge).eval() if cfg.cost == "judge" else None
    mpc = ChunkMPC(pipe, cfg, embodiment, judge)
    camera = judge.config.camera if judge is not None else "cam_high"
    if camera not in cfg.render.cameras:
        raise ValueError(f"camera '{camera}' is not rendered; render.cameras = {list(cfg.render.cameras)}")
    tasks = TaskCache(cfg.tasks, embodiment, cfg.render)
    records = RecordLog(out / EPISODES_FILE, RECORD_KEY)
    seeds: dict[str, list[int]] = {}
    try:
        for task in cfg.tasks:
            env = tasks.get(task, "eval")
            seeds[task] = solvable_seeds(tasks.get(task, "train"), robotwin_start_seed(cfg.seed), cfg.episodes_per_task)
            todo = [(c, s) for c in cfg.controllers for s in seeds[task]
                    if not records.done(c, task, s, settings=episode_settings(cfg, c, task))]
            policy = make_policy(cfg.base_policy, env)
            for controller, s in tqdm(todo, desc=f"mpc {task}", unit="ep"):
                records.add({**mpc_episode(env, mpc, controller, policy, s, camera),
                             "settings": episode_settings(cfg, controller, task)})
    finally:
        records.close()
        tasks.close()
    summary = {"controllers": summarize(cfg, seeds, load_records(out / EPISODES_FILE, RECORD_KEY)), "seeds": seeds,
               "config": {"cost": cfg.cost, "goal": cfg.goal, "goal_metric": cfg.goal_metric,
                          "candidates": cfg.candidates, "iterations": cfg.iterations, "checkpoint": cfg.checkpoint}}
    atomic_write_json(out / "mpc.json", summary)
    write_report(cfg, summary["controllers"], out)
    for c, per_task in summary["controllers"].items():
        for t, s in per_task.items():
            log.info("%s on %s: %d/%d successes, %.2f s planning per chunk", c, t, s["successes"], s["episodes"],
                     s["plan_s_mean"])
    return summary


@hydra.main(version_base=None, config_path="../configs", config_name="mpc")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, MPCConfig)
    save_resolved_config(dcfg, cfg.output_dir, "mpc_config.yaml")
    torch.set_grad_enabled(False)
    run_mpc(cfg)


if __name__ == "__main__":
    main()
