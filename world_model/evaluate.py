"""eva-eval-wm: how well the world model predicts held-out episodes, against two baselines.

    eva-eval-wm checkpoint=runs/wm/model dataset_root=runs/idm_data/test output_dir=runs/wm_eval

For fixed, seeded windows of held-out episodes (the last H frames as history, the next N as
ground truth), in both modes (``planner``: instruction only; ``simulator``: the recorded actions
too), it compares with ground truth, per frame: PSNR, SSIM, LPIPS (AlexNet, real weights), and the
repetition rate of each predicted video. Methods, all in the same run on the same windows:
``model`` (the checkpoint), ``untrained`` (the same architecture, codec and text encoder with a
freshly initialised transformer and action encoder), ``repeat_last`` (the last history frame,
repeated) and ``codec`` (the ground truth encoded and decoded by the world model's latent codec: the
best any model in that latent space can do, which measures the codec's reconstruction error). Writes ``wm_eval.json``, ``wm_eval.md``, a plot of the metrics, and mp4 grids
(ground truth | each method, in the order above) for the first windows.

With ``idm_checkpoint``: the executability of the planner-mode rollouts of every method and of the ground
truth, decoded by the IDM (EVA's penalty terms, limit violations, mean joint speed, and the reward when
``reward.calibration_file`` holds P_0). With ``episodes_per_task`` > 0: whole held-out episodes imagined
from their first frame, decoded and executed open loop in MuJoCo (``world_model.imagine``), success per
task with 95% intervals, next to the ground-truth video through the same decoder.

    eva-eval-wm idm_checkpoint=runs/idm/model episodes_per_task=50 \
        reward.calibration_file=runs/grpo_executability/executability_calibration.json
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

from configs.constants import (RESIDUAL_PREDICTIONS, STATIC_TOKEN_TOL, STILLNESS_BANDS_DB,  # noqa: E402
                               WM_EVAL_METHODS)
from configs.embodiment import Embodiment  # noqa: E402
from configs.run_files import atomic_write_json, atomic_write_text, save_resolved_config  # noqa: E402
from configs.schema import EvalWMConfig, validate  # noqa: E402
from idm.decode import decode_for_execution, decode_video  # noqa: E402
from idm.model import InverseDynamicsModel  # noqa: E402
from rl_post_train.rewards import Calibration, ExecutabilityReward  # noqa: E402
from sim.dataset import LeRobotDataset  # noqa: E402
from sim.rollout import execute_open_loop  # noqa: E402
from sim.stats import wilson_interval  # noqa: E402
from sim.tasks import make_task  # noqa: E402
from sim.video import write_mp4  # noqa: E402
from world_model.data import ClipWindows  # noqa: E402
from world_model.imagine import success_of_imagined_episodes  # noqa: E402
from world_model.latents import decode_latents, encode_video, with_anchor  # noqa: E402
from world_model.metrics import lpips_model, motion, motion_agreement, psnr, repetition_rate, ssim  # noqa: E402
from world_model.model import ActionEncoder, zero_output_layer  # noqa: E402
from world_model.pipeline import RolloutInputs, WorldModelPipeline, load_world_model  # noqa: E402

log = logging.getLogger(__name__)

METHODS = WM_EVAL_METHODS
MODES = ("planner", "simulator")
METRICS = ("psnr", "ssim", "lpips", "repetition", "motion", "agreement")
PAIRED_METRICS = ("psnr", "ssim", "lpips")  # per-frame scores, compared window by window
# executability of IDM-decoded planner rollouts (rl_post_train.rewards.ExecutabilityReward.penalty)
EXEC_METRICS = ("reward", "smoothness", "motion_gate", "video_gate", "penalty", "jerk", "acc_smooth", "vel_limit",
                "acc_limit", "vel_violation_frac", "gripper_vel_violation_frac", "acc_violation_frac", "mean_speed",
                "seam_jump")


def untrained_copy(pipe: WorldModelPipeline, seed: int) -> WorldModelPipeline:
    """The same pipeline with a freshly initialised transformer and (zero) action encoder."""
    fresh = copy.copy(pipe)
    torch.manual_seed(seed)
    transformer = WanTransformer3DModel.from_config(pipe.transformer.config).eval()
    if pipe.config.get("prediction", "velocity") in RESIDUAL_PREDICTIONS:
        zero_output_layer(transformer)  # as build_pipeline starts it: the newest frame held still
    action_encoder = None
    if pipe.action_encoder is not None:
        action_encoder = ActionEncoder.from_config(pipe.action_encoder.config).eval()
        action_encoder.load_state_dict({**action_encoder.state_dict(),
                                        "action_mean": pipe.action_encoder.action_mean,
                                        "action_std": pipe.action_encoder.action_std})
    fresh.register_modules(transformer=transformer, action_encoder=action_encoder)
    return fresh


@torch.no_grad()
def denoiser_error_sums(pipe: WorldModelPipeline, clip: torch.Tensor, inputs: RolloutInputs, mode: str,
                        sigmas: list[float]) -> dict[tuple[str, float], np.ndarray]:
    """Where the denoiser fails: one model call per noise level on the true future latents noised to ``sigma``
    (history clean, the rollout's own noise). ``clip``: the latents of the whole window (anchor, history,
    future); ``inputs``: the rollout's prepared conditioning in ``mode``. Per (mode, sigma): the clean-latent
    squared error summed over static and over moving future latent positions (static: no channel moves more
    than ``STATIC_TOKEN_TOL`` from the newest history latent), their counts, and copying's error on the moving
    ones (copying is exact on static ones). Sums, to pool over batches (``denoiser_summary``)."""
    n_hist = inputs.hist_latents.shape[2]
    future = clip[:, :, n_hist:]
    change = future - inputs.hist_latents[:, :, -1:]
    static = (change.abs().amax(1, keepdim=True) <= STATIC_TOKEN_TOL).expand_as(change)
    sums = {}
    for s in sigmas:
        noisy = torch.cat([inputs.hist_latents, (1 - s) * future + s * inputs.noise], dim=2)
        clean = noisy[:, :, n_hist:] - s * pipe.predict_velocity(noisy, s, inputs)[:, :, n_hist:]
        err = (clean - future) ** 2
        sums[(mode, s)] = np.array([err[static].sum().item(), static.sum().item(), err[~static].sum().item(),
                                    (~static).sum().item(), (change[~static] ** 2).sum().item()])
    return sums


def denoiser_summary(sums: dict[tuple[str, float], np.ndarray]) -> dict[str, list[dict[str, float]]]:
    out = {mode: [] for mode in MODES}
    for (mode, s), (e_static, n_static, e_moving, n_moving, copy_moving) in sorted(sums.items()):
        out[mode].append({"sigma": s, "static_fraction": n_static / (n_static + n_moving),
                          "static_mse": e_static / max(n_static, 1), "moving_mse": e_moving / max(n_moving, 1),
                          "copy_moving_mse": copy_moving / max(n_moving, 1)})
    return out


def frame_metrics(pred: torch.Tensor, truth: torch.Tensor, newest: torch.Tensor, lp) -> dict[str, np.ndarray]:
    """PSNR, SSIM, LPIPS and motion (from ``newest``, the newest history frame) of every predicted frame, (B, T)
    arrays; repetition rate and motion agreement with the recording per window, (B,)."""
    flat_p, flat_t = pred.flatten(0, 1), truth.flatten(0, 1)
    b, t = pred.shape[:2]
    with torch.no_grad():
        per_frame = {"psnr": psnr(flat_p, flat_t), "ssim": ssim(flat_p, flat_t), "lpips": lp(flat_p, flat_t)}
    out = {k: v.view(b, t).numpy() for k, v in per_frame.items()}
    out["repetition"] = repetition_rate(pred, tol=1.0 / 255).numpy()
    out["motion"] = motion(pred, newest).numpy()
    out["agreement"] = motion_agreement(pred, truth, newest).numpy()
    return out


def mean_sem(values) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": float(v.mean()), "sem": float(v.std() / np.sqrt(len(v)))}


def paired_difference(model: dict[str, list], baseline: dict[str, list]) -> dict[str, dict[str, float]]:
    """Per metric, the model's score minus the baseline's on the same windows (mean and standard error of the
    paired differences, far tighter than the two means' errors) and the fraction of windows the model wins."""
    out = {}
    for k in PAIRED_METRICS:
        sign = -1 if k == "lpips" else 1
        d = np.asarray(model[k], dtype=np.float64) - np.asarray(baseline[k], dtype=np.float64)
        out[k] = {**mean_sem(d), "model_better": float((sign * d > 0).mean())}
    return out


def by_stillness(model_psnr, repeat_psnr) -> list[dict[str, float | None]]:
    """The model's PSNR minus repeat-last's over every (window, predicted frame), split into bands of repeat-last's
    PSNR (``STILLNESS_BANDS_DB``): per band its share of the frames, the mean difference there, and its
    contribution to the overall mean difference (the contributions sum to it). Per-frame PSNR is a log error, so a
    few nearly still frames, where copying is almost exact, can outweigh many where the arm moves."""
    r = np.asarray(repeat_psnr, dtype=np.float64).ravel()
    d = np.asarray(model_psnr, dtype=np.float64).ravel() - r
    edges = (None, *STILLNESS_BANDS_DB, None)  # open ends: None (JSON null)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (r >= (-np.inf if lo is None else lo)) & (r < (np.inf if hi is None else hi))
        rows.append({"from_db": lo, "to_db": hi, "share": float(m.mean()),
                     "mean": float(d[m].mean()) if m.any() else None, "contribution": float(d[m].sum() / d.size)})
    return rows


def executability(exe: ExecutabilityReward, idm: InverseDynamicsModel, history: torch.Tensor, pred: torch.Tensor,
                  truth: torch.Tensor, recorded: torch.Tensor, fps: int) -> dict[str, np.ndarray]:
    """EVA's penalty terms (and reward, when calibrated) of the IDM-decoded actions of history + prediction;
    ``truth``: the recorded future frames (the video gate); ``recorded``: the window's commanded actions from
    the last history frame on (the recorded motion gate)."""
    actions = decode_video(idm, torch.cat([history, pred], dim=1))[:, history.shape[1] - 1:]
    if exe.calibration is None:
        parts = exe.penalty(actions, fps)
    else:
        r = exe(actions, fps, recorded, newest=history[:, -1:], pred=pred, truth=truth)  # penalty terms included
        parts = {**r.components, "reward": r.total}
    return {k: parts[k].numpy() for k in EXEC_METRICS if k in parts}


def execute_imagined(cfg: EvalWMConfig, pipe: WorldModelPipeline, idm: InverseDynamicsModel, embodiment: Embodiment,
                     ds: LeRobotDataset, out: Path) -> dict:
    """Imagine each held-out episode from its first frame, decode, execute open loop from its seed.

    Next to it, the same episodes' ground-truth videos decoded and executed the same way (the IDM's own
    ceiling). The imagined length is the recorded episode's length at the world model's frame rate.
    """
    fps, h = pipe.config.fps, pipe.config.num_history_frames
    step = ds.fps // fps
    result = {}
    bar = tqdm(total=cfg.episodes_per_task * len(cfg.tasks), desc="imagined episodes", unit="ep")
    for task in cfg.tasks:
        eps = [e["episode_index"] for e in ds.episodes if e.get("eva/task") == task][:cfg.episodes_per_task]
        if not eps:
            raise ValueError(f"{ds.root}: no episodes of task '{task}'")
        env = make_task(cfg.tasks[task], embodiment, None)  # instructions come from the dataset
        model_ok, truth_ok = [], []
        for i in range(0, len(eps), cfg.batch_size):
            batch = eps[i:i + cfg.batch_size]
            videos = [torch.from_numpy(ds.episode_video(e, cfg.camera)[::step]).permute(0, 3, 1, 2).float() / 255
                      for e in batch]
            seeds = [int(ds.episodes[e]["eva/seed"]) for e in batch]
            length = max(len(v) for v in videos) - 1
            ok, imagined = success_of_imagined_episodes(
                pipe, idm, embodiment, env, torch.stack([v[0] for v in videos]), [ds.instruction(e) for e in batch],
                seeds, length, cfg.hold_steps, chunk=cfg.num_future_frames, seed=cfg.seed + i,
                **cfg.sampling_kwargs())
            model_ok += ok
            for v, s in zip(videos, seeds):  # the ground-truth video through the same decoder and executor
                control = decode_for_execution(idm, torch.cat([v[:1].expand(h - 1, -1, -1, -1), v])[None], h,
                                               embodiment.control_rate_hz)[0]
                truth_ok.append(execute_open_loop(env, s, control, cfg.hold_steps)[0])
            if i == 0:
                n = min(len(videos[0]) + h - 1, imagined.shape[1])
                truth = torch.cat([videos[0][:1].expand(h - 1, -1, -1, -1), videos[0]])[:n]
                grid = torch.cat([truth, imagined[0, :n]], dim=-1)
                write_mp4(out / f"imagined_{task}.mp4",
                          (grid.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), fps=fps)
            bar.update(len(batch))
        env.close_env()
        k, n = sum(model_ok), len(model_ok)
        result[task] = {"episodes": n, "success": k / n, "ci95": list(wilson_interval(k, n)),
                        "ground_truth_video_success": sum(truth_ok) / n,
                        "per_episode": [{"episode_index": e, "success": bool(o)} for e, o in zip(eps, model_ok)]}
    bar.close()
    return result


def evaluate_wm(cfg: EvalWMConfig) -> dict:
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_world_model(cfg.checkpoint)
    if pipe.action_encoder is None:
        raise ValueError(f"{cfg.checkpoint}: no action encoder; the simulator mode needs one")
    if cfg.change_threshold is not None:
        if pipe.config.get("prediction") != "masked_residual":
            raise ValueError(f"change_threshold={cfg.change_threshold}: {cfg.checkpoint} is a "
                             f"'{pipe.config.get('prediction')}' model; only masked_residual ones have a change logit")
        pipe.register_to_config(change_threshold=cfg.change_threshold)
    pipes = {"model": pipe}
    if "untrained" in cfg.methods:
        pipes["untrained"] = untrained_copy(pipe, cfg.seed)
    ds = LeRobotDataset(cfg.dataset_root)
    h = pipe.config.num_history_frames
    windows = ClipWindows(ds, list(range(len(ds))), cfg.camera, pipe.config.fps, h + cfg.num_future_frames,
                          tuple(pipe.config.image_size))
    episodes, starts = windows.sample_index(np.random.default_rng(cfg.seed), cfg.num_windows)
    lp = lpips_model()
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    idm = exe = None
    if cfg.idm_checkpoint:
        idm = InverseDynamicsModel.from_pretrained(cfg.idm_checkpoint, embodiment=embodiment).eval()
        calibration = Calibration.load(cfg.reward.calibration_file) if cfg.reward.calibration_file else None
        exe = ExecutabilityReward(cfg.reward, embodiment, calibration)

    methods = [m for m in METHODS if m in cfg.methods]
    scores = {m: {k: {s: [] for s in METRICS} for k in methods} for m in MODES}  # per window, frame means
    per_frame = {m: {k: {s: [] for s in PAIRED_METRICS} for k in methods} for m in MODES}  # (T,) rows per window
    exec_scores = {k: {s: [] for s in EXEC_METRICS} for k in (*methods, "ground_truth")}
    grids, truth_motion = [], []
    denoiser_sums: dict[tuple[str, float], np.ndarray] = {}
    bar = tqdm(total=len(MODES) * cfg.num_windows, desc="eval wm", unit="window")
    for i in range(0, cfg.num_windows, cfg.batch_size):
        sl = slice(i, min(i + cfg.batch_size, cfg.num_windows))
        frames, actions, texts = windows.batch(episodes[sl], starts[sl])
        history, truth = frames[:, :h], frames[:, h:]
        seeds = [cfg.seed + j for j in range(sl.start, sl.stop)]
        # the window through the codec (a causal VAE encodes the anchor frame first, as in training): the
        # ``codec`` method and the denoiser diagnostic's ground truth
        clip = encode_video(pipe.vae, with_anchor(frames).to(pipe.transformer.device))
        truth_motion.extend(motion(truth, history[:, -1:]).mean(1).tolist())
        for mode in MODES:
            preds = {"repeat_last": history[:, -1:].expand_as(truth)} if "repeat_last" in methods else {}
            if "codec" in methods:
                preds["codec"] = decode_latents(pipe.vae, clip)[:, 1 + h:].cpu()
            for name, p in pipes.items():
                inputs = p.prepare(history, texts, actions if mode == "simulator" else None,
                                   num_frames=cfg.num_future_frames, seed=seeds)
                preds[name] = p.denoise(inputs, **cfg.sampling_kwargs())
                if name == "model":
                    for key, value in denoiser_error_sums(p, clip, inputs, mode, list(cfg.diagnostic_sigmas)).items():
                        denoiser_sums[key] = denoiser_sums.get(key, 0) + value
            for name, pred in preds.items():
                for k, v in frame_metrics(pred, truth, history[:, -1:], lp).items():
                    scores[mode][name][k].extend((v.mean(1) if v.ndim == 2 else v).tolist())
                    if k in PAIRED_METRICS:
                        per_frame[mode][name][k].extend(v.tolist())
            if mode == "planner" and exe is not None:
                for name, pred in {**preds, "ground_truth": truth}.items():
                    for k, v in executability(exe, idm, history, pred, truth, actions[:, h - 1:],
                                                   pipe.config.fps).items():
                        exec_scores[name][k].extend(v.tolist())
            if mode == "simulator" and len(grids) < cfg.num_videos:
                grids.extend(torch.cat([truth, *(preds[m] for m in methods)], dim=-1)[:cfg.num_videos - len(grids)])
            bar.update(sl.stop - sl.start)
    bar.close()

    summary = {"checkpoint": cfg.checkpoint, "dataset": cfg.dataset_root, "num_windows": cfg.num_windows,
               "history_frames": h, "future_frames": cfg.num_future_frames, "steps": cfg.steps,
               "sampler": cfg.sampler, "noise_scale": cfg.noise_scale, "init_sigma": cfg.init_sigma,
               "change_threshold": pipe.config.get("change_threshold"), "modes": {}}
    for mode in MODES:
        summary["modes"][mode] = {name: {k: mean_sem(v) for k, v in s.items()} for name, s in scores[mode].items()}
    summary["ground_truth_motion"] = mean_sem(truth_motion)
    summary["denoiser"] = denoiser_summary(denoiser_sums)
    if {"model", "repeat_last"} <= set(methods):
        summary["model_vs_repeat_last"] = {mode: paired_difference(scores[mode]["model"], scores[mode]["repeat_last"])
                                           for mode in MODES}
        summary["model_vs_repeat_last_per_frame"] = {
            mode: [paired_difference(*({k: np.asarray(v)[:, j] for k, v in per_frame[mode][name].items()}
                                       for name in ("model", "repeat_last")))
                   for j in range(cfg.num_future_frames)] for mode in MODES}
        summary["model_vs_repeat_last_by_stillness"] = {
            mode: by_stillness(per_frame[mode]["model"]["psnr"], per_frame[mode]["repeat_last"]["psnr"])
            for mode in MODES}
    if exe is not None:
        summary["executability"] = {name: {k: mean_sem(v) for k, v in s.items() if v} for name, s in exec_scores.items()}
        summary["executability_calibrated"] = exe.calibration is not None
    if cfg.episodes_per_task:
        summary["mujoco"] = execute_imagined(cfg, pipe, idm, embodiment, ds, out)
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
        lines += [f"**{mode}**", "", "| method | PSNR (dB) | SSIM | LPIPS | repetition rate | motion | motion agreement |",
                  "|---|---|---|---|---|---|---|"]
        for name, m in methods.items():
            lines.append(f"| {name} | " + " | ".join(f"{m[k]['mean']:.4g} +- {m[k]['sem']:.2g}" for k in METRICS)
                         + " |")
        lines.append("")
    gt = summary["ground_truth_motion"]
    lines += ["motion: the mean absolute change of the predicted frames from the newest history frame (pixels in "
              f"[0, 1]); the ground truth's: {gt['mean']:.4g} +- {gt['sem']:.2g}. motion agreement: the overlap of the "
              "predicted and recorded frame-to-frame changes (1 = the same changes, 0 = none of them; "
              "world_model.metrics.motion_agreement).", ""]
    if "model_vs_repeat_last" in summary:
        lines += ["**model minus repeat-last, paired over the same windows** (mean +- standard error; share of windows "
                  "where the model is better)", "", "| mode | PSNR (dB) | SSIM | LPIPS |", "|---|---|---|---|"]
        for mode, d in summary["model_vs_repeat_last"].items():
            lines.append(f"| {mode} | " + " | ".join(f"{d[k]['mean']:+.3g} +- {d[k]['sem']:.2g} ({d[k]['model_better']:.0%})"
                                                    for k in ("psnr", "ssim", "lpips")) + " |")
        lines.append("")
    if "model_vs_repeat_last_per_frame" in summary:
        lines += ["**the same, per predicted frame** (1 = the frame after the history; PSNR in dB, LPIPS)", "",
                  "| mode | " + " | ".join(f"frame {j + 1}" for j in range(summary["future_frames"])) + " |",
                  "|---" * (summary["future_frames"] + 1) + "|"]
        for mode, rows in summary["model_vs_repeat_last_per_frame"].items():
            for k in ("psnr", "lpips"):
                lines.append(f"| {mode}, {k.upper()} | " + " | ".join(
                    f"{r[k]['mean']:+.3g} +- {r[k]['sem']:.2g} ({r[k]['model_better']:.0%})" for r in rows) + " |")
        lines.append("")
    if "model_vs_repeat_last_by_stillness" in summary:
        lines += ["**PSNR, model minus repeat-last, by how still the frame is** (repeat-last's PSNR of each predicted "
                  "frame; contribution: the band's part of the overall mean difference)", "",
                  "| mode | repeat-last PSNR (dB) | share of frames | mean difference (dB) | contribution (dB) |",
                  "|---|---|---|---|---|"]
        for mode, rows in summary["model_vs_repeat_last_by_stillness"].items():
            lines += [f"| {mode} | {band(r['from_db'], r['to_db'])} | {r['share']:.0%} | "
                      + ("-" if r["mean"] is None else f"{r['mean']:+.3g}") + f" | {r['contribution']:+.3g} |"
                      for r in rows]
        lines.append("")
    lines += ["**where the denoiser fails**: clean-latent mean squared error of one model call on the true future "
              "noised to sigma, at static and moving latent positions, against copying the newest frame (exact on "
              "static ones)", "", "| mode | sigma | static | moving | copy, moving | static share |", "|---|---|---|---|---|---|"]
    for mode, rows in summary["denoiser"].items():
        lines += [f"| {mode} | {r['sigma']:.2f} | {r['static_mse']:.3g} | {r['moving_mse']:.3g} | "
                  f"{r['copy_moving_mse']:.3g} | {r['static_fraction']:.0%} |" for r in rows]
    lines.append("")
    if "executability" in summary:
        lines += ["**executability of IDM-decoded planner rollouts** (EVA; penalty terms per sample, "
                  "violation fractions of control steps)" + ("" if summary["executability_calibrated"] else
                                                            ", reward not computed: no calibration file"), "",
                  "| method | " + " | ".join(EXEC_METRICS) + " |", "|---" * (len(EXEC_METRICS) + 1) + "|"]
        for name, m in summary["executability"].items():
            lines.append(f"| {name} | " + " | ".join(f"{m[k]['mean']:.4g}" if k in m else "-" for k in EXEC_METRICS)
                         + " |")
        lines.append("")
    if "mujoco" in summary:
        lines += ["**imagined episodes executed open loop in MuJoCo** (95% Wilson interval; the last column executes "
                  "the ground-truth video through the same IDM)", "",
                  "| task | success | ground-truth video |", "|---|---|---|"]
        for task, r in summary["mujoco"].items():
            lines.append(f"| {task} | {100 * r['success']:.0f}% ({100 * r['ci95'][0]:.0f}-{100 * r['ci95'][1]:.0f}%), "
                         f"n={r['episodes']} | {100 * r['ground_truth_video_success']:.0f}% |")
        lines.append("")
    return "\n".join(lines)


def band(lo: float | None, hi: float | None) -> str:
    return f"below {hi:g}" if lo is None else f"{lo:g} and above" if hi is None else f"{lo:g} to {hi:g}"


def plot(summary: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, 5, figsize=(20, 3.5))
    for ax, metric in zip(axes[:3], ("psnr", "ssim", "lpips")):
        for j, mode in enumerate(MODES):
            methods = summary["modes"][mode]
            names = list(methods)
            x = np.arange(len(names)) + (j - 0.5) * 0.35
            ax.bar(x, [methods[m][metric]["mean"] for m in names], 0.35,
                   yerr=[methods[m][metric]["sem"] for m in names], label=mode)
        ax.set_xticks(np.arange(len(names)), names, fontsize=8)
        ax.set_title(metric.upper() + (" (lower is better)" if metric == "lpips" else ""))
    axes[0].legend(fontsize=8)
    ax = axes[3]
    for mode, rows in summary["denoiser"].items():
        sig = [r["sigma"] for r in rows]
        ax.plot(sig, [r["moving_mse"] for r in rows], "o-", label=f"{mode}, moving")
        ax.plot(sig, [r["static_mse"] for r in rows], "s--", label=f"{mode}, static")
    ax.plot(sig, [r["copy_moving_mse"] for r in rows], "k:", label="copy, moving")
    ax.set_xlabel("noise level sigma")
    ax.set_yscale("log")
    ax.set_title("denoiser clean-latent MSE")
    ax.legend(fontsize=7)
    ax = axes[4]
    for mode, rows in summary.get("model_vs_repeat_last_per_frame", {}).items():
        frames = np.arange(1, len(rows) + 1)
        ax.errorbar(frames, [r["psnr"]["mean"] for r in rows], [r["psnr"]["sem"] for r in rows], marker="o",
                    capsize=3, label=mode)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xlabel("predicted frame")
    ax.set_title("PSNR, model minus repeat-last (dB)")
    ax.legend(fontsize=7)
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
