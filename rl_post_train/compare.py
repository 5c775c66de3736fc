"""eva-grpo-compare: several eva-grpo-experiment runs side by side, seeds of one setting pooled.

    eva-grpo-compare 'experiments=[runs/grpo_exp_a,runs/grpo_exp_a_seed1,runs/grpo_exp_b]' output=runs/grpo_compare

Reads each experiment's held-out evaluations (``eval_before/wm_eval.json`` and ``eval_<reward>/wm_eval.json``)
and its resolved config (``grpo_experiment_config.yaml``), and writes ``compare.md`` and ``compare.png``:

- one row per run: the relative change of the executability reward, jerk, both kinds of limit violation and
  LPIPS in both modes, the repetition rate after, MuJoCo success, and which post-training targets it misses;
- one row per setting (runs whose overrides differ only in the GRPO ``seed``): the mean, spread and range of
  the reward change over its seeds, and how many of its runs meet every target; a note where the runs of one
  setting start from different before evaluations (a retrained base model at the same path, another held-out set).

A single 30-minute run on the tiny preset is one draw: the same settings have moved the reward by tens of
percent in either direction from seed to seed, so a setting is judged here by its seeds, not its best run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import hydra
import matplotlib
import numpy as np
import yaml
from omegaconf import DictConfig

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from configs.run_files import atomic_write_text  # noqa: E402
from configs.schema import GRPOCompareConfig, validate  # noqa: E402

log = logging.getLogger(__name__)

SEED_PREFIX = "seed="
# (column, what it reads from wm_eval.json): relative changes after vs before
CHANGES = {
    "reward": ("executability", "reward"),
    "jerk": ("executability", "jerk"),
    "velocity violations": ("executability", "vel_violation_frac"),
    "acceleration violations": ("executability", "acc_violation_frac"),
    "LPIPS planner": ("planner", "lpips"),
    "LPIPS simulator": ("simulator", "lpips"),
}


@dataclass
class RunResult:
    name: str
    setting: tuple[str, ...]  # checkpoint and overrides, the seed left out
    seed: int
    changes: dict[str, float]  # relative change per CHANGES column
    reward_before: float
    reward_after: float
    reward_sem: tuple[float, float]  # standard errors of the held-out mean, before and after
    repetition_after: float  # planner mode
    mujoco: dict[str, tuple[float, float]]  # task -> success before, after
    missed: list[str]  # targets not met


def _read_json(path: Path, make: str) -> dict:
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; {make}")
    return json.loads(path.read_text())


def _mean(evaluation: dict, source: str, key: str) -> float:
    if source == "executability":
        block = evaluation.get("executability", {}).get("model", {})
    else:
        block = evaluation["modes"][source]["model"]
    if key not in block:
        raise KeyError(f"{evaluation.get('checkpoint', '?')}: no '{key}' in the {source} block of wm_eval.json "
                       "(an evaluation without the executability scorer? rerun eva-grpo-experiment)")
    return float(block[key]["mean"])


def rel_change(before: float, after: float) -> float:
    """(after - before) / |before|; 0 when both are 0, inf when only before is."""
    if before == 0:
        return 0.0 if after == 0 else float("inf")
    return (after - before) / abs(before)


def load_run(directory: Path, reward: str, min_reward_gain: float, max_lpips_rise: float) -> RunResult:
    make = f"run eva-grpo-experiment output_dir={directory} rewards=[{reward}] first"
    config = directory / "grpo_experiment_config.yaml"
    if not config.exists():
        raise FileNotFoundError(f"{config}: missing; {make}")
    cfg = yaml.safe_load(config.read_text())
    before = _read_json(directory / "eval_before" / "wm_eval.json", make)
    after = _read_json(directory / f"eval_{reward}" / "wm_eval.json", make)
    overrides = [*cfg.get("executability_overrides", []), *cfg.get("grpo_overrides", [])]
    seeds = [o for o in overrides if o.startswith(SEED_PREFIX)]
    setting = (f"checkpoint={cfg['checkpoint']}", *sorted(o for o in overrides if o not in seeds))
    changes = {col: rel_change(_mean(before, *src), _mean(after, *src)) for col, src in CHANGES.items()}
    mujoco = {task: (float(b["success"]), float(after.get("mujoco", {}).get(task, {}).get("success", np.nan)))
              for task, b in before.get("mujoco", {}).items()}
    missed = []
    if not changes["reward"] >= min_reward_gain:
        missed.append(f"reward < +{100 * min_reward_gain:.0f}%")
    for col in ("jerk", "velocity violations", "acceleration violations"):
        b, a = _mean(before, *CHANGES[col]), _mean(after, *CHANGES[col])
        if not (a < b or a == b == 0):
            missed.append(f"{col} not down")
    for col in ("LPIPS planner", "LPIPS simulator"):
        if not changes[col] <= max_lpips_rise:
            missed.append(f"{col} > +{100 * max_lpips_rise:.0f}%")
    if any(not a >= b for b, a in mujoco.values()):  # NaN (a task missing after) counts as down
        missed.append("MuJoCo success down")
    exe_b, exe_a = before["executability"]["model"]["reward"], after["executability"]["model"]["reward"]
    return RunResult(name=directory.name, setting=setting,
                     seed=int(seeds[-1][len(SEED_PREFIX):]) if seeds else 0, changes=changes,
                     reward_before=float(exe_b["mean"]), reward_after=float(exe_a["mean"]),
                     reward_sem=(float(exe_b["sem"]), float(exe_a["sem"])),
                     repetition_after=_mean(after, "planner", "repetition"), mujoco=mujoco, missed=missed)


def setting_labels(runs: list[RunResult]) -> dict[tuple[str, ...], str]:
    """A short label per setting: the overrides not shared by every run ("the shared settings only" when there
    are none)."""
    common = set.intersection(*(set(r.setting) for r in runs))
    labels = {}
    for r in runs:
        own = [o for o in r.setting if o not in common]
        labels[r.setting] = ", ".join(f"`{o}`" for o in own) if own else "the shared settings only"
    return labels


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%" if np.isfinite(x) else "n/a"


def compare_markdown(runs: list[RunResult], cfg: GRPOCompareConfig) -> str:
    labels = setting_labels(runs)
    common = sorted(set.intersection(*(set(r.setting) for r in runs)))
    lines = ["# GRPO runs compared", "",
             f"{len(runs)} runs of `eva-grpo-experiment`, reward `{cfg.reward}`, each scored on its own held-out "
             "evaluation before and after (`eval_before/`, `eval_<reward>/`). Settings shared by every run: "
             + (", ".join(f"`{o}`" for o in common) or "none") + ".", "",
             f"Targets: executability reward +{100 * cfg.min_reward_gain:.0f}% or more; jerk, velocity and "
             f"acceleration violations down; LPIPS (planner and simulator mode) up by at most "
             f"{100 * cfg.max_lpips_rise:.0f}%; MuJoCo success not down on any task.", "",
             "## Runs", "",
             "| run | setting | seed | reward (before -> after, +-SEM) | " + " | ".join(list(CHANGES)[1:])
             + " | repetition after | MuJoCo success after | targets missed |",
             "|---|---|---|---|" + "---|" * (len(CHANGES) - 1) + "---|---|---|"]
    for r in runs:
        mj = ", ".join(f"{100 * a:.0f}%" for _, a in r.mujoco.values()) or "-"
        lines.append(f"| `{r.name}` | {labels[r.setting]} | {r.seed} | {_pct(r.changes['reward'])} "
                     f"({r.reward_before:.3f}+-{r.reward_sem[0]:.3f} -> {r.reward_after:.3f}+-{r.reward_sem[1]:.3f}) | "
                     + " | ".join(_pct(r.changes[c]) for c in list(CHANGES)[1:])
                     + f" | {r.repetition_after:.2f} | {mj} | {'; '.join(r.missed) or 'none'} |")
    lines += ["", "## Settings over their seeds", "",
              "| setting | runs (seeds) | reward change: mean | sd | min .. max | runs meeting every target |",
              "|---|---|---|---|---|---|"]
    notes = []
    for setting, group in group_by_setting(runs).items():
        gains = np.array([r.changes["reward"] for r in group])
        sd = f"{100 * gains.std(ddof=1):.1f} pt" if len(gains) > 1 else "-"
        lines.append(f"| {labels[setting]} | {len(group)} ({', '.join(str(r.seed) for r in group)}) | "
                     f"{_pct(gains.mean())} | {sd} | {_pct(gains.min())} .. {_pct(gains.max())} | "
                     f"{sum(not r.missed for r in group)} of {len(group)} |")
        befores = sorted({f"{r.reward_before:.4f}" for r in group})
        if len(befores) > 1:  # same checkpoint path and overrides, but not the same model or held-out set
            notes.append(f"The runs of {labels[setting]} start from different before rewards ({', '.join(befores)}): "
                         "their checkpoint or held-out windows differ, so their seeds do not pool cleanly.")
    for note in notes:
        log.warning(note)
        lines += ["", note]
    lines += ["", "![reward change per run](compare.png)", ""]
    return "\n".join(lines)


def group_by_setting(runs: list[RunResult]) -> dict[tuple[str, ...], list[RunResult]]:
    groups: dict[tuple[str, ...], list[RunResult]] = {}
    for r in runs:
        groups.setdefault(r.setting, []).append(r)
    return groups


def compare_figure(runs: list[RunResult], cfg: GRPOCompareConfig, path: Path) -> None:
    """The reward change of every run, one column per setting, with the target and zero lines."""
    labels = setting_labels(runs)
    groups = group_by_setting(runs)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.4 * len(groups) + 2), 4))
    for i, group in enumerate(groups.values()):
        gains = [100 * r.changes["reward"] for r in group]
        ax.scatter([i] * len(gains), gains, color=["#2ca02c" if not r.missed else "#1f77b4" for r in group], zorder=3)
        ax.hlines(np.mean(gains), i - 0.25, i + 0.25, color="k", lw=1)
    ax.axhline(100 * cfg.min_reward_gain, color="#d62728", ls="--", lw=1, label="target")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([labels[s].replace("`", "").replace(", ", "\n") for s in groups], fontsize=7)
    ax.set_ylabel("held-out executability reward change (%)")
    ax.set_title("one dot per run (green: every target met), bar: mean over seeds", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def compare(cfg: GRPOCompareConfig) -> Path:
    runs = [load_run(Path(d), cfg.reward, cfg.min_reward_gain, cfg.max_lpips_rise) for d in cfg.experiments]
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    compare_figure(runs, cfg, out / "compare.png")
    text = compare_markdown(runs, cfg)
    atomic_write_text(out / "compare.md", text)
    print(text)
    log.info("wrote %s", out / "compare.md")
    return out / "compare.md"


@hydra.main(version_base=None, config_path="../configs", config_name="grpo_compare")
def main(dcfg: DictConfig) -> None:
    compare(validate(dcfg, GRPOCompareConfig))


if __name__ == "__main__":
    main()
