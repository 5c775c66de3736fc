"""eva-train-wm: supervised fine-tuning of the video world model (flow matching with diffusion forcing).

    eva-train-wm dataset_root=runs/wm_data/train run_dir=runs/wm world_model=tiny max_minutes=20
    torchrun --nproc_per_node=2 --master_addr=127.0.0.1 -m world_model.train ...   # several processes

One linear loop: sample clips -> encode (history anchor + H history + N future frames) -> per-frame
noise levels -> flow-matching loss on the noisy frames -> AdamW step -> EMA. Half of the samples (config
``action_dropout``) are trained without their actions, so one checkpoint is both visual planner and
action-conditioned simulator. Rerunning the same command resumes exactly from ``<run_dir>/checkpoint``.

Noise levels per latent frame (sigma = noise fraction, see ``world_model.model``):
* ``history``: a random number (1 .. all) of leading history latent frames are clean (or lightly
  noised up to ``history_noise``), every later frame shares one sigma; the loss covers those frames.
* ``independent``: every frame draws its own sigma (Diffusion Forcing); the loss covers all frames.
Sigmas are drawn uniformly and moved by Wan's flow shift, ``s * u / (1 + (s - 1) * u)``; ``max_sigma`` < 1
restricts the draw to the levels at or below it (those a sampler warm-started at ``init_sigma`` visits).

Several processes (torchrun, gloo on CPU or NCCL on GPU): every process draws the same global batch
and takes its slice; gradients are summed over processes with a loss normalised by the global batch,
so the update equals the one-process update on the same global batch (up to summation order).
Per-sample noise comes from a generator seeded by (seed, step, sample), independent of the split.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import hydra
import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from configs.constants import ACTION_KEY, RESIDUAL_PREDICTIONS
from configs.precision import resolve_precision
from configs.run_files import replace_dir, save_resolved_config
from configs.schema import TrainWMConfig, validate
from idm.data import split_episodes
from idm.train import lr_at  # the same schedule: linear warm-up, cosine to 10% of the peak
from sim.dataset import LeRobotDataset
from world_model.build import build_pipeline
from world_model.data import ClipWindows
from world_model.latents import PatchCodec, clip_layout, encode_video, with_anchor
from world_model.model import change_mask, predicted_residual, velocity
from world_model.pipeline import WorldModelPipeline

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
CODEC_FIT_FRAMES = 1000  # training frames a fresh PatchCodec is fitted on (256 blocks each at 128x128)
# DESIGN.md section 4: LoRA targets of the Wan transformer
LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_k_proj", "add_v_proj", "ffn.net.0.proj", "ffn.net.2"]


def shifted(u: np.ndarray, shift: float) -> np.ndarray:
    return shift * u / (1 + (shift - 1) * u)


def unshifted(sigma: float, shift: float) -> float:
    """The inverse of ``shifted``: the uniform draw that the flow shift moves to ``sigma``."""
    return sigma / (shift - (shift - 1) * sigma)


def draw_noise(cfg: TrainWMConfig, seed_key: tuple[int, ...], latent_shape: tuple[int, ...], n_hist: int,
               flow_shift: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """One sample's noise, per-frame sigmas, loss mask per frame and action keep flag, from its own seed."""
    rng = np.random.default_rng(seed_key)
    n_frames = latent_shape[1]
    u_max = unshifted(cfg.max_sigma, flow_shift)
    noise = torch.from_numpy(rng.standard_normal(latent_shape, dtype=np.float32))
    if cfg.noise_schedule == "independent":
        sig = shifted(rng.random(n_frames) * u_max, flow_shift)
        loss_mask = np.ones(n_frames)
    else:
        clean = rng.integers(1, n_hist + 1)
        sig = np.full(n_frames, shifted(rng.random() * u_max, flow_shift))
        sig[:clean] = rng.random(clean) * cfg.history_noise
        loss_mask = np.arange(n_frames) >= clean
    keep_actions = float(rng.random() >= cfg.action_dropout)
    return noise, torch.tensor(sig, dtype=torch.float32), torch.tensor(loss_mask, dtype=torch.float32), keep_actions


def flow_loss(pipe: WorldModelPipeline, frames, actions, text_states, keys, cfg: TrainWMConfig, n_hist: int,
              flow_shift: float, global_batch: int, fixed=None) -> torch.Tensor:
    """Sum of squared errors of the transformer's output (velocity, or residual: see ``world_model.model``) over
    the loss frames, each frame weighted by ``frame_weighting``, divided by the global batch's element count."""
    x = encode_video(pipe.vae, with_anchor(frames))  # (B, z, F, h, w)
    drawn = [draw_noise(cfg, k, tuple(x.shape[1:]), n_hist, flow_shift) for k in keys]
    noise = torch.stack([d[0] for d in drawn])
    sig = torch.stack([d[1] for d in drawn]) if fixed is None else fixed["sigmas"]
    loss_mask = torch.stack([d[2] for d in drawn]) if fixed is None else fixed["loss_mask"]
    keep = torch.tensor([d[3] for d in drawn]) if fixed is None else fixed["keep_actions"]
    s = sig.view(*sig.shape[:1], 1, sig.shape[1], 1, 1)
    noisy = (1 - s) * x + s * noise
    condition, latent_actions = pipe.model_inputs(x[:, :, :n_hist], x.shape[2], actions)
    with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
        out = velocity(pipe.transformer, noisy, sig, text_states, action_encoder=pipe.action_encoder,
                     actions=latent_actions, action_mask=keep, condition=condition)
    prediction = pipe.config.get("prediction", "velocity")
    frame_mask = loss_mask.view(*loss_mask.shape[:1], 1, -1, 1, 1)
    change_loss = 0.0
    if prediction in RESIDUAL_PREDICTIONS:  # the clean latents' error (= v error * sigma)
        reference = x[:, :, n_hist - 1:n_hist]
        target = x - reference
        if cfg.frame_weighting == "copy_error":
            copy_error = (target ** 2).mean((1, 3, 4), keepdim=True)
            frame_mask = frame_mask * (1 + cfg.frame_weight_floor) / (copy_error + cfg.frame_weight_floor)
        if prediction == "masked_residual":  # F fitted everywhere; the change logit by cross-entropy
            logits = out[:, -1:].float()
            moved = change_mask(x, reference, cfg.change_tol)
            bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, moved, reduction="none") * frame_mask
            change_loss = cfg.change_loss_weight * bce.sum() / (global_batch * logits[0].numel())
            out = out[:, :-1]
        else:
            out = predicted_residual(out.float(), noisy, sig, reference, prediction,
                                     pipe.config.get("skip_sigma_data", 1.0))
    else:
        target = noise - x
    err = ((out.float() - target) ** 2) * frame_mask
    return err.sum() / (global_batch * x[0].numel()) + change_loss


def save_checkpoint(path: Path, params: dict[str, torch.nn.Parameter], ema: dict | None, optimizer, step: int,
                    rng: np.random.Generator, elapsed: float) -> None:
    """Write to a temporary directory, then swap it in: a kill never leaves a half checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"params": {k: p.detach().clone() for k, p in params.items()}, "ema": ema,
                "optimizer": optimizer.state_dict(), "step": step, "rng": rng.bit_generator.state,
                "elapsed": elapsed}, tmp / STATE_FILE)
    replace_dir(tmp, path)


def setup_distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def build_or_load(cfg: TrainWMConfig, ds: LeRobotDataset, frames: ClipWindows) -> WorldModelPipeline:
    """The world model to train: ``init_from``, or a fresh one whose PatchCodec is fitted on training frames."""
    wm = cfg.world_model
    if cfg.init_from:
        pipe = WorldModelPipeline.from_pretrained(cfg.init_from)
        for name in ("num_history_frames", "image_size", "fps"):
            if list(np.atleast_1d(pipe.config[name])) != list(np.atleast_1d(getattr(wm, name))):
                raise ValueError(f"init_from {cfg.init_from}: {name} is {pipe.config[name]}, the world_model "
                                 f"config '{wm.name}' says {getattr(wm, name)}")
        return pipe
    stats = json.loads((ds.root / "meta" / "stats.json").read_text())
    action_stats = (stats[ACTION_KEY]["mean"], stats[ACTION_KEY]["std"])
    codec = None
    if wm.codec["type"] == "patch":
        sample = frames.sample_frames(np.random.default_rng(cfg.seed), CODEC_FIT_FRAMES)
        codec = PatchCodec.fit(sample, **{k: v for k, v in wm.codec.items() if k != "type"})
        log.info("PatchCodec fitted on %d training frames: %d latent channels", len(sample), codec.z_dim)
    instructions = sorted({i for t in cfg.tasks.values() for i in [*t.instructions, *t.eval_instructions]})
    return build_pipeline(wm, instructions, action_stats=action_stats, codec=codec, seed=cfg.seed)


def train(cfg: TrainWMConfig) -> Path:
    cfg.precision = resolve_precision(cfg.precision)
    rank, world = setup_distributed()
    if cfg.batch_size % world:
        raise ValueError(f"config field 'batch_size': global batch {cfg.batch_size} does not divide over "
                         f"{world} processes")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ds = LeRobotDataset(cfg.dataset_root, expected_embodiment=cfg.embodiment["name"])
    train_eps, val_eps = split_episodes(ds, cfg.val_episodes_per_task)
    wm = cfg.world_model
    clip_frames = wm.num_history_frames + cfg.num_future_frames
    train_w = ClipWindows(ds, train_eps, cfg.camera, wm.fps, clip_frames, wm.image_size, progress=rank == 0)
    val_w = ClipWindows(ds, val_eps, cfg.camera, wm.fps, clip_frames, wm.image_size, progress=rank == 0)
    torch.manual_seed(cfg.seed)
    pipe = build_or_load(cfg, ds, train_w)
    n_hist, _ = clip_layout(wm.num_history_frames, cfg.num_future_frames, pipe.temporal_stride)
    stride = pipe.temporal_stride
    log.info("world-model data: %d training clips from %d episodes, %d validation episodes", len(train_w),
             len(train_eps), len(val_eps))

    # frozen: codec and text encoder; trained: transformer (all or LoRA) and the action encoder
    pipe.text_encoder.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    if cfg.finetune == "lora":
        if not cfg.init_from and pipe.config.get("prediction", "velocity") in RESIDUAL_PREDICTIONS:
            raise ValueError(f"config field 'finetune': LoRA on a fresh residual world model ('{wm.name}') cannot "
                             "move its zero output layer; train it with finetune=full, or set init_from")
        pipe.transformer.requires_grad_(False)
        targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n, _ in pipe.transformer.named_modules())]
        pipe.transformer.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets))
    if cfg.gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    params = {f"transformer.{n}": p for n, p in pipe.transformer.named_parameters() if p.requires_grad}
    params |= {f"action_encoder.{n}": p for n, p in pipe.action_encoder.named_parameters()}
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = {k: p.detach().clone() for k, p in params.items()} if cfg.ema_decay > 0 else None
    text_cache = {t: pipe.encode_text([t]) for t in sorted(set(train_w.instructions) | set(val_w.instructions))}

    def text_states(texts):
        return torch.cat([text_cache[t] for t in texts])

    rng = np.random.default_rng(cfg.seed)
    val_rng = np.random.default_rng(cfg.seed + 1)
    val_idx = val_w.sample_index(val_rng, cfg.val_windows)
    val_fixed_sig = torch.linspace(0.05, 0.95, cfg.val_windows)

    step, elapsed = 0, 0.0
    ckpt = run_dir / "checkpoint"
    if (ckpt / STATE_FILE).exists():
        state = torch.load(ckpt / STATE_FILE, weights_only=False)
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state["params"][k])
        optimizer.load_state_dict(state["optimizer"])
        ema = state["ema"]
        rng.bit_generator.state = state["rng"]
        step, elapsed = state["step"], state["elapsed"]
        log.info("resumed from %s at step %d (%.1f min trained)", ckpt, step, elapsed / 60)

    @torch.no_grad()
    def validate_loss() -> dict[str, float]:
        """Flow loss of the future frames at fixed sigmas with a clean history, without and with actions."""
        out = {}
        for mode, keep in (("planner", 0.0), ("actions", 1.0)):
            total = 0.0
            for i in range(0, cfg.val_windows, cfg.batch_size):
                sl = slice(i, min(i + cfg.batch_size, cfg.val_windows))
                frames, actions, texts = val_w.batch(val_idx[0][sl], val_idx[1][sl])
                b = frames.shape[0]
                n_lat = n_hist + cfg.num_future_frames // stride
                sig = torch.zeros(b, n_lat)
                sig[:, n_hist:] = val_fixed_sig[sl].view(b, 1)
                fixed = {"sigmas": sig, "loss_mask": (sig > 0).float(), "keep_actions": torch.full((b,), keep)}
                keys = [(cfg.seed, 10**9, i + j) for j in range(b)]
                total += flow_loss(pipe, frames, actions, text_states(texts), keys, cfg, n_hist, wm.flow_shift,
                                   cfg.val_windows, fixed).item()
            out[mode] = total
        return out

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=step) if rank == 0 else None
    bar = tqdm(total=cfg.max_steps, initial=step, desc="train wm", unit="step", disable=rank != 0)
    t0 = time.time() - elapsed
    per_rank = cfg.batch_size // world
    pipe.transformer.train()
    while step < cfg.max_steps:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        episodes, starts = train_w.sample_index(rng, cfg.batch_size)  # the same global batch on every rank
        mine = slice(rank * per_rank, (rank + 1) * per_rank)
        frames, actions, texts = train_w.batch(episodes[mine], starts[mine])
        keys = [(cfg.seed, step, rank * per_rank + j) for j in range(per_rank)]
        loss = flow_loss(pipe, frames, actions, text_states(texts), keys, cfg, n_hist, wm.flow_shift, cfg.batch_size)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if world > 1:
            for p in params.values():
                dist.all_reduce(p.grad)
            dist.all_reduce(loss.detach())
        optimizer.step()
        if ema is not None:
            with torch.no_grad():
                for k, p in params.items():
                    ema[k].lerp_(p.detach(), 1 - cfg.ema_decay)
        step += 1
        bar.update(1)
        out_of_time = time.time() - t0 > 60 * cfg.max_minutes
        last = step == cfg.max_steps or out_of_time
        if rank == 0 and (step % cfg.log_every == 0 or last):
            writer.add_scalar("train/loss", loss.item(), step)
            writer.add_scalar("train/lr", lr, step)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if rank == 0 and (step % cfg.eval_every == 0 or last):
            val = validate_loss()
            for mode, value in val.items():
                writer.add_scalar(f"val/loss_{mode}", value, step)
            record = {"step": step, "train_loss": loss.item(), **{f"val_loss_{m}": v for m, v in val.items()},
                      "minutes": (time.time() - t0) / 60}
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            log.info("step %d: train %.4f, val planner %.4f, val actions %.4f", step, loss.item(), val["planner"],
                     val["actions"])
        if rank == 0 and (step % cfg.checkpoint_every == 0 or last):
            save_checkpoint(ckpt, params, ema, optimizer, step, rng, time.time() - t0)
        if out_of_time:
            log.warning("time budget of %.1f min spent at step %d of %d; stopping", cfg.max_minutes, step,
                        cfg.max_steps)
            break
    bar.close()
    if rank != 0:
        dist.barrier()
        return run_dir / "model"
    writer.close()
    if ema is not None:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(ema[k])
    save_model(pipe, cfg, run_dir / "model")
    if world > 1:
        dist.barrier()
    return run_dir / "model"


def save_model(pipe: WorldModelPipeline, cfg: TrainWMConfig, out: Path) -> None:
    """A full pipeline; with LoRA, the base pipeline plus ``pytorch_lora_weights.safetensors`` beside it."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if cfg.finetune == "lora":
        lora = get_peft_model_state_dict(pipe.transformer)
        pipe.transformer.unload_lora()  # back to the plain base modules before saving them
        pipe.save_pretrained(tmp)
        WorldModelPipeline.save_lora_weights(tmp, transformer_lora_layers=lora)
    else:
        pipe.save_pretrained(tmp)
    replace_dir(tmp, out)
    log.info("saved %s", out)


@hydra.main(version_base=None, config_path="../configs", config_name="train_wm")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, TrainWMConfig)
    save_resolved_config(dcfg, cfg.run_dir, "train_wm_config.yaml")
    train(cfg)


if __name__ == "__main__":
    main()
