"""eva-report: a Markdown report of a run directory: the dataset it collected and the evaluation.

    eva-report run_dir=runs/demo

Reads ``<run_dir>/dataset`` (LeRobot v3.0) and ``<run_dir>/eval/eval_info.json`` and writes
``<run_dir>/report.md`` with a success plot (Wilson 95% intervals), a strip of dataset frames
per task and links to the episode videos.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from PIL import Image  # noqa: E402

from configs.run_files import atomic_write_text  # noqa: E402
from configs.schema import ReportConfig, validate  # noqa: E402
from sim.dataset import LeRobotDataset  # noqa: E402
from sim.stats import wilson_interval  # noqa: E402

log = logging.getLogger(__name__)


def _rel(path: str | Path, start: Path) -> str:
    return os.path.relpath(Path(path).resolve(), start.resolve())


def dataset_section(ds_root: Path, run_dir: Path, assets: Path) -> list[str]:
    ds = LeRobotDataset(ds_root)
    per_task = Counter(e.get("eva/task", "?") for e in ds.episodes)
    frames = Counter()
    for e in ds.episodes:
        frames[e.get("eva/task", "?")] += e["length"]
    lines = [
        "## Dataset",
        "",
        f"LeRobot v3.0 dataset at `{_rel(ds_root, run_dir)}`: {len(ds)} episodes, {ds.info['total_frames']} frames "
        f"at {ds.fps} fps, embodiment `{ds.embodiment}`, cameras {', '.join(f'`{c}`' for c in ds.cameras)}, "
        f"{ds.info['total_tasks']} instruction strings.",
        "",
        "| task | episodes | frames | mean length (s) | seeds |",
        "|---|---|---|---|---|",
    ]
    for task, n in per_task.items():
        seeds = sorted(e["eva/seed"] for e in ds.episodes if e.get("eva/task") == task)
        lines.append(f"| {task} | {n} | {frames[task]} | {frames[task] / n / ds.fps:.1f} | {seeds[0]}..{seeds[-1]} |")
    # a strip of frames per task (first episode, first camera), evenly spaced in time
    rows = []
    for task in per_task:
        ep = next(e["episode_index"] for e in ds.episodes if e.get("eva/task") == task)
        video = ds.episode_video(ep, ds.cameras[0])
        idx = np.linspace(0, len(video) - 1, 6).astype(int)
        rows.append(np.concatenate([video[i] for i in idx], axis=1))
    strip = assets / "dataset_frames.png"
    Image.fromarray(np.concatenate(rows, axis=0)).save(strip)
    lines += ["", f"First episode of each task (rows: {', '.join(per_task)}), camera `{ds.cameras[0]}`, "
              "six evenly spaced frames:", "", f"![dataset frames]({_rel(strip, run_dir)})", ""]
    return lines


def eval_section(info_path: Path, run_dir: Path, assets: Path) -> list[str]:
    info = json.loads(info_path.read_text())
    tasks = list(info["per_task"])
    succ = [sum(e["success"] for e in info["per_task"][t]["per_episode"]) for t in tasks]
    ns = [len(info["per_task"][t]["per_episode"]) for t in tasks]
    rates = [s / n if n else float("nan") for s, n in zip(succ, ns)]
    cis = [wilson_interval(s, n) for s, n in zip(succ, ns)]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(tasks), 3.2))
    err = np.clip(np.array([[r - lo for r, (lo, _) in zip(rates, cis)],
                            [hi - r for r, (_, hi) in zip(rates, cis)]]), 0.0, None)  # float round-off at 0 or 1
    ax.bar(tasks, rates, yerr=err, capsize=6, color="#4c72b0")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("success rate")
    ax.set_title(f"{info['policy']['label']}: success per task (95% Wilson CI)")
    fig.tight_layout()
    plot = assets / "eval_success.png"
    fig.savefig(plot, dpi=120)
    plt.close(fig)
    agg = info["overall"]
    lines = [
        "## Policy evaluation",
        "",
        f"Policy `{info['policy']['label']}`, RoboTwin seed protocol (seeds from 100000, only seeds the "
        f"expert solves), held-out instructions. Overall success {agg['pc_success']:.1f}% over "
        f"{agg['n_episodes']} episodes, {agg['eval_ep_s']:.1f} s per episode. Raw results: "
        f"[`eval_info.json`]({_rel(info_path, run_dir)}).",
        "",
        "| task | success | 95% CI | episodes | mean steps |",
        "|---|---|---|---|---|",
    ]
    for t, s, n, (lo, hi) in zip(tasks, succ, ns, cis):
        steps = np.mean([e["steps"] for e in info["per_task"][t]["per_episode"]])
        lines.append(f"| {t} | {s}/{n} ({100 * s / n:.0f}%) | {100 * lo:.0f}-{100 * hi:.0f}% | {n} | {steps:.0f} |")
    lines += ["", f"![success per task]({_rel(plot, run_dir)})", "", "### Episode videos", ""]
    for t in tasks:
        eps = info["per_task"][t]["per_episode"]
        links = [f"[seed {e['seed']} {'ok' if e['success'] else 'FAIL'}]({_rel(e['video_path'], run_dir)})"
                 for e in eps if e.get("video_path")]
        lines.append(f"- **{t}**: " + (", ".join(links) if links else "no videos saved (eval.save_video)"))
        failed = [e for e in eps if not e["success"]]
        for e in failed:
            lines.append(f"  - seed {e['seed']} failed: {e['failure_reason']}")
    return lines + [""]


def write_report(cfg: ReportConfig) -> Path:
    run_dir = Path(cfg.run_dir)
    assets = run_dir / "report_assets"
    assets.mkdir(parents=True, exist_ok=True)
    lines = [f"# {cfg.title}", "", f"Run directory `{run_dir}`.", ""]
    ds_root, info_path = run_dir / "dataset", run_dir / "eval" / "eval_info.json"
    if (ds_root / "meta" / "info.json").exists():
        lines += dataset_section(ds_root, run_dir, assets)
    else:
        lines += ["## Dataset", "", f"Skipped: no dataset at `{ds_root}`.", ""]
    if info_path.exists():
        lines += eval_section(info_path, run_dir, assets)
    else:
        lines += ["## Policy evaluation", "", f"Skipped: no `{info_path}`.", ""]
    out = run_dir / "report.md"
    atomic_write_text(out, "\n".join(lines))
    log.info("wrote %s", out)
    return out


@hydra.main(version_base=None, config_path="../configs", config_name="report")
def main(dcfg: DictConfig) -> None:
    write_report(validate(dcfg, ReportConfig))


if __name__ == "__main__":
    main()
