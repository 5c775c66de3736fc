"""eva-eval-wm: how well the world model predicts held-out episodes, against two baselines.

    eva-eval-wm checkpoint=runs/wm/model dataset_root=runs/idm_data/test output_dir=runs/wm_eval

For fixed, seeded windows of held-out episodes (the last H frames as history, the next N as
ground truth), in both modes (``planner``: instruction only; ``simulator``: the recorded actions
too), it compares with ground truth, per frame: PSNR, SSIM, LPIPS (AlexNet, real weights), and the
repetition rate of each predicted video. Methods, all in the same run on the same windows:
``model`` (the checkpoint), ``untrained`` (the same architecture, codec and text encoder with a
freshly initialised transformer and action encoder) and ``repeat_last`` (the last history frame,
repeated). Writes ``wm_eval.json``, ``wm_eval.md``, a plot of the metrics, and mp4 grids
(ground truth | model | repeat last) for the first windows.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import WanTransformer3DModel  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from tqdm import tqdm  # noqa: E402

from configs.run_files import atomic_write_json, atomic_write_text, save_resolved_config  # noqa: E402
from configs.schema import EvalWMConfig, validate  # noqa: E402
from sim.dataset import LeRobotDataset  # noqa: E402
from sim.video import write_mp4  # noqa: E402
from world_model.data import ClipWindows  # noqa: E402
from world_model.metrics import lpips_model, psnr, repetition_rate, ssim  # noqa: E402
from world_model.model import ActionEncoder  # noqa: E402
from world_model.pipeline import WorldModelPipeline  # noqa: E402

log = logging.getLogger(__name__)

METHODS = ("model", "untrained", "repeat_last")
MODES = ("planner", "simulator")
METRICS = ("psnr", "ssim", "lpips", "repetition")


def untrained_copy(pipe: WorldModelPipeline, seed: int) -> WorldModelPipeline:
    """The same pipeline with a freshly initialised transformer and (zero) action encoder."""
    fresh = copy.copy(pipe)
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel.from_config(pipe.transformer.config).eval()
    action_encoder = None
    if pipe.action_encoder is not None:
        action_encoder = ActionEncoder.from_config(pipe.action_encoder.config).eval()
        action_encoder.load_state_dict({**action_encoder.state_dict(),
                                        "action_mean": pipe.action_encoder.action_mean,
                                        "action_std": pipe.action_encoder.action_std})
    fresh.register_modules(transformer=transformer, action_encoder=action_encoder)
    return fresh


def frame_metrics(pred: torch.Tensor, truth: torch.Tensor, lp) -> dict[str, np.ndarray]:
    """Per-window means over frames: (B,) arrays."""
    flat_p, flat_t = pred.flatten(0, 1), truth.flatten(0, 1)
    b, t = pred.shape[:2]
    with torch.no_grad():
        per_frame = {"psnr": psnr(flat_p, flat_t), "ssim": ssim(flat_p, flat_t), "lpips": lp(flat_p, flat_t)}
    out = {k: v.view(b, t).mean(1).numpy() for k, v in per_frame.items()}
    out["repetition"] = repetition_rate(pred, tol=1.0 / 255).numpy()
    return out


def evaluate_wm(cfg: EvalWMConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = WorldModelPipeline.from_pretrained(cfg.checkpoint)
    if pipe.action_encoder is None:
        raise ValueError(f"{cfg.checkpoint}: no action encoder; the simulator mode needs one")
    pipes = {"model": pipe, "untrained": untrained_copy(pipe, cfg.seed)}
    ds = LeRobotDataset(cfg.dataset_root)
    h = pipe.config.num_history_frames
    windows = ClipWindows(ds, list(range(len(ds))), cfg.camera, pipe.config.fps, h + cfg.num_future_frames,
                          tuple(pipe.config.image_size))
    episodes, starts = windows.sample_index(np.random.default_rng(cfg.seed), cfg.num_windows)
    lp = lpips_model()

    scores = {m: {k: {s: [] for s in METRICS} for k in METHODS} for m in MODES}
    grids = []
    bar = tqdm(total=len(MODES) * cfg.num_windows, desc="eval wm", unit="window")
    for i in range(0, cfg.num_windows, cfg.batch_size):
        sl = slice(i, min(i + cfg.batch_size, cfg.num_windows))
        frames, actions, texts = windows.batch(episodes[sl], starts[sl])
        history, truth = frames[:, :h], frames[:, h:]
        seeds = [cfg.seed + j for j in range(sl.start, sl.stop)]
        for mode in MODES:
            preds = {"repeat_last": history[:, -1:].expand_as(truth)}
            for name, p in pipes.items():
                preds[name] = p.rollout(history, texts, actions if mode == "simulator" else None,
                                        num_frames=cfg.num_future_frames, steps=cfg.steps, seed=seeds,
                                        sampler=cfg.sampler, flow_shift=cfg.flow_shift)
            for name, pred in preds.items():
                for k, v in frame_metrics(pred, truth, lp).items():
                    scores[mode][name][k].extend(v.tolist())
            if mode == "simulator" and len(grids) < cfg.num_videos:
                grids.extend(torch.cat([truth, preds["model"], preds["repeat_last"]], dim=-1)[:cfg.num_videos - len(grids)])
            bar.update(sl.stop - sl.start)
    bar.close()

    summary = {"checkpoint": cfg.checkpoint, "dataset": cfg.dataset_root, "num_windows": cfg.num_windows,
               "history_frames": h, "future_frames": cfg.num_future_frames, "steps": cfg.steps,
               "sampler": cfg.sampler, "modes": {}}
    for mode in MODES:
        summary["modes"][mode] = {
            name: {k: {"mean": float(np.mean(v)), "sem": float(np.std(v) / np.sqrt(len(v)))} for k, v in s.items()}
            for name, s in scores[mode].items()}
    atomic_write_json(out / "wm_eval.json", summary)
    atomic_write_text(out / "wm_eval.md", markdown(summary))
    plot(summary, out / "wm_eval.png")
    for n, grid in enumerate(grids):
        video = (grid.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        write_mp4(out / f"grid_{n}.mp4", video, fps=pipe.config.fps)
    log.info("wrote %s", out / "wm_eval.md")
    return summary


def markdown(summary: dict) -> str:
    lines = [f"World-model evaluation: {summary['num_windows']} held-out windows, {summary['history_frames']} history "
             f"+ {summary['future_frames']} predicted frames, {summary['sampler']} {summary['steps']} steps "
             "(mean +- standard error).", ""]
    for mode, methods in summary["modes"].items():
        lines += [f"**{mode}**", "", "| method | PSNR (dB) | SSIM | LPIPS | repetition rate |", "|---|---|---|---|---|"]
        for name, m in methods.items():
            lines.append(f"| {name} | " + " | ".join(f"{m[k]['mean']:.4g} +- {m[k]['sem']:.2g}" for k in METRICS)
                         + " |")
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, metric in zip(axes, ("psnr", "ssim", "lpips")):
        for j, mode in enumerate(MODES):
            methods = summary["modes"][mode]
            x = np.arange(len(METHODS)) + (j - 0.5) * 0.35
            ax.bar(x, [methods[m][metric]["mean"] for m in METHODS], 0.35,
                   yerr=[methods[m][metric]["sem"] for m in METHODS], label=mode)
        ax.set_xticks(np.arange(len(METHODS)), METHODS, fontsize=8)
        ax.set_title(metric.upper() + (" (lower is better)" if metric == "lpips" else ""))
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@hydra.main(version_base=None, config_path="../configs", config_name="eval_wm")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, EvalWMConfig)
    save_resolved_config(dcfg, cfg.output_dir, "eval_wm_config.yaml")
    evaluate_wm(cfg)


if __name__ == "__main__":
    main()
