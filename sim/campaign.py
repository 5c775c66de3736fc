"""eva-campaign: rank policies in MuJoCo and inside world models, and measure how far the rankings agree.

    eva-campaign 'world_models=[sft:runs/wm/model,grpo:runs/grpo_perceptual/model]' episodes_per_task=20

For every policy x task x seed (RoboTwin seeds from ``100000 * (1 + seed)``, only those the scripted expert
solves), the policy runs once in MuJoCo and once inside each world model (``sim.neural_env``), started from
the same real first frame and joint state; the success judge (``sim.judge``) decides imagined outcomes.
Per world model and task: Pearson correlation and mean maximum rank violation of the success rates against
MuJoCo's (SIMPLER's definitions and argument order, ``sim.real2sim``: world model first, MuJoCo second),
and the episode agreement (judged imagined outcome = MuJoCo outcome, on the same seed).

Every finished episode is appended to ``<output_dir>/episodes.jsonl`` at once; a rerun skips those, so a
campaign killed midway continues where it stopped. A policy that raises, returns NaN or a wrong shape fails
its episode with the reason and the campaign goes on. Writes ``campaign.json``, ``report.md``, a scatter
plot of world-model vs MuJoCo success, and one imagined video per world model, policy and task.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections import defaultdict
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

from configs.constants import ACTION_DIM, EPISODES_FILE, robotwin_start_seed  # noqa: E402
from configs.embodiment import Embodiment  # noqa: E402
from configs.run_files import atomic_write_json, atomic_write_text, save_resolved_config  # noqa: E402
from configs.schema import CampaignConfig, validate  # noqa: E402
from sim.judge import SuccessJudge, judged_success  # noqa: E402
from sim.neural_env import NeuralSimulator, to_uint8  # noqa: E402
from sim.parallel import make_executor, ordered_seed_search  # noqa: E402
from sim.policies import make_policy, policy_label, policy_settings  # noqa: E402
from sim.records import RecordLog, load_records, settings_digest  # noqa: E402
from sim.real2sim import mean_maximum_rank_violation, pearson_correlation  # noqa: E402
from sim.rollout import TaskCache, expert_solves, query_policy, run_policy  # noqa: E402
from sim.stats import wilson_interval  # noqa: E402
from sim.video import write_mp4  # noqa: E402

log = logging.getLogger(__name__)

MUJOCO = "mujoco"
RECORD_KEY = ("evaluator", "policy", "task", "seed")
INSTRUCTION_SPLIT = "eval"  # held-out instructions, as eva-eval
_WORKER: dict = {}


# ------------------------------------------------------------------------------------------ MuJoCo
def _init_worker(cfg: CampaignConfig) -> None:
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    _WORKER.update(cfg=cfg, tasks=TaskCache(cfg.tasks, embodiment, cfg.render), policies={})


def _solvable(task: str, seed: int) -> bool:
    return expert_solves(_WORKER["tasks"].get(task, "train"), seed)


def episode_settings(cfg: CampaignConfig, index: int, task: str, world_model: str | None = None) -> str:
    """Digest of everything that decides an episode's outcome: the policy, the task, the rendering and, for a
    world model, its checkpoint, the imagination settings and the judge's decision (not the batch size:
    a sample does not depend on its batch)."""
    settings: dict[str, Any] = {"policy": policy_settings(cfg.policies[index]),
                                "task": dataclasses.asdict(cfg.tasks[task]), "render": dataclasses.asdict(cfg.render)}
    if world_model is not None:
        im = dataclasses.asdict(cfg.imagination)
        settings.update(checkpoint=cfg.world_model_paths[world_model], judge=cfg.judge, threshold=cfg.threshold,
                        consecutive=cfg.consecutive, imagination={k: v for k, v in im.items() if k != "batch_size"})
    return settings_digest(settings)


def _mujoco_episode(job: tuple[int, str, int]) -> dict[str, Any]:
    index, task, seed = job
    cfg: CampaignConfig = _WORKER["cfg"]
    env = _WORKER["tasks"].get(task, INSTRUCTION_SPLIT)
    if (index, task) not in _WORKER["policies"]:
        _WORKER["policies"][(index, task)] = make_policy(cfg.policies[index], env)
    ep = run_policy(env, _WORKER["policies"][(index, task)], seed)
    return {"evaluator": MUJOCO, "policy": policy_label(cfg.policies[index]), "task": task, "seed": seed,
            "success": bool(ep.success), "steps": ep.steps, "failure_reason": ep.failure_reason,
            "settings": episode_settings(cfg, index, task)}


def campaign_seeds(cfg: CampaignConfig, pool) -> dict[str, list[int]]:
    seeds: dict[str, list[int]] = {}
    for task in cfg.tasks:
        kept: list[int] = []
        first = robotwin_start_seed(cfg.seed)
        if cfg.only_expert_solvable:
            ordered_seed_search(pool, _solvable, task, first, cfg.episodes_per_task, 10 * cfg.episodes_per_task,
                                keep=bool, on_result=lambda s, ok, k, kept=kept: kept.append(s) if k else None,
                                window=2 * cfg.workers)
        else:
            kept = list(range(first, first + cfg.episodes_per_task))
        seeds[task] = kept
    return seeds


# --------------------------------------------------------------------------------- world model
def imagine_episodes(sim: NeuralSimulator, judge: SuccessJudge, env, policies: list, seeds: list[int],
                     threshold: float, consecutive: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Run one policy object per seed inside the world model, all seeds as one batch, until the task's step
    limit or until every episode is judged successful or failed. Returns one record per seed (success,
    steps, failure reason, judged step) and the imagined videos (B, T, h, w, 3) uint8, real first frame first.

    Policies are reset right after ``env.setup_demo(seed)`` (privileged experts plan from that state) and
    then see only imagined frames: ``obs["observation"][camera]["rgb"]`` is the newest imagined frame and
    ``obs["joint_action"]["vector"]`` the last command (the simulator assumes perfect tracking).
    """
    camera, task, b = judge.config.camera, env.name, len(seeds)
    first, states, instructions = [], [], []
    for policy, seed in zip(policies, seeds):
        env.setup_demo(seed=seed)
        policy.reset()
        obs = env.get_obs()
        first.append(obs["observation"][camera]["rgb"])
        states.append(np.asarray(obs["joint_action"]["vector"], dtype=np.float64))
        instructions.append(env.get_instruction())
    frame = sim.reset(np.stack(first), np.stack(states), instructions, seeds)
    command = np.stack(states)
    video = [frame[:, None]]
    probabilities: list[list[float]] = [[] for _ in range(b)]
    failure: list[str | None] = [None] * b
    judged: list[int | None] = [None] * b
    chunks = math.ceil(env.step_lim / sim.chunk_steps)
    for c in range(chunks):
        chunk = np.empty((b, sim.chunk_steps, ACTION_DIM))
        for k in range(sim.chunk_steps):
            t = c * sim.chunk_steps + k
            for i in range(b):
                if failure[i] is None and judged[i] is None and t < env.step_lim:
                    obs = {"observation": {camera: {"rgb": frame[i]}}, "joint_action": {"vector": command[i].copy()}}
                    action, reason = query_policy(policies[i], obs, f"step {t}")
                    if action is None:
                        failure[i] = reason
                    else:
                        command[i] = action
                chunk[i, k] = command[i]
        imagined = sim.step(chunk)
        n = imagined.shape[1]
        probs = judge.predict(imagined.flatten(0, 1), [task] * (b * n)).reshape(b, n)
        frame = to_uint8(imagined[:, -1])
        video.append(to_uint8(imagined))
        in_time = min(n, (env.step_lim - c * sim.chunk_steps) // sim.every)  # frames up to the step limit
        for i in range(b):
            if judged[i] is None and failure[i] is None:
                probabilities[i].extend(probs[i, :in_time].tolist())
                ok, at = judged_success(probabilities[i], threshold, consecutive)
                if ok:
                    judged[i] = (at + 1) * sim.every  # control step of the first frame of the judged run
        if all(judged[i] is not None or failure[i] is not None for i in range(b)):
            break
    records = []
    for i, seed in enumerate(seeds):
        success = judged[i] is not None
        reason = failure[i] or (None if success else f"step limit {env.step_lim} reached without a judged success")
        records.append({"seed": seed, "success": success, "steps": judged[i] if success else env.step_lim,
                        "failure_reason": reason, "max_probability": float(max(probabilities[i], default=0.0))})
    return records, np.concatenate(video, axis=1)


# ----------------------------------------------------------------------------------------- summary
def summarize(cfg: CampaignConfig, seeds: dict[str, list[int]], records: dict[tuple, dict]) -> dict[str, Any]:
    """Success tables and ranking metrics over this campaign's seeds and settings (records of other
    settings or seeds in the same file are left out)."""
    policies = [policy_label(p) for p in cfg.policies]
    tasks = list(cfg.tasks)
    evaluators = [MUJOCO, *cfg.world_model_paths]

    def current(evaluator: str, policy: str, task: str, seed: int, record: dict) -> bool:
        if evaluator not in evaluators or policy not in policies or seed not in seeds.get(task, ()):
            return False
        wm = None if evaluator == MUJOCO else evaluator
        return record.get("settings") == episode_settings(cfg, policies.index(policy), task, wm)

    records = {key: r for key, r in records.items() if current(*key, r)}
    table: dict[str, dict[str, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for ev in evaluators:
        for task in tasks:
            for pol in policies:
                eps = [r for (e, p, t, _), r in records.items() if (e, p, t) == (ev, pol, task)]
                k, n = sum(r["success"] for r in eps), len(eps)
                lo, hi = wilson_interval(k, n)
                table[ev][task][pol] = {"successes": k, "episodes": n, "rate": k / n if n else float("nan"),
                                        "ci95": [lo, hi]}
    metrics: dict[str, Any] = {}
    for wm in cfg.world_model_paths:
        per_task = {}
        for task in tasks:
            sim_rates = [table[wm][task][p]["rate"] for p in policies]
            real_rates = [table[MUJOCO][task][p]["rate"] for p in policies]
            same = [records[(wm, p, task, s)]["success"] == records[(MUJOCO, p, task, s)]["success"]
                    for (e, p, t, s) in records if e == wm and t == task and (MUJOCO, p, task, s) in records]
            per_task[task] = {"pearson": pearson_correlation(sim_rates, real_rates),
                              "world_model_constant": bool(np.ptp(sim_rates) == 0),  # no ranking at all
                              "mmrv": mean_maximum_rank_violation(sim_rates, real_rates),
                              "episode_agreement": float(np.mean(same)) if same else float("nan")}
        pooled_sim = [table[wm][t][p]["rate"] for t in tasks for p in policies]
        pooled_real = [table[MUJOCO][t][p]["rate"] for t in tasks for p in policies]
        metrics[wm] = {"per_task": per_task,
                       "mean_pearson": float(np.mean([m["pearson"] for m in per_task.values()])),
                       "mean_mmrv": float(np.mean([m["mmrv"] for m in per_task.values()])),
                       "pooled_pearson": pearson_correlation(pooled_sim, pooled_real),
                       "pooled_mmrv": mean_maximum_rank_violation(pooled_sim, pooled_real)}
    return {"policies": policies, "tasks": tasks, "world_models": cfg.world_model_paths,
            "success": {e: {t: dict(v) for t, v in d.items()} for e, d in table.items()}, "metrics": metrics}


def scatter_plot(summary: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    markers = "osD^v<>"
    for w, wm in enumerate(summary["world_models"]):
        for t, task in enumerate(summary["tasks"]):
            real = [summary["success"][MUJOCO][task][p]["rate"] for p in summary["policies"]]
            sim = [summary["success"][wm][task][p]["rate"] for p in summary["policies"]]
            ax.scatter(real, sim, marker=markers[t % len(markers)], color=f"C{w}", alpha=0.8,
                       label=f"{wm} / {task}")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set(xlim=(-0.05, 1.05), ylim=(-0.05, 1.05), xlabel="MuJoCo success rate", ylabel="world-model success rate",
           title="policy success: world model vs MuJoCo")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(summary: dict[str, Any], out: Path, judge_metrics: dict | None) -> None:
    lines = ["# Real2Sim campaign", "",
             "Success rates (Wilson 95% intervals) of each policy in MuJoCo and inside each world model, from the "
             "same seeds and first frames; imagined outcomes decided by the success judge. Pearson and MMRV use "
             "SIMPLER's definitions with the world model as the simulated and MuJoCo as the real evaluator.", "",
             "![scatter](scatter.png)", ""]
    header = "| task | policy | " + " | ".join(["MuJoCo", *summary["world_models"]]) + " |"
    lines += [header, "|" + "---|" * (3 + len(summary["world_models"]))]
    for task in summary["tasks"]:
        for pol in summary["policies"]:
            cells = []
            for ev in [MUJOCO, *summary["world_models"]]:
                s = summary["success"][ev][task][pol]
                cells.append(f"{s['successes']}/{s['episodes']} ({100 * s['ci95'][0]:.0f}-{100 * s['ci95'][1]:.0f}%)")
            lines.append(f"| {task} | {pol} | " + " | ".join(cells) + " |")
    lines += ["", "| world model | task | Pearson r | MMRV | episode agreement |", "|---|---|---|---|---|"]
    for wm, m in summary["metrics"].items():
        for task, r in m["per_task"].items():
            pearson = f"{r['pearson']:.3f}" + (" (all rates equal)" if r["world_model_constant"] else "")
            lines.append(f"| {wm} | {task} | {pearson} | {r['mmrv']:.3f} | {r['episode_agreement']:.2f} |")
        lines.append(f"| {wm} | mean over tasks | {m['mean_pearson']:.3f} | {m['mean_mmrv']:.3f} | |")
        lines.append(f"| {wm} | pooled (policy x task) | {m['pooled_pearson']:.3f} | {m['pooled_mmrv']:.3f} | |")
    if judge_metrics:
        lines += ["", "Success judge on held-out simulated episodes (eva-train-judge):", "",
                  "| task | frame accuracy | balanced | episode accuracy | episodes |", "|---|---|---|---|---|"]
        for task, r in judge_metrics.get("heldout", {}).items():
            lines.append(f"| {task} | {r['frame_accuracy']:.3f} | {r['balanced_accuracy']:.3f} | "
                         f"{r['episode_accuracy']:.3f} | {r['episodes']} |")
    lines += ["", "Imagined videos: `videos/<world model>/<task>/<policy>.mp4` (first seed of each cell).", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))


# -------------------------------------------------------------------------------------------- main
def run_campaign(cfg: CampaignConfig) -> dict[str, Any]:
    from world_model.pipeline import load_world_model  # torch-heavy imports only for the world-model part

    out = Path(cfg.output_dir)
    log_ = RecordLog(out / EPISODES_FILE, RECORD_KEY)
    labels = [policy_label(p) for p in cfg.policies]
    start = time.time()
    try:
        with make_executor(cfg.workers, _init_worker, (cfg,)) as pool:
            seeds = campaign_seeds(cfg, pool)
            jobs = [(i, task, s) for i, lab in enumerate(labels) for task in cfg.tasks for s in seeds[task]
                    if not log_.done(MUJOCO, lab, task, s, settings=episode_settings(cfg, i, task))]
            for rec in tqdm(pool.map(_mujoco_episode, jobs), total=len(jobs), desc="campaign: MuJoCo", unit="ep"):
                log_.add(rec)

        embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
        judge = SuccessJudge.from_pretrained(cfg.judge).eval()
        if judge.config.camera not in cfg.render.cameras:
            raise ValueError(f"judge {cfg.judge} reads camera '{judge.config.camera}', which is not rendered; "
                             f"render.cameras = {list(cfg.render.cameras)}")
        tasks = TaskCache(cfg.tasks, embodiment, cfg.render)
        for wm, path in cfg.world_model_paths.items():
            pipe = load_world_model(path).to(cfg.imagination.device)
            check_compatible(pipe, judge, path, cfg.judge)
            sim = NeuralSimulator(pipe, embodiment.control_rate_hz, cfg.imagination)
            digests = {(i, task): episode_settings(cfg, i, task, wm) for i in range(len(labels)) for task in cfg.tasks}
            todo = {(i, task): [s for s in seeds[task] if not log_.done(wm, labels[i], task, s, settings=digest)]
                    for (i, task), digest in digests.items()}
            bar = tqdm(total=sum(map(len, todo.values())), desc=f"campaign: {wm}", unit="ep")
            for i, pcfg in enumerate(cfg.policies):
                for task in cfg.tasks:
                    pending = todo[(i, task)]
                    for j in range(0, len(pending), cfg.imagination.batch_size):
                        batch = pending[j:j + cfg.imagination.batch_size]
                        env = tasks.get(task, INSTRUCTION_SPLIT)
                        policies = [make_policy(pcfg, env) for _ in batch]
                        recs, video = imagine_episodes(sim, judge, env, policies, batch, cfg.threshold,
                                                       cfg.consecutive)
                        if batch[0] == seeds[task][0]:
                            write_mp4(out / "videos" / wm / task / f"{labels[i]}.mp4", video[0],
                                      fps=pipe.config.fps)
                        for rec in recs:
                            log_.add({"evaluator": wm, "policy": labels[i], "task": task, **rec,
                                      "settings": digests[(i, task)]})
                        bar.update(len(batch))
            bar.close()
            del pipe
        tasks.close()
    finally:
        log_.close()
    summary = summarize(cfg, seeds, load_records(out / EPISODES_FILE, RECORD_KEY))
    summary["seeds"] = seeds
    summary["campaign_s"] = time.time() - start
    judge_metrics_path = Path(cfg.judge).parent / "metrics.json"
    judge_metrics = json.loads(judge_metrics_path.read_text()) if judge_metrics_path.is_file() else None
    summary["judge"] = judge_metrics
    atomic_write_json(out / "campaign.json", summary)
    scatter_plot(summary, out / "scatter.png")
    write_report(summary, out, judge_metrics)
    for wm, m in summary["metrics"].items():
        log.info("%s: mean Pearson %.3f, mean MMRV %.3f over %d tasks", wm, m["mean_pearson"], m["mean_mmrv"],
                 len(summary["tasks"]))
    return summary


def check_compatible(pipe, judge: SuccessJudge, wm_path: str, judge_path: str) -> None:
    if tuple(pipe.config.image_size) != tuple(judge.config.image_size) or pipe.config.fps != judge.config.fps:
        raise ValueError(f"world model {wm_path} imagines {tuple(pipe.config.image_size)} at {pipe.config.fps} fps, "
                         f"the judge {judge_path} reads {tuple(judge.config.image_size)} at {judge.config.fps} fps")


@hydra.main(version_base=None, config_path="../configs", config_name="campaign")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, CampaignConfig)
    save_resolved_config(dcfg, cfg.output_dir, "campaign_config.yaml")
    torch.set_grad_enabled(False)
    run_campaign(cfg)


if __name__ == "__main__":
    main()
