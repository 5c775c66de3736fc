"""eva-eval-idm: how well the IDM reproduces the expert from ground-truth video.

    eva-eval-idm checkpoint=runs/idm/model dataset_root=runs/idm_data/test

(a) Offline: decode every held-out episode's video at the IDM's frame rate, per-joint MAE
    against the recorded actions at the same frames, and a plot of decoded vs true joint
    trajectories for each arm (as in EVA's figure 2).
(b) Replay: interpolate the decoded actions to the control rate and execute them open loop
    in the MuJoCo task from the episode's seed; success per task (EVA table 4), next to the
    replay of the recorded actions themselves (the expert, through the same code path) and
    of the recorded actions taken at the IDM's frame rate and interpolated like the decoded
    ones: the ceiling of any IDM at that frame rate.
Writes ``idm_eval.json``, ``idm_eval.md`` and plots to ``output_dir``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from tqdm import tqdm  # noqa: E402

from configs.constants import ACTION_KEY, LEFT_ARM, LEFT_GRIPPER, RIGHT_ARM, RIGHT_GRIPPER  # noqa: E402
from configs.embodiment import Embodiment  # noqa: E402
from configs.run_files import atomic_write_json, atomic_write_text  # noqa: E402
from configs.run_files import save_resolved_config  # noqa: E402
from configs.schema import EvalIDMConfig, RenderConfig, validate  # noqa: E402
from idm.decode import decode_video, to_control_rate  # noqa: E402
from idm.model import InverseDynamicsModel  # noqa: E402
from sim.dataset import LeRobotDataset  # noqa: E402
from sim.rollout import execute_open_loop  # noqa: E402
from sim.stats import wilson_interval  # noqa: E402
from sim.tasks import make_task  # noqa: E402

log = logging.getLogger(__name__)


def plot_trajectories(decoded: np.ndarray, true: np.ndarray, fps: float, joint_names, title: str, path: Path):
    t = np.arange(len(true)) / fps
    fig, axes = plt.subplots(2, 7, figsize=(18, 5), sharex=True)
    for row, (arm, grip) in enumerate(((LEFT_ARM, LEFT_GRIPPER), (RIGHT_ARM, RIGHT_GRIPPER))):
        idx = list(range(arm.start, arm.stop)) + [grip]
        for col, j in enumerate(idx):
            ax = axes[row, col]
            ax.plot(t, true[:, j], color="k", lw=1.5, label="ground truth")
            ax.plot(t, decoded[:, j], color="#d62728", lw=1.2, ls="--", label="IDM decoded")
            ax.set_title(joint_names[j], fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0, 0].legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("time (s)", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate_idm(cfg: EvalIDMConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    model = InverseDynamicsModel.from_pretrained(cfg.checkpoint, embodiment=embodiment)
    mc = model.config
    ds = LeRobotDataset(cfg.dataset_root, expected_embodiment=embodiment.name,
                        expected_fps=int(embodiment.control_rate_hz))
    step = ds.fps // mc.fps
    if ds.fps % mc.fps:
        raise ValueError(f"IDM fps {mc.fps} does not divide the dataset fps {ds.fps}")
    envs = {t: make_task(cfg.tasks[t], embodiment, RenderConfig(cameras=["cam_high"])) for t in cfg.tasks}
    by_task: dict[str, list[int]] = {}
    for e in ds.episodes:
        if e.get("eva/task") in cfg.tasks and len(by_task.setdefault(e["eva/task"], [])) < cfg.max_episodes_per_task:
            by_task[e["eva/task"]].append(e["episode_index"])
    missing = [t for t in cfg.tasks if t not in by_task]
    if missing:
        raise ValueError(f"{ds.root}: no episodes for tasks {missing}")
    results: dict[str, dict] = {}
    total = sum(len(v) for v in by_task.values())
    bar = tqdm(total=total, desc="eval idm", unit="ep")
    for task, eps in by_task.items():
        env = envs[task]
        errors, replay, expert, expert_at_fps = [], [], [], []
        for n, ep in enumerate(eps):
            row = ds.episodes[ep]
            true = ds.episode_table(ep)[ACTION_KEY]
            true_at_fps = true[::step]  # the recorded actions at the IDM's frame rate, aligned with its frames
            video = {c: torch.from_numpy(ds.episode_video(ep, c)[::step]).permute(0, 3, 1, 2)[None]
                     for c in mc.cameras}
            decoded = decode_video(model, video)[0].numpy()
            errors.append(np.abs(decoded - true_at_fps))
            control = to_control_rate(decoded, mc.fps, embodiment.control_rate_hz)
            ok, steps = execute_open_loop(env, row["eva/seed"], control, cfg.hold_steps)
            ok_true, _ = execute_open_loop(env, row["eva/seed"], true, cfg.hold_steps)
            ok_true_at_fps, _ = execute_open_loop(
                env, row["eva/seed"], to_control_rate(true_at_fps, mc.fps, embodiment.control_rate_hz), cfg.hold_steps)
            replay.append({"episode_index": ep, "seed": row["eva/seed"], "success": ok, "steps": steps})
            if cfg.ablations:  # which half fails: decoded arms with recorded grippers, and the reverse
                n_ctrl = min(len(control), len(true))
                grippers = np.isin(np.arange(control.shape[1]), [LEFT_GRIPPER, RIGHT_GRIPPER])
                mixed = {"decoded_arms": np.where(grippers, true[:n_ctrl], control[:n_ctrl]),
                         "decoded_grippers": np.where(grippers, control[:n_ctrl], true[:n_ctrl])}
                for name, acts in mixed.items():
                    replay[-1][name] = execute_open_loop(env, row["eva/seed"], acts, cfg.hold_steps)[0]
            expert.append(ok_true)
            expert_at_fps.append(ok_true_at_fps)
            if n < cfg.plot_episodes:
                plot_trajectories(decoded, true_at_fps, mc.fps, embodiment.joint_names,
                                  f"{task}, seed {row['eva/seed']}: decoded vs ground-truth joints",
                                  out / f"trajectories_{task}_{n}.png")
            bar.update(1)
            bar.set_postfix(task=task, replay=f"{sum(r['success'] for r in replay)}/{len(replay)}")
        mae = np.concatenate(errors).mean(0)
        s = sum(r["success"] for r in replay)
        lo, hi = wilson_interval(s, len(replay))
        results[task] = {
            "episodes": len(replay), "replay_success": s / len(replay), "replay_ci95": [lo, hi],
            "expert_success": float(np.mean(expert)), "expert_at_idm_fps_success": float(np.mean(expert_at_fps)),
            "mae_per_joint": dict(zip(embodiment.joint_names, mae.tolist())),
            "mae_arm_joints_rad": float(np.delete(mae, [LEFT_GRIPPER, RIGHT_GRIPPER]).mean()),
            "mae_gripper": float(mae[[LEFT_GRIPPER, RIGHT_GRIPPER]].mean()), "per_episode": replay,
        }
        if cfg.ablations:
            for name in ("decoded_arms", "decoded_grippers"):
                results[task][f"replay_success_{name}"] = float(np.mean([r[name] for r in replay]))
    bar.close()
    for env in envs.values():
        env.close_env()
    summary = {"checkpoint": cfg.checkpoint, "dataset": cfg.dataset_root, "idm_fps": mc.fps,
               "control_hz": embodiment.control_rate_hz, "per_task": results}
    atomic_write_json(out / "idm_eval.json", summary)
    lines = [f"| task | replay success (95% CI) | expert replay | expert at {mc.fps} fps, interpolated | ratio "
             "| arm MAE (rad) | gripper MAE |",
             "|---|---|---|---|---|---|---|"]
    if cfg.ablations:
        lines[0] += " decoded arms only | decoded grippers only |"
        lines[1] += "---|---|"
    for task, r in results.items():
        ratio = r["replay_success"] / r["expert_success"] if r["expert_success"] else float("nan")
        lines.append(f"| {task} | {100 * r['replay_success']:.0f}% ({100 * r['replay_ci95'][0]:.0f}-"
                     f"{100 * r['replay_ci95'][1]:.0f}%), n={r['episodes']} | {100 * r['expert_success']:.0f}% | "
                     f"{100 * r['expert_at_idm_fps_success']:.0f}% | {ratio:.2f} | {r['mae_arm_joints_rad']:.4f} | {r['mae_gripper']:.4f} |")
        if cfg.ablations:
            lines[-1] += (f" {100 * r['replay_success_decoded_arms']:.0f}% |"
                          f" {100 * r['replay_success_decoded_grippers']:.0f}% |")
    atomic_write_text(out / "idm_eval.md", "\n".join(lines) + "\n")
    log.info("\n%s", "\n".join(lines))
    return summary


@hydra.main(version_base=None, config_path="../configs", config_name="eval_idm")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, EvalIDMConfig)
    save_resolved_config(dcfg, cfg.output_dir, "eval_idm_config.yaml")
    evaluate_idm(cfg)


if __name__ == "__main__":
    main()
