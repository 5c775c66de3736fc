"""eva-train-idm: train the inverse dynamics model on a LeRobot v3.0 dataset.

    eva-train-idm dataset_root=runs/idm_data/train run_dir=runs/idm max_minutes=15

One linear loop: sample windows -> MSE on normalised actions -> AdamW step; validation
loss and per-joint MAE (radians, normalised gripper) on held-out episodes; TensorBoard logs
in ``<run_dir>/tb``; a checkpoint (weights, optimiser, step, RNG states, elapsed time) every
``checkpoint_every`` steps. Rerunning the same command resumes exactly where it stopped.
The final model is ``<run_dir>/model`` (``config.json`` + ``model.safetensors``).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import time
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from configs.constants import ACTION_KEY, image_key
from configs.embodiment import Embodiment
from configs.precision import resolve_precision
from configs.run_files import replace_dir, save_resolved_config
from configs.schema import TrainIDMConfig, validate
from idm.data import IDMWindows, split_episodes, task_episode_weights
from idm.model import WEIGHTS_NAME, InverseDynamicsModel
from sim.dataset import LeRobotDataset

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"


def lr_at(step: int, cfg: TrainIDMConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def validate_model(model: InverseDynamicsModel, windows: IDMWindows, episodes: np.ndarray, centres: np.ndarray,
                   batch_size: int) -> dict[str, np.ndarray | float]:
    model.eval()
    losses, errors = [], []
    for i in range(0, len(episodes), batch_size):
        frames, actions = windows.batch(episodes[i:i + batch_size], centres[i:i + batch_size])
        pred = model(frames)
        losses.append(F.mse_loss(pred, model.normalize_action(actions), reduction="sum").item())
        errors.append((model.unnormalize_action(pred) - actions).abs())
    model.train()
    mae = torch.cat(errors).mean(0).numpy()
    return {"loss": sum(losses) / (len(episodes) * mae.size), "mae": mae}


def save_checkpoint(path: Path, model, ema, optimizer, step: int, rng: np.random.Generator, elapsed: float) -> None:
    """Write to a temporary directory, then swap it in: a kill never leaves a half checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    torch.save({"optimizer": optimizer.state_dict(), "ema": None if ema is None else ema.state_dict(), "step": step, "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "elapsed": elapsed}, tmp / STATE_FILE)
    replace_dir(tmp, path)


def train(cfg: TrainIDMConfig) -> Path:
    cfg.precision = resolve_precision(cfg.precision)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    ds = LeRobotDataset(cfg.dataset_root, expected_embodiment=embodiment.name,
                        expected_fps=int(embodiment.control_rate_hz))
    train_eps, val_eps = split_episodes(ds, cfg.val_episodes_per_task)
    episode_weights = None
    if cfg.task_weights:  # checked before the (slow) loading
        meta = {e["episode_index"]: e for e in ds.episodes}
        episode_weights = task_episode_weights([meta[e]["length"] for e in train_eps],
                                               [meta[e].get("eva/task", "?") for e in train_eps], dict(cfg.task_weights))
    m = cfg.idm
    image_size = tuple(m.image_size)
    train_w = IDMWindows(ds, train_eps, m.cameras, m.fps, m.context_k, image_size)
    val_w = IDMWindows(ds, val_eps, m.cameras, m.fps, m.context_k, image_size)
    log.info("IDM data: %d training episodes (%d frames), %d validation episodes", len(train_eps), len(train_w),
             len(val_eps))

    torch.manual_seed(cfg.seed)
    model = InverseDynamicsModel(cameras=tuple(m.cameras), context_k=m.context_k, image_size=image_size, fps=m.fps,
                                 channels=tuple(m.channels), num_keypoints=m.num_keypoints, mlp_hidden=m.mlp_hidden,
                                 action_dim=len(embodiment.joint_names), embodiment=embodiment.name,
                                 joint_names=tuple(embodiment.joint_names),
                                 patch_sizes=tuple(m.patch_sizes) if m.patch_sizes else None)
    stats = json.loads((ds.root / "meta" / "stats.json").read_text())
    image_stats = [stats[image_key(c)] for c in m.cameras]
    model.set_normalization(
        stats[ACTION_KEY]["mean"], stats[ACTION_KEY]["std"],
        np.mean([np.asarray(s["mean"]).reshape(3) for s in image_stats], 0),
        np.mean([np.asarray(s["std"]).reshape(3) for s in image_stats], 0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # exponential moving average of the weights: validated and saved as the final model when on
    ema = copy.deepcopy(model).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
    rng = np.random.default_rng(cfg.seed)
    val_ep, val_c = val_w.sample_index(np.random.default_rng(cfg.seed + 1), cfg.val_windows)

    step, elapsed = 0, 0.0
    ckpt = run_dir / "checkpoint"
    if (ckpt / STATE_FILE).exists():
        state = torch.load(ckpt / STATE_FILE, weights_only=False)
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(ckpt / WEIGHTS_NAME)))
        optimizer.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        step, elapsed = state["step"], state["elapsed"]
        log.info("resumed from %s at step %d (%.1f min trained)", ckpt, step, elapsed / 60)
    if step >= cfg.max_steps:
        log.info("already trained for %d steps", step)

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=step)
    metrics_path = run_dir / "metrics.jsonl"
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train idm", unit="step")
    t0 = time.time() - elapsed
    model.train()
    while step < cfg.max_steps:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        frames, actions = train_w.batch(*train_w.sample_index(rng, cfg.batch_size, episode_weights))
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            loss = F.mse_loss(model(frames), model.normalize_action(actions))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:  # decay warms up so the average does not hold on to the random init
            decay = min(cfg.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - decay)
        step += 1
        bar.update(1)
        out_of_time = time.time() - t0 > 60 * cfg.max_minutes
        last = step == cfg.max_steps or out_of_time
        if step % cfg.log_every == 0 or last:
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/lr", lr, step)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.eval_every == 0 or last:
            val = validate_model(model if ema is None else ema, val_w, val_ep, val_c, cfg.batch_size)
            writer.add_scalar("val/loss", val["loss"], step)
            for name, err in zip(embodiment.joint_names, val["mae"]):
                writer.add_scalar(f"val_mae/{name}", float(err), step)
            writer.add_scalar("val/mae_mean", float(val["mae"].mean()), step)
            record = {"step": step, "train_loss": loss.item(), "val_loss": val["loss"],
                      "val_mae": dict(zip(embodiment.joint_names, map(float, val["mae"]))),
                      "minutes": (time.time() - t0) / 60}
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("step %d: train %.4f, val %.4f, val MAE mean %.4f", step, loss.item(), val["loss"],
                     val["mae"].mean())
        if step % cfg.checkpoint_every == 0 or last:
            save_checkpoint(ckpt, model, ema, optimizer, step, rng, time.time() - t0)
        if out_of_time:
            log.warning("time budget of %.1f min spent at step %d of %d; stopping", cfg.max_minutes, step,
                        cfg.max_steps)
            break
    bar.close()
    writer.close()
    (model if ema is None else ema).save_pretrained(run_dir / "model")
    log.info("saved %s", run_dir / "model")
    return run_dir / "model"


@hydra.main(version_base=None, config_path="../configs", config_name="train_idm")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, TrainIDMConfig)
    save_resolved_config(dcfg, cfg.run_dir, "train_idm_config.yaml")
    train(cfg)


if __name__ == "__main__":
    main()
