"""eva-eval-ros: the planner in closed loop through ROS 2, on the same seeds as the in-process ``eva-eval``.

    eva-eval policy=planner policy.planner.world_model=runs/wm2/model output_dir=runs/eval_planner
    eva-eval-ros policy.planner.world_model=runs/wm2/model reference=runs/eval_planner/eval_info.json

Per task, the colcon-installed ``sim_robot_node`` (the MuJoCo task behind the robot's topics, wall-clock
ticks, sim time on ``/clock``) and ``planner_node`` run as two processes over loopback-only DDS
(``real_robot.ros_env``), with the shipped params file and this config's planner and render settings on top.
The sim node runs the seeds one after the other (episode protocol in its docstring) and appends each outcome
to ``<output_dir>/episodes.jsonl``; a killed run resumes there (records carry a digest of the settings).

Seeds: those of ``reference`` (an in-process ``eval_info.json``, whose planner settings must match, apart from
``asynchronous`` and ``device``), or RoboTwin's protocol as in ``eva-eval`` (``eval.seed``,
``eval.only_expert_solvable``). Writes ``eval_info.json`` (success per task with Wilson intervals), and with a
reference ``comparison.json``, ``report.md`` and ``comparison.png``: in process vs through ROS per task, Fisher's
exact test, and how many seeds ended the same way.

The difference between the two is what ROS adds: transport, the planner running asynchronously on the
wall clock while the simulation moves on (in process the simulation waits for each plan), stale-input holds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import yaml
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from configs.constants import EPISODE_KEY, EPISODES_FILE, robotwin_start_seed
from configs.run_files import atomic_write_json, atomic_write_text, save_resolved_config
from configs.schema import EvalRosConfig, PlannerConfig, validate
from real_robot.ros_workspace import PACKAGE, build_workspace, installed_params, node_executable, stop_process, \
    workspace_env
from sim.records import load_records, settings_digest
from sim.stats import wilson_interval

log = logging.getLogger(__name__)

# planner settings that may differ from the in-process reference: how it runs, not what it computes
RUN_ONLY_FIELDS = ("asynchronous", "device")


def node_parameters(cfg: EvalRosConfig, results_file: Path) -> dict[str, Any]:
    """The parameters both nodes get on top of the params file (``/**: ros__parameters:``); the task's own
    (name, seeds, step limit, settings digest) are given per task."""
    planner = dataclasses.asdict(cfg.policy.planner)
    for name in ("world_model", "idm"):  # the nodes may run from another directory
        planner[name] = str(Path(planner[name]).resolve())
    return {
        "embodiment": cfg.embodiment["name"],
        **planner,  # safety as a nested dict: the node's safety.<name> parameters
        "render_cameras": list(cfg.render.cameras), "image_height": cfg.render.height,
        "image_width": cfg.render.width, "render_shadows": cfg.render.shadows,
        "render_multisample": cfg.render.multisample,
        "instruction_split": "eval" if cfg.eval.use_eval_instructions else "train",
        "results_file": str(results_file.resolve()),
    }


def reference_seeds(cfg: EvalRosConfig, path: Path) -> dict[str, list[int]]:
    """(task -> seeds) of an in-process eval_info.json, after checking that it ran the same planner."""
    if not path.is_file():
        raise FileNotFoundError(f"reference: {path} does not exist (an eval_info.json written by eva-eval)")
    info = json.loads(path.read_text())
    ref_policy = info.get("policy", {})
    if ref_policy.get("kind") != "planner":
        raise ValueError(f"reference {path}: policy.kind is '{ref_policy.get('kind')}', expected 'planner'")
    ours, defaults = dataclasses.asdict(cfg.policy.planner), dataclasses.asdict(PlannerConfig())
    # a field the reference lacks is newer than it: that run used the field's default
    theirs = {name: ref_policy["planner"].get(name, defaults[name]) for name in ours}
    differ = [f"policy.planner.{name} is {theirs[name]!r} there and {value!r} here" for name, value in ours.items()
              if name not in RUN_ONLY_FIELDS and theirs[name] != value]
    if differ:
        raise ValueError(f"reference {path}: {'; '.join(differ)}; compare runs of the same planner")
    seeds = {}
    for task in cfg.tasks:
        if task not in info.get("per_task", {}):
            raise ValueError(f"reference {path}: no task '{task}' (it has {sorted(info.get('per_task', {}))})")
        seeds[task] = [e["seed"] for e in info["per_task"][task]["per_episode"]]
    return seeds


def protocol_seeds(cfg: EvalRosConfig) -> dict[str, list[int]]:
    """RoboTwin's seeds as eva-eval chooses them."""
    from configs.embodiment import Embodiment
    from sim.rollout import TaskCache, solvable_seeds

    first, n = robotwin_start_seed(cfg.eval.seed), cfg.eval.episodes_per_task
    if not cfg.eval.only_expert_solvable:
        return {task: list(range(first, first + n)) for task in cfg.tasks}
    tasks = TaskCache(cfg.tasks, Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'"), None)
    try:
        return {task: solvable_seeds(tasks.get(task, "train"), first, n) for task in cfg.tasks}
    finally:
        tasks.close()


def log_tail(path: Path, lines: int = 30) -> str:
    text = path.read_text(errors="replace").splitlines() if path.is_file() else []
    return f"--- {path} ---\n" + "\n".join(text[-lines:])


def run_task(cfg: EvalRosConfig, install: Path, base_params: Path, params: Path, task: str, seeds: list[int],
             results_file: Path, settings: str, bar: tqdm) -> None:
    """Both nodes for one task until the sim node has run every seed (it exits 0 after the last)."""
    def done() -> int:
        return sum(r.get("settings") == settings for (t, s), r in load_records(results_file, EPISODE_KEY).items()
                   if t == task and s in seeds)

    if done() == len(seeds):
        return
    args = ["--ros-args", "--params-file", str(base_params), "--params-file", str(params)]
    commands = {
        "sim_robot_node": [str(node_executable(install, "sim_robot_node")), *args, "-p", f"task:={task}",
                           "-p", f"task_seeds:=[{','.join(str(s) for s in seeds)}]",
                           "-p", f"episode_steps:={cfg.tasks[task].step_limit}", "-p", f"settings:={settings}"],
        "planner_node": [str(node_executable(install, "planner_node")), *args],
    }
    env = workspace_env(install)  # a fresh random domain id per task
    logs_dir = Path(cfg.output_dir) / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    procs, files = {}, {}
    try:
        for name, cmd in commands.items():
            files[name] = open(logs_dir / f"{task}_{name}.log", "a")
            procs[name] = subprocess.Popen(cmd, env=env, stdout=files[name], stderr=subprocess.STDOUT,
                                           start_new_session=True)
        count, last_progress = done(), time.monotonic()
        while True:
            time.sleep(1.0)
            now_done = done()
            if now_done > count:
                bar.update(now_done - count)
                count, last_progress = now_done, time.monotonic()
            sim_code = procs["sim_robot_node"].poll()
            if sim_code == 0 and count == len(seeds):
                return
            tails = "\n".join(log_tail(logs_dir / f"{task}_{n}.log") for n in procs)
            if sim_code is not None:
                raise RuntimeError(f"{task}: sim_robot_node exited with code {sim_code} after {count} of {len(seeds)} "
                                   f"episodes\n{tails}")
            if procs["planner_node"].poll() is not None:
                raise RuntimeError(f"{task}: planner_node exited with code {procs['planner_node'].returncode}\n{tails}")
            if time.monotonic() - last_progress > cfg.episode_timeout_s:
                raise RuntimeError(f"{task}: no episode finished in {cfg.episode_timeout_s:.0f} s of wall time "
                                   f"(episode_timeout_s)\n{tails}")
    finally:
        for proc in procs.values():
            stop_process(proc)
        for f in files.values():
            f.close()


def task_summary(episodes: list[dict]) -> dict[str, Any]:
    k, n = sum(e["success"] for e in episodes), len(episodes)
    low, high = wilson_interval(k, n)
    return {"successes": k, "n_episodes": n, "pc_success": 100.0 * k / max(n, 1), "ci95": [100 * low, 100 * high]}


def compare(ours: dict[str, list[dict]], reference: dict[str, list[dict]]) -> dict[str, Any]:
    """Per task (and pooled): both success rates, Fisher's exact p, and the seeds that ended the same way."""
    from scipy.stats import fisher_exact

    def row(a: list[dict], b: list[dict]) -> dict[str, Any]:
        ka, kb, n = sum(e["success"] for e in a), sum(e["success"] for e in b), len(a)
        by_seed = {(e["task"], e["seed"]): e for e in b}
        same = sum(e["success"] == by_seed[(e["task"], e["seed"])]["success"] for e in a)
        other_instruction = sum(e["instruction"] != by_seed[(e["task"], e["seed"])]["instruction"] for e in a)
        p = float(fisher_exact([[ka, n - ka], [kb, n - kb]])[1])
        return {"in_process": task_summary(b), "ros": task_summary(a), "fisher_p": p, "same_outcome": same,
                "n_seeds": n, "instruction_mismatches": other_instruction}

    rows = {task: row(eps, reference[task]) for task, eps in ours.items()}
    rows["pooled"] = row([e for eps in ours.values() for e in eps], [e for eps in reference.values() for e in eps])
    return rows


def write_report(out: Path, rows: dict[str, Any], cfg: EvalRosConfig) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["# The planner in process and through ROS 2", "",
             f"World model `{cfg.policy.planner.world_model}`, IDM `{cfg.policy.planner.idm}`, "
             f"{cfg.policy.planner.steps} {cfg.policy.planner.sampler} steps. In process: `eva-eval` (the simulation "
             "waits for each plan). Through ROS: `planner_node` (asynchronous: "
             f"{cfg.policy.planner.asynchronous}) against `sim_robot_node` on the wall clock, loopback DDS.", "",
             "| task | seeds | in process | through ROS | Fisher p | same outcome |", "|---|---|---|---|---|---|"]
    for task, r in rows.items():
        cells = []
        for side in ("in_process", "ros"):
            s = r[side]
            cells.append(f"{s['successes']}/{s['n_episodes']} ({s['pc_success']:.0f}%, "
                         f"{s['ci95'][0]:.0f}-{s['ci95'][1]:.0f}%)")
        lines.append(f"| {task} | {r['n_seeds']} | {cells[0]} | {cells[1]} | {r['fisher_p']:.2f} | "
                     f"{r['same_outcome']}/{r['n_seeds']} |")
    mismatches = rows["pooled"]["instruction_mismatches"]
    if mismatches:
        lines += ["", f"**{mismatches} episodes had another instruction than in the reference** (check "
                      "`eval.use_eval_instructions`)."]
    lines += ["", "Intervals: Wilson 95%. Fisher p: two-sided exact test of equal success rates.",
              "", "![comparison](comparison.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(lines))

    tasks = list(rows)
    fig, ax = plt.subplots(figsize=(1.6 * len(tasks) + 2, 3.2))
    for i, (side, label) in enumerate((("in_process", "in process"), ("ros", "through ROS 2"))):
        x = [j + (i - 0.5) * 0.35 for j in range(len(tasks))]
        rates = [rows[t][side]["pc_success"] for t in tasks]
        err = [[r - rows[t][side]["ci95"][0] for r, t in zip(rates, tasks)],
               [rows[t][side]["ci95"][1] - r for r, t in zip(rates, tasks)]]
        ax.bar(x, rates, width=0.35, yerr=err, capsize=3, label=label)
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylabel("success (%)")
    ax.set_ylim(0, 105)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "comparison.png", dpi=120)
    plt.close(fig)


def evaluate_ros(cfg: EvalRosConfig) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    install = Path(cfg.install)
    if not (install / PACKAGE).is_dir():
        log.info("building ros2_ws into %s", install.parent)
        install = build_workspace(install.parent)
    base_params = Path(cfg.params_file) if cfg.params_file else installed_params(install, "sim.yaml")
    if not base_params.is_file():
        raise FileNotFoundError(f"params_file: {base_params} does not exist")
    reference = Path(cfg.reference) if cfg.reference else None
    seeds = reference_seeds(cfg, reference) if reference else protocol_seeds(cfg)
    results_file = out / EPISODES_FILE
    params = out / "ros_params.yaml"
    node_params = node_parameters(cfg, results_file)
    atomic_write_text(params, yaml.safe_dump({"/**": {"ros__parameters": node_params}}))

    bar = tqdm(total=sum(len(s) for s in seeds.values()), desc="eval through ROS 2", unit="ep")
    for task, task_seeds in seeds.items():
        bar.set_postfix(task=task)
        settings = settings_digest({"nodes": {k: v for k, v in node_params.items() if k != "results_file"}, "task": dataclasses.asdict(cfg.tasks[task]),
                                    "params_file": base_params.read_text()})
        run_task(cfg, install, base_params, params, task, task_seeds, results_file, settings, bar)
    bar.close()

    records = load_records(results_file, EPISODE_KEY)
    episodes = {task: [records[(task, s)] for s in task_seeds] for task, task_seeds in seeds.items()}
    info = {"policy": {"label": "planner (ROS 2)", **OmegaConf.to_container(OmegaConf.structured(cfg.policy))},
            "per_task": {task: {"per_episode": eps, "aggregated": task_summary(eps),
                                # wall seconds per simulated second (1.0: the simulation kept real time)
                                "median_wall_per_sim_s": float(np.median([e["wall_s"] / e["sim_s"] for e in eps]))}
                         for task, eps in episodes.items()},
            "overall": task_summary([e for eps in episodes.values() for e in eps])}
    atomic_write_json(out / "eval_info.json", info)
    for task, r in info["per_task"].items():
        log.info("%s through ROS 2: %d/%d successes, median %.2f wall s per sim s", task, r["aggregated"]["successes"],
                 r["aggregated"]["n_episodes"], r["median_wall_per_sim_s"])
    if reference:
        ref = json.loads(reference.read_text())["per_task"]
        rows = compare(episodes, {task: ref[task]["per_episode"] for task in episodes})
        atomic_write_json(out / "comparison.json", rows)
        write_report(out, rows, cfg)
        log.info("in process %d/%d, through ROS 2 %d/%d (Fisher p %.2f); wrote %s",
                 rows["pooled"]["in_process"]["successes"], rows["pooled"]["n_seeds"],
                 rows["pooled"]["ros"]["successes"], rows["pooled"]["n_seeds"], rows["pooled"]["fisher_p"],
                 out / "report.md")
    return info


@hydra.main(version_base=None, config_path="../configs", config_name="eval_ros")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, EvalRosConfig)
    save_resolved_config(dcfg, cfg.output_dir, "eval_ros_config.yaml")
    evaluate_ros(cfg)


if __name__ == "__main__":
    main()
