"""eva-grpo: Flow-GRPO post-training of the world model with LoRA on verifiable rewards.

    eva-calibrate-reward checkpoint=runs/wm/model idm_checkpoint=runs/idm/model     # EVA's P_0, once
    eva-grpo reward=executability checkpoint=runs/wm/model idm_checkpoint=runs/idm/model
    eva-grpo reward=perceptual checkpoint=runs/wm/model
    torchrun --nproc_per_node=2 --master_addr=127.0.0.1 -m rl_post_train.train ...   # GLOO_SOCKET_IFNAME=lo on CPU

One iteration, top to bottom:
  1. prompts: ``prompts_per_step`` windows of the dataset (the last H frames as history, the instruction;
     for ``reward=perceptual`` also the recorded actions and the next frames as ground truth), each
     repeated ``group_size`` times; every process owns whole groups.
  2. sampling: the SDE sampler (``rl_post_train.grpo.sample_sde``) records every latent and the
     log-probability of every noisy step, in chunks of ``micro_batch`` (the same chunks the update
     recomputes, so the first ratio is exactly 1).
  3. rewards: decoded frames -> IDM actions -> executability (EVA), or -(L1 + LPIPS) against ground
     truth (RLVR-World), plus optional perceptual, repetition and motion terms; a non-finite reward drops
     its sample.
  4. advantages: per group, normalised and clipped; groups with no spread are dropped.
  5. update: ``updates_per_step`` optimiser steps, each over its mini-batch with gradient accumulation
     over micro-batches and the chosen denoising steps: PPO-clipped ratio + beta KL to the model with LoRA
     off; gradients summed over processes, normalised by the global count of kept samples x trained steps.
  6. log (TensorBoard + metrics.jsonl), sample videos; with ``val_every``, validation rollouts and checkpoint
     selection (``Selection``, validation.jsonl); checkpoint (LoRA weights + optimiser + step + selection; all
     randomness derives from (seed, step, sample), so a rerun resumes exactly).
  At the end ``model``: the base pipeline with the last (or, with ``val_every``, the selected) LoRA weights.
"""

from __future__ import annotations

import json
import logging
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

from configs.embodiment import Embodiment
from configs.run_files import atomic_write_json, replace_dir, save_resolved_config
from configs.schema import GRPOConfig, RewardConfig, validate
from idm.data import split_episodes
from idm.decode import decode_video
from idm.model import InverseDynamicsModel
from rl_post_train.grpo import (GRAD_SPLIT_KEYS, adapters_disabled, choose_train_steps, gaussian_kl, grad_split,
                                group_advantages, ppo_loss, sample_sde, step_log_prob)
from rl_post_train.rewards import (CALIBRATION_FILE, Calibration, ExecutabilityReward, RewardOutput, before_video_gate,
                                   motion_reward, perceptual_reward, repetition_reward, weighted_sum)
from sim.dataset import LeRobotDataset
from sim.video import write_mp4
from world_model.data import ClipWindows
from world_model.metrics import lpips, motion_agreement
from world_model.pipeline import LORA_WEIGHTS, WorldModelPipeline
from world_model.train import LORA_TARGETS, setup_distributed

log = logging.getLogger(__name__)

STATE_FILE = "grpo_state.pt"
SELECTION_FILE = "selection.json"
VALIDATION_LOG = "validation.jsonl"
# what each validation (``Selection.score``) records: always, and with the executability reward its own parts
# (``smoothness`` can gate the selection)
VALIDATION_SCORES = ("reward", "lpips", "agreement")
EXECUTABILITY_VALIDATION = ("smoothness", "jerk", "vel_violation_frac", "acc_violation_frac")


class Scorer:
    """The configured rewards of a batch: executability (needs the IDM), perceptual, repetition, motion."""

    def __init__(self, cfg: GRPOConfig, embodiment: Embodiment, fps: int, calibration: Calibration | None):
        self.cfg, self.fps = cfg.reward, fps
        self.weights: dict[str, float] = {}
        if self.cfg.name == "executability":
            self.idm = InverseDynamicsModel.from_pretrained(cfg.idm_checkpoint, embodiment=embodiment).eval()
            self.executability = ExecutabilityReward(self.cfg.executability, embodiment, calibration)
            self.weights["executability"] = 1.0
        if self.cfg.name == "perceptual" or self.cfg.perceptual_weight > 0:
            self.weights["perceptual"] = 1.0 if self.cfg.name == "perceptual" else self.cfg.perceptual_weight
        if self.cfg.repetition_weight > 0:
            self.weights["repetition"] = self.cfg.repetition_weight
        if self.cfg.motion_weight > 0:
            self.weights["motion"] = self.cfg.motion_weight

    def decode_actions(self, history: torch.Tensor, pred: torch.Tensor) -> torch.Tensor | None:
        """IDM actions of the last history frame and the prediction (a jump at the seam is penalised too)."""
        if "executability" not in self.weights:
            return None
        return decode_video(self.idm, torch.cat([history, pred], dim=1))[:, history.shape[1] - 1:]

    def __call__(self, actions: torch.Tensor | None, history: torch.Tensor, pred: torch.Tensor, truth: torch.Tensor,
                 recorded: torch.Tensor) -> dict[str, RewardOutput]:
        """``actions``: decoded by ``decode_actions``; ``recorded``: the window's commanded actions on the same
        frames (the last history frame and the future)."""
        out = {}
        if "executability" in self.weights:
            out["executability"] = self.executability(actions, self.fps, recorded, newest=history[:, -1:],
                                                      pred=pred, truth=truth)
        if "perceptual" in self.weights:
            out["perceptual"] = perceptual_reward(pred, truth, self.cfg.perceptual_metric)
        if "repetition" in self.weights:
            out["repetition"] = repetition_reward(pred)
        if "motion" in self.weights:
            out["motion"] = motion_reward(history[:, -1:], pred, truth, self.cfg.motion_measure,
                                          self.cfg.motion_fraction)
        return out


class Selection:
    """Checkpoint selection on validation rollouts, EVA's guard against reward hacking (appendix, "Reward Hacking":
    checkpoint selection and early stopping on validation rollout quality).

    ``score`` samples fixed windows of episodes held out of the prompts with the ODE sampler and fixed seeds, as
    the held-out evaluation does, and returns the mean trained reward (``reward.name``), LPIPS against the
    recorded future and the motion agreement with it. A checkpoint is eligible while its LPIPS is at most
    ``1 + val_lpips_tolerance`` times the start's (a texture that games the video gate raises it) and its
    agreement at least ``1 - val_agreement_tolerance`` times the start's (a held frame lowers it); with
    ``val_smoothness_tolerance``, also its mean smoothness (the executability reward before its motion gates) at
    least ``1 - val_smoothness_tolerance`` times the start's (more motion bought with jerk lowers it). The
    selected checkpoint has the highest reward among the eligible ones, the start (the SFT model, adapters off)
    included. With the executability reward, the smoothness, jerk term and limit-violation fractions are logged
    whether or not they gate.
    """

    def __init__(self, cfg: GRPOConfig, pipe: WorldModelPipeline, scorer: Scorer, windows: ClipWindows,
                 params: dict[str, torch.nn.Parameter]):
        self.cfg, self.pipe, self.scorer, self.windows = cfg, pipe, scorer, windows
        self.index = windows.sample_index(np.random.default_rng(cfg.seed + 1), cfg.val_windows)
        self.start: dict[str, float] | None = None
        self.best: dict[str, float] | None = None
        self.best_params = {k: p.detach().clone() for k, p in params.items()}  # the start: B = 0

    @torch.no_grad()
    def score(self) -> dict[str, float]:
        cfg, h, t = self.cfg, self.pipe.config.num_history_frames, time.time()
        parts = EXECUTABILITY_VALIDATION if "executability" in self.scorer.weights else ()
        values: dict[str, list[torch.Tensor]] = {k: [] for k in (*VALIDATION_SCORES, *parts)}
        for i in range(0, cfg.val_windows, cfg.micro_batch):
            sl = slice(i, min(i + cfg.micro_batch, cfg.val_windows))
            frames, actions, texts = self.windows.batch(self.index[0][sl], self.index[1][sl])
            history, truth = frames[:, :h], frames[:, h:]
            inputs = self.pipe.prepare(history, texts, actions if cfg.reward.mode == "simulator" else None,
                                       num_frames=cfg.num_future_frames, seed=list(range(sl.start, sl.stop)))
            pred = self.pipe.denoise(inputs, steps=cfg.steps, sampler="euler", flow_shift=cfg.flow_shift)
            rewards = self.scorer(self.scorer.decode_actions(history, pred), history, pred, truth, actions[:, h - 1:])
            values["reward"].append(rewards[cfg.reward.name].total)
            values["lpips"].append(lpips(pred, truth).mean(1))
            values["agreement"].append(motion_agreement(pred, truth, history[:, -1:]))
            for k in parts:
                values[k].append(rewards["executability"].components[k])
        # a non-finite reward makes the mean NaN, which is never eligible as the best
        return {**{k: float(torch.cat(v).mean()) for k, v in values.items()}, "seconds": time.time() - t}

    def eligible(self, m: dict[str, float]) -> bool:
        cfg, start = self.cfg, self.start
        smooth = (cfg.val_smoothness_tolerance is None
                  or m["smoothness"] >= start["smoothness"] * (1 - cfg.val_smoothness_tolerance))
        return (smooth and m["lpips"] <= start["lpips"] * (1 + cfg.val_lpips_tolerance)
                and m["agreement"] >= start["agreement"] * (1 - cfg.val_agreement_tolerance))

    def begin(self) -> dict[str, float]:
        """Score the start (adapters off, so a resumed run scores the same SFT model) unless a checkpoint had it."""
        if self.start is None:
            with adapters_disabled(self.pipe):
                self.start = self.score()
            self.best = {"step": 0, **self.start}
        return self.start

    def update(self, step: int, params: dict[str, torch.nn.Parameter]) -> dict[str, float | bool | int]:
        m = self.score()
        eligible = self.eligible(m)
        if eligible and m["reward"] > self.best["reward"]:
            self.best = {"step": step, **m}
            self.best_params = {k: p.detach().clone() for k, p in params.items()}
        return {"step": step, **m, "eligible": eligible, "selected_step": self.best["step"]}

    def state_dict(self) -> dict:
        return {"start": self.start, "best": self.best, "best_params": self.best_params}

    def load_state_dict(self, state: dict | None) -> None:
        if state:  # absent in a checkpoint written without selection: the start is scored anew
            if self.cfg.val_smoothness_tolerance is not None and "smoothness" not in state["start"]:
                raise ValueError("val_smoothness_tolerance: the checkpoint's selection state has no smoothness "
                                 "(written before it was logged); resume without it or start a new run_dir")
            self.start, self.best, self.best_params = state["start"], state["best"], state["best_params"]

    def summary(self) -> dict:
        return {"start": self.start, "selected": self.best, "val_windows": self.cfg.val_windows,
                "val_lpips_tolerance": self.cfg.val_lpips_tolerance,
                "val_agreement_tolerance": self.cfg.val_agreement_tolerance,
                "val_smoothness_tolerance": self.cfg.val_smoothness_tolerance}


def advantage_terms(cfg: RewardConfig, rewards: dict[str, RewardOutput],
                    weights: dict[str, float]) -> dict[str, tuple[torch.Tensor, float]]:
    """The (per-sample reward, weight) pairs whose group advantages ``combine=advantages`` sums: one per reward,
    and with ``video_gate_weight`` the executability reward split in two, the reward before its video gate and
    the gate."""
    terms = {k: (r.total, weights[k]) for k, r in rewards.items()}
    if cfg.video_gate_weight > 0:
        parts = rewards["executability"].components
        terms["executability"] = (before_video_gate(parts), weights["executability"])
        terms["video_gate"] = (parts["video_gate"], cfg.video_gate_weight)
    return terms


def advantages_of(cfg: GRPOConfig, rewards: dict[str, RewardOutput], weights: dict[str, float]):
    """Group advantages of the combined reward (``sum``), or the weighted sum of per-reward advantages.

    With ``advantages``, a reward (``advantage_terms``) that is flat within a group adds nothing there, and the
    group is dropped only when every term is flat in it; a sample with any non-finite reward is dropped.
    """
    total = weighted_sum(rewards, weights)
    if cfg.reward.combine == "sum":
        adv, keep, counts = group_advantages(total.total, cfg.group_size, cfg.adv_clip)
        return adv, keep, counts, total
    adv, finite, signal = 0, torch.isfinite(total.total), torch.zeros_like(total.total, dtype=torch.bool)
    for r, w in advantage_terms(cfg.reward, rewards, weights).values():
        a, kp, _ = group_advantages(r, cfg.group_size, cfg.adv_clip)
        adv, signal = adv + w * a, signal | kp
    keep = finite & signal
    groups = keep.view(-1, cfg.group_size)
    counts = {"nonfinite_rewards": int((~finite).sum()), "zero_std_groups": int((~groups.any(1)).sum()),
              "groups": len(groups)}
    return adv * keep, keep, counts, total


def load_calibration(cfg: GRPOConfig, run_dir: Path, rank: int) -> Calibration | None:
    if cfg.reward.name != "executability":
        return None
    src = Path(cfg.reward.executability.calibration_file or run_dir / CALIBRATION_FILE)
    calibration = Calibration.load(src)  # refuses with the command that makes it
    if rank == 0 and src.resolve() != (run_dir / CALIBRATION_FILE).resolve():
        calibration.save(run_dir / CALIBRATION_FILE)  # stored with the run
    exe = cfg.reward.executability
    floor = (f"{calibration.min_speed:.4g} rad/s" if exe.motion_reference == "pretrained"
             else f"{exe.min_speed_fraction:g} x each window's recorded speed")
    log.info("executability reward: P_0 = %.4g, motion floor %s (%s)", calibration.p0, floor, src)
    return calibration


def save_lora_model(pipe: WorldModelPipeline, base: str, out: Path) -> None:
    """The base pipeline's folders plus ``pytorch_lora_weights.safetensors``: a loadable world model."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp, ignore=shutil.ignore_patterns(LORA_WEIGHTS))
    WorldModelPipeline.save_lora_weights(tmp, transformer_lora_layers=get_peft_model_state_dict(pipe.transformer))
    replace_dir(tmp, out)


def train(cfg: GRPOConfig) -> Path:
    rank, world = setup_distributed()
    arith = cfg.batch_arithmetic(world)  # refuses a split that does not divide, with the numbers
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    calibration = load_calibration(cfg, run_dir, rank)
    if (Path(cfg.checkpoint) / LORA_WEIGHTS).exists():
        raise ValueError(f"{cfg.checkpoint}: a LoRA checkpoint; GRPO starts from a full model (fuse it first)")
    pipe = WorldModelPipeline.from_pretrained(cfg.checkpoint)
    fps, h = pipe.config.fps, pipe.config.num_history_frames
    scorer = Scorer(cfg, embodiment, fps, calibration)
    ds = LeRobotDataset(cfg.dataset_root, expected_embodiment=embodiment.name)
    prompt_eps, val_eps = (split_episodes(ds, cfg.val_episodes_per_task) if cfg.val_every
                           else (list(range(len(ds))), []))
    windows = ClipWindows(ds, prompt_eps, cfg.camera, fps, h + cfg.num_future_frames,
                          tuple(pipe.config.image_size), progress=rank == 0)
    log.info("GRPO: %s reward, %s; %d prompt windows", cfg.reward.name, arith, len(windows))

    # LoRA on the transformer; everything else frozen. B = 0 at start: the policy equals the reference.
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.action_encoder):
        if module is not None:
            module.requires_grad_(False).eval()
    torch.manual_seed(cfg.seed)  # LoRA A matrices are drawn from the global generator
    targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n, _ in pipe.transformer.named_modules())]
    pipe.transformer.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, target_modules=targets))
    params = {n: p for n, p in pipe.transformer.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW(params.values(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    selection = None
    if cfg.val_every:
        val_windows = ClipWindows(ds, val_eps, cfg.camera, fps, h + cfg.num_future_frames,
                                  tuple(pipe.config.image_size), progress=False)
        selection = Selection(cfg, pipe, scorer, val_windows, params)
        log.info("checkpoint selection: %d validation windows of %d held-out episodes, every %d iterations",
                 cfg.val_windows, len(val_eps), cfg.val_every)

    step, elapsed = 0, 0.0
    ckpt = run_dir / "checkpoint"
    if (ckpt / STATE_FILE).exists():
        state = torch.load(ckpt / STATE_FILE, weights_only=False)
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(state["params"][k])
        optimizer.load_state_dict(state["optimizer"])
        step, elapsed = state["step"], state["elapsed"]
        if selection is not None:
            selection.load_state_dict(state.get("selection"))
        log.info("resumed from %s at step %d", ckpt, step)

    writer = SummaryWriter(str(run_dir / "tb"), purge_step=step) if rank == 0 else None
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"grpo {cfg.reward.name}", unit="it", disable=rank != 0)
    t0 = time.time() - elapsed
    if rank == 0 and selection is not None and selection.start is None:
        start = selection.begin()  # inside the time budget, as every later validation
        log_validation(run_dir, writer, {"step": 0, **start, "eligible": True, "selected_step": 0})
    g, mb = cfg.group_size, cfg.micro_batch
    my_prompts = slice(rank * cfg.prompts_per_step // world, (rank + 1) * cfg.prompts_per_step // world)
    while step < cfg.max_steps:
        timing = {}
        rng = np.random.default_rng((cfg.seed, step))
        # 1. prompts: the same global draw on every process, each takes its groups
        episodes, starts = windows.sample_index(rng, cfg.prompts_per_step)
        sde_steps, train_steps = choose_train_steps(cfg.train_timesteps, cfg.steps, rng, cfg.train_fraction,
                                                    cfg.early_steps, tuple(cfg.sde_window))
        frames, actions, texts = windows.batch(episodes[my_prompts], starts[my_prompts])
        frames, actions = frames.repeat_interleave(g, 0), actions.repeat_interleave(g, 0)
        texts = [t for t in texts for _ in range(g)]
        history, truth = frames[:, :h], frames[:, h:]
        first = my_prompts.start * g
        seeds = [cfg.seed * 1_000_003 + step * 10_007 + first + j for j in range(len(texts))]

        # 2. sampling, in micro-batch chunks
        t = time.time()
        trajs = []
        for c in range(0, len(texts), mb):
            sl = slice(c, c + mb)
            inputs = pipe.prepare(history[sl], texts[sl], actions[sl] if cfg.reward.mode == "simulator" else None,
                                  num_frames=cfg.num_future_frames, seed=seeds[sl])
            trajs.append(sample_sde(pipe, inputs, seeds[sl], cfg.steps, cfg.noise_level, sde_steps, cfg.flow_shift))
        timing["sampling"] = time.time() - t

        # 3. decoding (latents -> frames -> IDM actions) and rewards
        t = time.time()
        with torch.no_grad():
            pred = torch.cat([pipe.decode(tr.latents[-1], cfg.num_future_frames, tr.inputs.detail) for tr in trajs])
            decoded = scorer.decode_actions(history, pred)
        timing["decoding"] = time.time() - t
        t = time.time()
        rewards = scorer(decoded, history, pred, truth, actions[:, h - 1:])
        timing["reward"] = time.time() - t

        # 4. advantages per group (groups never span processes)
        adv, keep, counts, total = advantages_of(cfg, rewards, scorer.weights)

        # 5. update: mini-batches of micro-batch chunks, gradient accumulation, one optimiser step each
        t = time.time()
        chunks_per_update = len(trajs) // cfg.updates_per_step
        stats = {"ratio": [], "clipped": [], "policy_loss": []}
        splits = []  # per mini-batch: the policy and KL terms' gradient norms (log_grad_split)
        kl_by_step: dict[int, list[torch.Tensor]] = {}  # denoising step index -> its samples' KL
        grad_norm = torch.zeros(())
        for u in range(cfg.updates_per_step):
            mine = range(u * chunks_per_update, (u + 1) * chunks_per_update)
            kept = torch.tensor(float(sum(keep[c * mb:(c + 1) * mb].sum() for c in mine)))
            if world > 1:
                dist.all_reduce(kept)
            optimizer.zero_grad(set_to_none=True)
            if kept == 0:
                continue  # nothing to learn from in this mini-batch (all groups dropped)
            norm = kept * len(train_steps)
            policy_grad = [torch.zeros_like(p) for p in params.values()] if cfg.log_grad_split else []
            for c in mine:
                sl = slice(c * mb, (c + 1) * mb)
                traj, a, k = trajs[c], adv[sl], keep[sl].float()
                for i in train_steps:
                    logp, mean, std = step_log_prob(pipe, traj, i, slice(None), cfg.noise_level)
                    policy, ratio, clipped = ppo_loss(logp, traj.log_probs[:, i], a, cfg.clip_range)
                    loss = (policy * k).sum() / norm
                    if cfg.log_grad_split:  # the policy term's own gradient; the KL term's is the total minus it
                        for acc, grad in zip(policy_grad, torch.autograd.grad(loss, list(params.values()),
                                                                              retain_graph=True)):
                            acc += grad
                    if cfg.kl_beta > 0:
                        _, mean_ref, _ = step_log_prob(pipe, traj, i, slice(None), cfg.noise_level, reference=True)
                        kl = gaussian_kl(mean, mean_ref, std)
                        loss = loss + cfg.kl_beta * (kl * k).sum() / norm
                        kl_by_step.setdefault(i, []).append(kl[k > 0].detach())
                    loss.backward()
                    stats["ratio"].append(ratio[k > 0].detach())
                    stats["clipped"].append(clipped[k > 0].float().detach())
                    stats["policy_loss"].append(policy[k > 0].detach())
            if world > 1:
                for grad in [*(p.grad for p in params.values()), *policy_grad]:
                    dist.all_reduce(grad)
            if cfg.log_grad_split:
                splits.append(grad_split(policy_grad, [p.grad for p in params.values()]))
            grad_norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
            optimizer.step()
        timing["update"] = time.time() - t
        step += 1
        bar.update(1)

        # 6. log, checkpoint, videos
        out_of_time = time.time() - t0 > 60 * cfg.max_minutes
        last = step == cfg.max_steps or out_of_time
        if rank == 0 and (step % cfg.log_every == 0 or last):
            cat = {k: torch.cat(v) if v else torch.zeros(0) for k, v in stats.items()}
            cat["kl"] = torch.cat([x for v in kl_by_step.values() for x in v]) if kl_by_step else torch.zeros(0)
            finite = torch.isfinite(total.total)
            record = {"step": step, "reward": float(total.total[finite].mean()) if finite.any() else float("nan"),
                      **{f"reward/{k}": float(v[torch.isfinite(v)].mean()) for k, v in total.components.items()
                         if torch.isfinite(v).any()},
                      "kl": float(cat["kl"].mean()) if cat["kl"].numel() else 0.0,
                      **{f"kl/step_{i:02d}": float(torch.cat(v).mean()) for i, v in sorted(kl_by_step.items())
                         if sum(x.numel() for x in v)},
                      "clip_fraction": float(cat["clipped"].mean()) if cat["clipped"].numel() else 0.0,
                      "ratio_mean": float(cat["ratio"].mean()) if cat["ratio"].numel() else 1.0,
                      "ratio_min": float(cat["ratio"].min()) if cat["ratio"].numel() else 1.0,
                      "ratio_max": float(cat["ratio"].max()) if cat["ratio"].numel() else 1.0,
                      "policy_loss": float(cat["policy_loss"].mean()) if cat["policy_loss"].numel() else 0.0,
                      "zero_std_ratio": counts["zero_std_groups"] / max(counts["groups"], 1),
                      "dropped_nonfinite": counts["nonfinite_rewards"], "grad_norm": float(grad_norm),
                      **{k: float(np.mean([s[k] for s in splits])) for k in GRAD_SPLIT_KEYS if splits},
                      "trained_steps": len(train_steps), **{f"time/{k}": v for k, v in timing.items()},
                      "minutes": (time.time() - t0) / 60}
            for k, v in record.items():
                if k != "step":
                    writer.add_scalar(k, v, step)
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(reward=f"{record['reward']:.4f}", kl=f"{record['kl']:.2e}")
        if rank == 0 and cfg.video_every and (step % cfg.video_every == 0 or last):
            # the first group: history then prediction, its rollouts side by side
            video = torch.cat(list(torch.cat([history[:g], pred[:g]], dim=1)), dim=-1)
            write_mp4(run_dir / "videos" / f"step_{step:05d}.mp4",
                      (video.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), fps=fps)
        if rank == 0 and selection is not None and (step % cfg.val_every == 0 or last):
            log_validation(run_dir, writer, selection.update(step, params))
        if rank == 0 and (step % cfg.checkpoint_every == 0 or last):
            save_state(ckpt, params, optimizer, step, time.time() - t0,
                       None if selection is None else selection.state_dict())
        if out_of_time:
            log.warning("time budget of %.1f min spent at step %d of %d; stopping", cfg.max_minutes, step, cfg.max_steps)
            break
    bar.close()
    if rank == 0:
        writer.close()
        if selection is not None:  # the checkpoint keeps the last iteration's adapters; the model is the selected
            with torch.no_grad():
                for k, p in params.items():
                    p.copy_(selection.best_params[k])
            atomic_write_json(run_dir / SELECTION_FILE, selection.summary())
            best = selection.best
            log.info("selected iteration %d of %d: validation reward %.4g (start %.4g), LPIPS %.4g (%.4g), "
                     "agreement %.4g (%.4g)", best["step"], step, best["reward"], selection.start["reward"],
                     best["lpips"], selection.start["lpips"], best["agreement"], selection.start["agreement"])
        save_lora_model(pipe, cfg.checkpoint, run_dir / "model")
        log.info("saved %s", run_dir / "model")
    if world > 1:
        dist.barrier()
    return run_dir / "model"


def save_state(path: Path, params: dict[str, torch.nn.Parameter], optimizer, step: int, elapsed: float,
               selection: dict | None) -> None:
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save({"params": {k: p.detach().clone() for k, p in params.items()}, "optimizer": optimizer.state_dict(),
                "step": step, "elapsed": elapsed, "selection": selection}, tmp / STATE_FILE)
    replace_dir(tmp, path)


def log_validation(run_dir: Path, writer: SummaryWriter, record: dict) -> None:
    for k in (*VALIDATION_SCORES, *EXECUTABILITY_VALIDATION):
        if k in record:
            writer.add_scalar(f"val/{k}", record[k], record["step"])
    with open(run_dir / VALIDATION_LOG, "a") as f:
        f.write(json.dumps(record) + "\n")
    log.info("validation at iteration %d: reward %.4g, LPIPS %.4g, agreement %.4g%s%s", record["step"],
             record["reward"], record["lpips"], record["agreement"],
             f", smoothness {record['smoothness']:.4g}" if "smoothness" in record else "",
             "" if record["eligible"] else " (outside the tolerances)")


@hydra.main(version_base=None, config_path="../configs", config_name="grpo")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, GRPOConfig)
    save_resolved_config(dcfg, cfg.run_dir, "grpo_config.yaml")
    train(cfg)


if __name__ == "__main__":
    main()
