"""eva-grpo-experiment: the post-training story end to end, with a report a newcomer can read.

    eva-grpo-experiment checkpoint=runs/wm/model idm_checkpoint=runs/idm/model \
        train_dataset=runs/idm_data/train test_dataset=runs/idm_data/test output_dir=runs/grpo_experiment

Stages, each skipped when its output exists (rerun the command after an interruption; GRPO itself
resumes from its checkpoint):
  1. calibrate EVA's P_0 from the pre-trained (SFT) model       -> executability_calibration.json
  2. GRPO for every reward in ``rewards``                       -> grpo_<reward>/
  3. eva-eval-wm of the model before and after each GRPO run on held-out episodes, with the same
     calibration: PSNR/SSIM/LPIPS in planner and simulator modes, the executability of decoded planner
     rollouts, and imagined episodes executed open loop in MuJoCo -> eval_before/, eval_<reward>/
  4. report.md: what was run, reward curves, the checkpoint selection (GRPO with ``val_every``), before/after
     table with relative changes and 95% intervals, links to videos.
"""

from __future__ import annotations

import json
import itertools
import logging
import os
import sys
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import configs  # noqa: E402
from configs.run_files import atomic_write_text, save_resolved_config  # noqa: E402
from configs.schema import (CalibrateRewardConfig, EvalWMConfig, GRPOConfig, GRPOExperimentConfig,  # noqa: E402
                            validate)
from rl_post_train.calibrate import calibrate  # noqa: E402
from rl_post_train.rewards import CALIBRATION_FILE, Calibration  # noqa: E402
from rl_post_train.train import (EXECUTABILITY_VALIDATION, SELECTION_FILE, VALIDATION_LOG,  # noqa: E402
                                  VALIDATION_SCORES, train)
from sim.report import dataset_section  # noqa: E402
from sim.video import read_mp4  # noqa: E402
from world_model.evaluate import evaluate_wm  # noqa: E402

log = logging.getLogger(__name__)


def run_stages(cfg: GRPOExperimentConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    calibration = out / CALIBRATION_FILE
    common = [f"embodiment={cfg.embodiment['name']}"]
    exe = list(cfg.executability_overrides)  # "++": a stage's YAML need not list the field; its schema checks it
    if not calibration.exists():
        log.info("stage 1: calibrating P_0")
        calibrate(validate(configs.compose("calibrate_reward", [
            *common, f"checkpoint={cfg.checkpoint}", f"idm_checkpoint={cfg.idm_checkpoint}",
            f"dataset_root={cfg.train_dataset}", f"output={calibration}",
            *(f"++reward.executability.{o}" for o in exe), *cfg.calibrate_overrides]),
            CalibrateRewardConfig))
    models = {"before": cfg.checkpoint}
    for reward in cfg.rewards:
        run_dir = out / f"grpo_{reward}"
        if not (run_dir / "model").exists():
            log.info("stage 2: GRPO with the %s reward", reward)
            train(validate(configs.compose("grpo", [
                *common, f"reward={reward}", f"checkpoint={cfg.checkpoint}", f"idm_checkpoint={cfg.idm_checkpoint}",
                f"dataset_root={cfg.train_dataset}", f"run_dir={run_dir}",
                *([f"reward.executability.calibration_file={calibration}", *(f"++reward.executability.{o}" for o in exe)]
                  if reward == "executability" else []),
                *cfg.grpo_overrides]), GRPOConfig))
        models[reward] = str(run_dir / "model")
    evals = {}
    for name, ckpt in models.items():
        eval_dir = out / f"eval_{name}"
        if not (eval_dir / "wm_eval.json").exists():
            log.info("stage 3: evaluating %s (%s)", name, ckpt)
            evaluate_wm(validate(configs.compose("eval_wm", [
                *common, f"checkpoint={ckpt}", f"dataset_root={cfg.test_dataset}", f"output_dir={eval_dir}",
                f"idm_checkpoint={cfg.idm_checkpoint}", f"reward.calibration_file={calibration}",
                *(f"++reward.{o}" for o in exe),
                f"episodes_per_task={cfg.episodes_per_task}", *cfg.eval_overrides,
                *([] if name == "before" else ["methods=[model]"])]), EvalWMConfig))
        evals[name] = json.loads((eval_dir / "wm_eval.json").read_text())
    return evals


def read_metrics(out: Path, reward: str) -> list[dict]:
    return [json.loads(line) for line in (out / f"grpo_{reward}" / "metrics.jsonl").read_text().splitlines()]


def read_validation(out: Path, reward: str) -> tuple[list[dict], dict | None]:
    """The validation records and the selection summary of a GRPO run with ``val_every``; ([], None) without."""
    run = out / f"grpo_{reward}"
    log_file, summary = run / VALIDATION_LOG, run / SELECTION_FILE
    rows = [json.loads(line) for line in log_file.read_text().splitlines()] if log_file.exists() else []
    return rows, json.loads(summary.read_text()) if summary.exists() else None


def reward_curves(out: Path, rewards: list[str]) -> Path:
    fig, axes = plt.subplots(1, 3 * len(rewards), figsize=(5.5 * len(rewards) * 3, 3.3), squeeze=False)
    for j, reward in enumerate(rewards):
        rows = read_metrics(out, reward)
        steps = [r["step"] for r in rows]
        ax = axes[0, 3 * j]
        ax.plot(steps, [r["reward"] for r in rows], color="#1f77b4", alpha=0.4, label="per iteration")
        k = max(1, len(rows) // 10)
        smooth = [sum(r["reward"] for r in rows[max(0, i - k + 1):i + 1]) / len(rows[max(0, i - k + 1):i + 1])
                  for i in range(len(rows))]
        ax.plot(steps, smooth, color="#1f77b4", label=f"mean of {k}")
        ax.set_title(f"{reward}: mean reward of the sampled groups")
        ax.set_xlabel("GRPO iteration")
        ax.legend(fontsize=7)
        ax = axes[0, 3 * j + 1]
        ax.plot(steps, [r["kl"] for r in rows], color="#d62728")
        ax.set_title(f"{reward}: KL to the reference")
        ax.set_xlabel("GRPO iteration")
        ax = axes[0, 3 * j + 2]
        val, summary = read_validation(out, reward)
        if not val:
            ax.text(0.5, 0.5, "no checkpoint selection (val_every=0)", ha="center", va="center", fontsize=8)
            ax.set_axis_off()
            continue
        start = val[0]
        for key, color in (("reward", "#1f77b4"), ("lpips", "#ff7f0e"), ("agreement", "#2ca02c"),
                           ("smoothness", "#9467bd")):
            if key not in start:  # smoothness: logged with the executability reward
                continue
            ax.plot([v["step"] for v in val], [v[key] / start[key] for v in val], "o-", ms=3, color=color, label=key)
        if summary:
            ax.axvline(summary["selected"]["step"], color="k", ls="--", lw=0.8, label="selected")
        ax.set_title(f"{reward}: validation, relative to the start", fontsize=9)
        ax.set_xlabel("GRPO iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "reward_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _rel_change(before: float, after: float) -> str:
    return f"{100 * (after - before) / abs(before):+.1f}%" if before else "-"


def training_groups_section(out: Path, rewards: list[str], window: int = 10) -> list[str]:
    """The mean of every logged reward component, the KL (and, with ``log_grad_split``, the gradient norms of the
    PPO and KL terms) over the first and last ``window`` iterations of
    each GRPO run: what GRPO learned on its own sampled groups (SDE rollouts of training prompts), to set beside
    the held-out table, which scores the deterministic sampler."""
    lines = []
    for reward in rewards:
        rows = read_metrics(out, reward)
        n = min(window, len(rows) // 2)
        if n == 0:
            lines += [f"Training groups of `grpo_{reward}`: {len(rows)} iteration(s) logged, too few to compare first and last.", ""]
            continue
        keys = [k for k in rows[0] if k.startswith(("reward", "grad_norm/", "grad_cos/")) or k == "kl"]
        lines += [f"Training groups of `grpo_{reward}` ({len(rows)} iterations): means over the first and last {n}.", "",
                  f"| logged field | iterations 1-{n} | iterations {len(rows) - n + 1}-{len(rows)} | change |",
                  "|---|---|---|---|"]
        for k in keys:
            first = float(np.mean([r[k] for r in rows[:n] if k in r]))
            last = float(np.mean([r[k] for r in rows[-n:] if k in r]))
            lines.append(f"| `{k}` | {first:.4g} | {last:.4g} | {_rel_change(first, last)} |")
        lines.append("")
    return lines


def selection_section(out: Path, rewards: list[str]) -> list[str]:
    """Which checkpoint each GRPO run with ``val_every`` kept, and its validation scores against the start's."""
    lines = []
    for reward in rewards:
        val, summary = read_validation(out, reward)
        if summary is None:
            continue
        start, best = summary["start"], summary["selected"]
        conditions = [f"LPIPS is within +{100 * summary['val_lpips_tolerance']:g}%",
                      f"the motion agreement within -{100 * summary['val_agreement_tolerance']:g}%"]
        if summary.get("val_smoothness_tolerance") is not None:  # absent in runs from before the condition existed
            conditions.append(f"the smoothness at least {100 * (1 - summary['val_smoothness_tolerance']):g}%")
        lines += [f"Checkpoint selection in `grpo_{reward}` ({len(val) - 1} validations of {summary['val_windows']} "
                  f"windows of held-out training episodes; eligible while {', '.join(conditions[:-1])} and "
                  f"{conditions[-1]} of the start's): the evaluated model is iteration {best['step']} of {val[-1]['step']}"
                  + (" (the SFT model: no later checkpoint was better and eligible)" if best["step"] == 0 else "")
                  + ".", "", "| validation | start | selected | last |", "|---|---|---|---|"]
        for key in (*VALIDATION_SCORES, *(k for k in EXECUTABILITY_VALIDATION if k in start)):
            lines.append(f"| {key} | {start[key]:.4g} | {best[key]:.4g} ({_rel_change(start[key], best[key])}) | "
                         f"{val[-1][key]:.4g} ({_rel_change(start[key], val[-1][key])}) |")
        lines.append("")
    return lines


def frames_figure(out: Path, evals: dict) -> Path | None:
    """The last predicted frame of the first simulator-mode grids (``eval_*/grid_<k>.mp4``, written by
    ``eva-eval-wm``): one row per window, the ground truth then each model's prediction; None without grids."""
    rows = []
    for k in itertools.count():  # as many grids as every evaluation wrote (eva-eval-wm num_videos)
        paths = {name: out / f"eval_{name}" / f"grid_{k}.mp4" for name in evals}
        if not all(p.exists() for p in paths.values()):
            break
        panels = []
        for name, path in paths.items():
            last = read_mp4(path)[-1]
            methods = list(evals[name]["modes"]["simulator"])  # the grid: truth, then these, side by side
            width = last.shape[1] // (1 + len(methods))
            col = 1 + methods.index("model")
            if not panels:
                panels.append(last[:, :width])  # the ground truth, the same in every grid
            panels.append(last[:, col * width:(col + 1) * width])
        rows.append(np.concatenate(panels, axis=1))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(2.2 * (1 + len(evals)), 2.2 * len(rows)))
    ax.imshow(np.concatenate(rows, axis=0))
    ax.set_xticks([(i + 0.5) * rows[0].shape[1] / (1 + len(evals)) for i in range(1 + len(evals))],
                  ["ground truth", *evals])
    ax.set_yticks([])
    ax.set_title("last predicted frame, simulator mode (held-out windows)", fontsize=9)
    fig.tight_layout()
    path = out / "prediction_frames.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reward_settings(cfg: GRPOExperimentConfig) -> list[str]:
    """The reward and GRPO settings that differ from their defaults, and the pre-trained penalty's terms."""
    lines = ["Executability reward settings: " + (", ".join(f"`{o}`" for o in cfg.executability_overrides)
                                              or "the defaults (`configs/reward/executability.yaml`)") + ".",
             "GRPO settings: " + (", ".join(f"`{o}`" for o in cfg.grpo_overrides) or "the defaults") + "."]
    path = Path(cfg.output_dir) / CALIBRATION_FILE
    shares = Calibration.load(path).term_shares if path.exists() else {}
    if shares:
        lines.append("Share of the SFT model's mean penalty by weighted term (EVA eq. 8): "
                     + ", ".join(f"{k} {100 * v:.3g}%" for k, v in shares.items()) + ".")
    return [*lines, ""]


def models_section(cfg: GRPOExperimentConfig) -> list[str]:
    """The last validation record of the IDM and world-model runs that made the checkpoints, when present."""
    lines = ["## Models", ""]
    for label, ckpt in (("IDM", cfg.idm_checkpoint), ("world model (SFT)", cfg.checkpoint)):
        metrics = Path(ckpt).parent / "metrics.jsonl"
        if not metrics.exists():
            lines.append(f"- {label}: `{ckpt}` (no training log beside it)")
            continue
        last = json.loads(metrics.read_text().splitlines()[-1])
        vals = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if k.startswith("val") and isinstance(v, float))
        lines.append(f"- {label}: `{ckpt}`, {last['step']} steps in {last.get('minutes', float('nan')):.1f} min; {vals}")
    return lines + [""]


def report(cfg: GRPOExperimentConfig, evals: dict) -> str:
    out = Path(cfg.output_dir)
    curves = reward_curves(out, list(cfg.rewards))
    before = evals["before"]
    lines = ["# Post-training with verifiable rewards", "",
             f"World model `{cfg.checkpoint}` (SFT), IDM `{cfg.idm_checkpoint}`; GRPO prompts from "
             f"`{cfg.train_dataset}`, evaluation on held-out episodes of `{cfg.test_dataset}` "
             f"({before['num_windows']} windows of {before['history_frames']} history + {before['future_frames']} "
             f"predicted frames, {before['sampler']} {before['steps']} steps; {cfg.episodes_per_task} imagined "
             "episodes per task executed open loop in MuJoCo).", "",
             "What ran: (1) P_0 calibrated on the SFT model's rollouts (`executability_calibration.json`); "
             "(2) GRPO with LoRA for each reward (`grpo_<reward>/`: metrics.jsonl, TensorBoard, sample videos); "
             "(3) the same evaluation before and after (`eval_*/wm_eval.md`).", "",
             *reward_settings(cfg),
             *models_section(cfg), *dataset_section(Path(cfg.train_dataset), out, out),
             "## GRPO", "", f"![reward curves]({os.path.relpath(curves, out)})", "",
             *training_groups_section(out, list(cfg.rewards)), *selection_section(out, list(cfg.rewards)),
             "## Before and after", "",
             "| metric | before | " + " | ".join(f"after {r}" for r in cfg.rewards) + " |",
             "|---|---|" + "---|" * len(cfg.rewards)]

    def row(label: str, get) -> None:
        b = get(before)
        cells = []
        for r in cfg.rewards:
            a = get(evals[r])
            cells.append("-" if a is None else f"{a:.4g} ({_rel_change(b, a)})" if b is not None else f"{a:.4g}")
        lines.append(f"| {label} | {'-' if b is None else f'{b:.4g}'} | " + " | ".join(cells) + " |")

    def exe(k):
        return lambda e: e.get("executability", {}).get("model", {}).get(k, {}).get("mean")

    row("executability reward (EVA, higher is better)", exe("reward"))
    row("smoothness (1 + P/P_0)^-gamma, before the gates", exe("smoothness"))
    row("penalty P", exe("penalty"))
    row("jerk term (rad/s^3, Huber)", exe("jerk"))
    row("velocity-limit term P_vel (squared excess, unweighted)", exe("vel_limit"))
    row("acceleration-limit term P_acc (squared excess, unweighted)", exe("acc_limit"))
    row("velocity-limit violations (fraction of steps)", exe("vel_violation_frac"))
    row("velocity-limit violations of a gripper (fraction of steps)", exe("gripper_vel_violation_frac"))
    row("acceleration-limit violations (fraction of steps)", exe("acc_violation_frac"))
    row("motion gate (1 = moves at least the floor)", exe("motion_gate"))
    row("mean joint speed (rad/s)", exe("mean_speed"))
    row("largest joint step from the last history frame to the first prediction", exe("seam_jump"))
    row("video gate (1 = the frames move at least the floor)", exe("video_gate"))

    def video(mode, k):
        return lambda e: e["modes"][mode]["model"].get(k, {}).get("mean")

    for mode in ("planner", "simulator"):
        row(f"LPIPS vs ground truth, {mode} mode (lower is better)", video(mode, "lpips"))
        row(f"PSNR, {mode} mode (dB)", video(mode, "psnr"))
        row(f"pixel motion from the newest history frame, {mode} mode", video(mode, "motion"))
        row(f"motion agreement with the recording, {mode} mode (1 = the recorded changes)", video(mode, "agreement"))
        row(f"repetition rate, {mode} mode (still frame pairs)", video(mode, "repetition"))
    gt = before.get("executability", {}).get("ground_truth")
    if gt:
        lines += ["", f"The held-out ground-truth videos through the same IDM score {gt['reward']['mean']:.4g} "
                  f"(penalty {gt['penalty']['mean']:.4g}, jerk term {gt['jerk']['mean']:.4g}, mean joint speed "
                  f"{gt['mean_speed']['mean']:.4g} rad/s; pixel motion {before['ground_truth_motion']['mean']:.4g}).", ""]
    if "mujoco" in before:
        lines += ["## Imagined episodes executed in MuJoCo (open loop, 95% Wilson intervals)", "",
                  "| task | before | " + " | ".join(f"after {r}" for r in cfg.rewards) + " | ground-truth video |",
                  "|---|---|" + "---|" * len(cfg.rewards) + "---|"]
        for task, b in before["mujoco"].items():
            cells = [b] + [evals[r]["mujoco"][task] for r in cfg.rewards]
            lines.append(f"| {task} | " + " | ".join(
                f"{100 * c['success']:.0f}% ({100 * c['ci95'][0]:.0f}-{100 * c['ci95'][1]:.0f}), n={c['episodes']}"
                for c in cells) + f" | {100 * b['ground_truth_video_success']:.0f}% |")
        lines += ["", "Videos (ground truth | imagined): " + ", ".join(
            f"[{name} {task}](eval_{name}/imagined_{task}.mp4)" for name in evals for task in before["mujoco"]), ""]
    frames = frames_figure(out, evals)
    if frames:
        lines += [f"![predicted frames]({os.path.relpath(frames, out)})", ""]
    lines += ["Sample rollouts during GRPO: " + ", ".join(f"`grpo_{r}/videos/`" for r in cfg.rewards), ""]
    text = "\n".join(lines)
    atomic_write_text(out / "report.md", text)
    return text


def main(argv: list[str] | None = None) -> None:
    # Hydra's compose API, not @hydra.main: every stage composes its own config with it, which cannot
    # happen inside a running Hydra app. Overrides are Hydra's, e.g. output_dir=... rewards=[executability].
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    dcfg = configs.compose("grpo_experiment", list(sys.argv[1:] if argv is None else argv))
    cfg = validate(dcfg, GRPOExperimentConfig)
    save_resolved_config(dcfg, cfg.output_dir, "grpo_experiment_config.yaml")
    report(cfg, run_stages(cfg))
    log.info("report: %s", Path(cfg.output_dir) / "report.md")


if __name__ == "__main__":
    main()
