"""eva-eval: evaluate a policy over tasks x N episodes with RoboTwin's seed protocol.

    eva-eval                                   # scripted expert on every task
    eva-eval policy=noisy_expert policy.noise_level=0.1 eval.episodes_per_task=50
    eva-eval policy=replay policy.dataset_root=runs/dataset
    eva-eval policy=import policy.target=my_pkg.my_module:MyPolicy

Seeds start at 100000 * (1 + eval.seed); with eval.only_expert_solvable (RoboTwin) a seed
counts only if the scripted expert solves it. Writes LeRobot's eval_info.json schema
(per_episode, aggregated; per_task and overall for several tasks) and an mp4 per episode
(all, failed only, or none).

Resumable: every finished (or skipped) seed is appended to ``episodes.jsonl`` in the output directory
with a digest of the settings that decide it (``episode_settings``). Rerunning the same command after a
kill reuses those records and runs only the rest; a record made with other settings is redone.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from configs.constants import EPISODE_KEY, EPISODES_FILE, robotwin_start_seed
from configs.embodiment import Embodiment
from configs.run_files import atomic_write_json, save_resolved_config
from configs.schema import EvaluateConfig, validate
from sim.parallel import make_executor, ordered_seed_search
from sim.policies import make_policy, policy_label, policy_settings
from sim.records import RecordLog, settings_digest
from sim.rollout import TaskCache, expert_solves, run_policy
from sim.video import write_mp4

log = logging.getLogger(__name__)

_WORKER: dict = {}


def episode_settings(cfg: EvaluateConfig, task: str) -> str:
    """Digest of what decides an episode of ``task`` besides its seed: the policy, the task, embodiment and
    rendering, the seed and instruction protocol and the video rule. Checkpoints count by their path, and the
    code of an ``import`` policy is not in it: after retraining in place or changing that code, evaluate into a
    fresh output directory."""
    return settings_digest({
        "policy": policy_settings(cfg.policy), "task": dataclasses.asdict(cfg.tasks[task]),
        "embodiment": cfg.embodiment, "render": dataclasses.asdict(cfg.render),
        "only_expert_solvable": cfg.eval.only_expert_solvable,
        "use_eval_instructions": cfg.eval.use_eval_instructions,
        "save_video": cfg.eval.save_video, "video_fps": cfg.video_fps})


def _init_worker(cfg: EvaluateConfig, done: dict[tuple[str, int], dict[str, Any]]) -> None:
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    _WORKER.update(cfg=cfg, tasks=TaskCache(cfg.tasks, embodiment, cfg.render), policies={},
                   fps=embodiment.control_rate_hz, done=done)


def _evaluate_one(task: str, seed: int) -> dict[str, Any]:
    """One seed's record: the stored one when an earlier run finished it with the same settings."""
    if (task, seed) in _WORKER["done"]:
        return {**_WORKER["done"][(task, seed)], "resumed": True}
    cfg: EvaluateConfig = _WORKER["cfg"]
    cache: TaskCache = _WORKER["tasks"]
    if cfg.eval.only_expert_solvable and not expert_solves(cache.get(task, "train"), seed):
        return {"task": task, "seed": seed, "skipped": True}
    split = "eval" if cfg.eval.use_eval_instructions else "train"
    env = cache.get(task, split)
    if (task, split) not in _WORKER["policies"]:
        _WORKER["policies"][(task, split)] = make_policy(cfg.policy, env)
    policy = _WORKER["policies"][(task, split)]
    record_every = max(1, int(round(_WORKER["fps"] / cfg.video_fps)))
    cams = list(cfg.render.cameras) if cfg.eval.save_video != "none" else []
    timings = getattr(policy, "timings", None)  # planners record the time of each planning stage
    n_plans = len(timings) if timings is not None else 0
    t0 = time.perf_counter()
    ep = run_policy(env, policy, seed, record_cameras=cams, record_every=record_every)
    elapsed = time.perf_counter() - t0
    video = None
    if cams and (cfg.eval.save_video == "all" or not ep.success):
        video = Path(cfg.output_dir) / "videos" / task / f"seed{seed}.mp4"
        write_mp4(video, np.concatenate([ep.frames[c] for c in cams], axis=2), fps=cfg.video_fps)
    return {
        "task": task, "seed": seed, "skipped": False, "instruction": ep.instruction,
        "sum_reward": float(np.sum(ep.rewards)), "max_reward": float(np.max(ep.rewards, initial=0.0)),
        "success": bool(ep.success), "steps": ep.steps, "failure_reason": ep.failure_reason,
        "video_path": str(video) if video else None, "eval_s": elapsed,
        **({"plan_timings": timings[n_plans:]} if timings is not None else {}),
    }


def aggregate(episodes: list[dict[str, Any]], eval_s: float) -> dict[str, float]:
    n = max(len(episodes), 1)
    return {
        "avg_sum_reward": float(np.mean([e["sum_reward"] for e in episodes])) if episodes else float("nan"),
        "avg_max_reward": float(np.mean([e["max_reward"] for e in episodes])) if episodes else float("nan"),
        "pc_success": 100.0 * sum(e["success"] for e in episodes) / n,
        "n_episodes": len(episodes),
        "eval_s": eval_s,
        "eval_ep_s": eval_s / n,
    }


def evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = RecordLog(out / EPISODES_FILE, EPISODE_KEY)
    digests = {task: episode_settings(cfg, task) for task in cfg.tasks}
    done = {(t, s): {k: v for k, v in r.items() if k != "settings"} for (t, s), r in records.records.items()
            if t in digests and r.get("settings") == digests[t]}
    if done:
        log.info("resuming: %d seeds already evaluated with these settings in %s", len(done), out / EPISODES_FILE)
    n = cfg.eval.episodes_per_task
    bar = tqdm(total=n * len(cfg.tasks), desc=f"eval {policy_label(cfg.policy)}", unit="ep")
    per_task: dict[str, dict[str, Any]] = {}
    all_eps: list[dict[str, Any]] = []
    t_start = time.time()
    with make_executor(cfg.workers, _init_worker, (cfg, done)) as pool:
        for task in cfg.tasks:
            eps: list[dict[str, Any]] = []
            skipped: list[int] = []
            t0 = time.time()

            def on_result(seed, res, kept, eps=eps, skipped=skipped, task=task):
                if not res.pop("resumed", False):
                    records.add({**res, "settings": digests[task]})
                if kept:
                    res["episode_ix"] = len(eps)
                    eps.append(res)
                    bar.update(1)
                    bar.set_postfix(task=res["task"], success=f"{sum(e['success'] for e in eps)}/{len(eps)}")
                else:
                    skipped.append(seed)

            ordered_seed_search(pool, _evaluate_one, task, robotwin_start_seed(cfg.eval.seed), n, max_tries=10 * n,
                                keep=lambda r: not r["skipped"], on_result=on_result, window=2 * cfg.workers)
            per_task[task] = {"per_episode": eps, "aggregated": aggregate(eps, time.time() - t0),
                              "skipped_seeds": skipped}
            if any("plan_timings" in e for e in eps):  # per-stage planner latency (median, p95)
                from real_robot.planner import summarize_timings

                per_task[task]["planner_latency_s"] = summarize_timings(
                    [t for e in eps for t in e.get("plan_timings", [])])
            all_eps.extend(eps)
    bar.close()
    records.close()
    overall = aggregate(all_eps, time.time() - t_start)
    info = {
        "policy": {"label": policy_label(cfg.policy), **OmegaConf.to_container(OmegaConf.structured(cfg.policy))},
        "per_episode": all_eps,
        "aggregated": overall,
        "per_task": per_task,
        "overall": overall,
        "video_paths": [e["video_path"] for e in all_eps if e["video_path"]],
    }
    atomic_write_json(out / "eval_info.json", info)
    for task, r in per_task.items():
        log.info("%s: %.1f%% success over %d episodes", task, r["aggregated"]["pc_success"], len(r["per_episode"]))
    log.info("overall: %.1f%% success; wrote %s", overall["pc_success"], out / "eval_info.json")
    return info


@hydra.main(version_base=None, config_path="../configs", config_name="evaluate")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, EvaluateConfig)
    save_resolved_config(dcfg, cfg.output_dir, "eval_config.yaml")
    evaluate(cfg)


if __name__ == "__main__":
    main()
