"""GRPO for flow-matching world models (Flow-GRPO), the pieces the training script reads top to bottom.

Convention (as in ``world_model``): ``x_sigma = (1 - sigma) x_data + sigma noise``, the model predicts
``v = noise - x_data``, sigma falls from 1 to 0, ``dt = sigma_next - sigma < 0``.

SDE step (Flow-GRPO, eq. 12 in our convention, DESIGN.md section 4): with noise scale
``s = a sqrt(sigma / (1 - sigma))``,

    mean = x (1 + s^2 dt / (2 sigma)) + v (1 + s^2 (1 - sigma) / (2 sigma)) dt
    x'   = mean + s sqrt(-dt) eps

which has the marginals of the ODE ``x' = x + v dt`` (the ODE is the case a = 0). At sigma = 1 the
scale uses the next grid sigma in the denominator, as Flow-GRPO does. Log-probabilities of the
Gaussian transition are computed in float32 and averaged over the elements of the future latent frames
(history frames are clean and not sampled). The KL to the reference (the same model with LoRA off)
is the closed-form KL of two Gaussians with the same covariance: ``|mean - mean_ref|^2 / (2 s^2 (-dt))``,
averaged the same way.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from world_model.pipeline import RolloutInputs, WorldModelPipeline, make_scheduler

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def sde_sigmas(steps: int, flow_shift: float) -> torch.Tensor:
    """The (steps + 1) shifted sigmas of Wan's Euler flow-matching grid, from 1 down to 0."""
    scheduler = make_scheduler("euler", flow_shift)
    scheduler.set_timesteps(steps)
    return scheduler.sigmas.float().cpu()


def noise_scale(sigmas: torch.Tensor, i: int, noise_level: float) -> float:
    sigma = float(sigmas[i])
    denom_sigma = float(sigmas[1]) if sigma >= 1.0 else sigma
    return noise_level * math.sqrt(sigma / (1.0 - denom_sigma))


def sde_mean_std(x: torch.Tensor, v: torch.Tensor, sigmas: torch.Tensor, i: int, noise_level: float
                 ) -> tuple[torch.Tensor, float]:
    """Mean of the transition from step i and its per-element standard deviation s sqrt(-dt)."""
    sigma, dt = float(sigmas[i]), float(sigmas[i + 1] - sigmas[i])
    s = noise_scale(sigmas, i, noise_level)
    x, v = x.float(), v.float()
    mean = x * (1 + s * s * dt / (2 * sigma)) + v * (1 + s * s * (1 - sigma) / (2 * sigma)) * dt
    return mean, s * math.sqrt(-dt)


def gaussian_log_prob(x_next: torch.Tensor, mean: torch.Tensor, std: float) -> torch.Tensor:
    """Per-sample mean over elements of log N(x_next; mean, std^2), float32; (B,)."""
    if std == 0:
        raise ValueError("log-probability of a deterministic (noise level 0) step is undefined")
    lp = -((x_next.float() - mean) ** 2) / (2 * std * std) - math.log(std) - LOG_SQRT_2PI
    return lp.flatten(1).mean(1)


def gaussian_kl(mean: torch.Tensor, mean_ref: torch.Tensor, std: float) -> torch.Tensor:
    """KL(N(mean, s^2) || N(mean_ref, s^2)) per element, averaged per sample; (B,)."""
    return (((mean - mean_ref) ** 2) / (2 * std * std)).flatten(1).mean(1)


GRAD_SPLIT_KEYS = ("grad_norm/policy", "grad_norm/kl", "grad_cos/policy_kl")


def grad_split(policy: list[torch.Tensor], total: list[torch.Tensor]) -> dict[str, float]:
    """How the update divides between its two terms, before clipping: the norms of the PPO term's gradient
    (``policy``) and of the KL term's (``total - policy``), and the cosine between them (negative: the KL
    pulls against the policy term)."""
    kl = [t - p for p, t in zip(policy, total)]
    p_sq = sum(float(p.double().pow(2).sum()) for p in policy)
    k_sq = sum(float(k.double().pow(2).sum()) for k in kl)
    dot = sum(float((p.double() * k.double()).sum()) for p, k in zip(policy, kl))
    cos = dot / math.sqrt(p_sq * k_sq) if p_sq > 0 and k_sq > 0 else 0.0
    return dict(zip(GRAD_SPLIT_KEYS, (math.sqrt(p_sq), math.sqrt(k_sq), cos)))


@dataclass
class Trajectory:
    """What the update needs of a batch of SDE rollouts."""

    inputs: RolloutInputs
    latents: list[torch.Tensor]  # x_0 .. x_S, each (B, z, F, h, w) with clean history
    log_probs: torch.Tensor  # (B, S); 0 at deterministic (ODE) steps
    sde_steps: list[int]  # the steps sampled with noise (the only trainable ones)
    sigmas: torch.Tensor


def step_noise(seeds: list[int], step: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Per-sample SDE noise of one step, from (seed, step): independent of how the batch is split."""
    return torch.stack([torch.from_numpy(np.random.default_rng((int(s), step)).standard_normal(shape,
                                                                                              dtype=np.float32))
                        for s in seeds])


@torch.no_grad()
def sample_sde(pipe: WorldModelPipeline, inputs: RolloutInputs, seeds: list[int], steps: int, noise_level: float,
               sde_steps: list[int], flow_shift: float) -> Trajectory:
    """Roll out with the SDE at ``sde_steps`` and the ODE (Euler) elsewhere, recording every latent."""
    sigmas = sde_sigmas(steps, flow_shift)
    hist = inputs.hist_latents
    n_hist = hist.shape[2]
    x = torch.cat([hist, inputs.noise], dim=2)
    latents, log_probs = [x], torch.zeros(x.shape[0], steps)
    for i in range(steps):
        v = pipe.predict_velocity(x, sigmas[i], inputs)[:, :, n_hist:]
        xf = x[:, :, n_hist:]
        if i in sde_steps and noise_level > 0:
            mean, std = sde_mean_std(xf, v, sigmas, i, noise_level)
            nxt = mean + std * step_noise(seeds, i, tuple(xf.shape[1:])).to(mean.device)
            log_probs[:, i] = gaussian_log_prob(nxt, mean, std).cpu()
        else:
            nxt = xf.float() + v * float(sigmas[i + 1] - sigmas[i])
        x = torch.cat([hist, nxt.to(hist.dtype)], dim=2)
        latents.append(x)
    return Trajectory(inputs, latents, log_probs, list(sde_steps), sigmas)


def select_inputs(inputs: RolloutInputs, idx: slice) -> RolloutInputs:
    pick = (lambda t: None if t is None else t[idx])
    return RolloutInputs(inputs.text_states[idx], inputs.hist_latents[idx], inputs.noise[idx],
                         pick(inputs.condition), pick(inputs.latent_actions), inputs.num_frames, pick(inputs.detail))


@contextmanager
def adapters_disabled(pipe: WorldModelPipeline):
    """The pipeline's transformer without its LoRA adapters (the reference model) inside the block."""
    pipe.transformer.disable_adapters()
    try:
        yield
    finally:
        pipe.transformer.enable_adapters()


def step_log_prob(pipe: WorldModelPipeline, traj: Trajectory, i: int, idx: slice, noise_level: float,
                  reference: bool = False) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Recompute (log p of the recorded x_{i+1}, transition mean, std) of samples ``idx`` at step i.

    ``reference=True`` evaluates the same model with its LoRA adapters disabled (no gradient).
    """
    inputs = select_inputs(traj.inputs, idx)
    x, x_next = traj.latents[i][idx], traj.latents[i + 1][idx]
    n_hist = inputs.hist_latents.shape[2]
    if reference:
        with torch.no_grad(), adapters_disabled(pipe):
            v = pipe.predict_velocity(x, traj.sigmas[i], inputs)
    else:
        v = pipe.predict_velocity(x, traj.sigmas[i], inputs)
    mean, std = sde_mean_std(x[:, :, n_hist:], v[:, :, n_hist:], traj.sigmas, i, noise_level)
    return gaussian_log_prob(x_next[:, :, n_hist:], mean, std), mean, std


def group_advantages(rewards: torch.Tensor, group_size: int, clip: float, eps: float = 1e-6,
                     min_std: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Per-prompt normalised advantages of (B,) rewards laid out as consecutive groups of ``group_size``.

    Non-finite rewards are dropped (mask 0) and left out of their group's statistics; a group whose
    finite rewards have (near-)zero spread carries no signal and is dropped whole (zero-std filtering).
    Returns (advantages with 0 where dropped, keep mask, counts for logging).
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    r = rewards.view(-1, group_size).double()
    finite = torch.isfinite(r)
    n = finite.sum(1, keepdim=True).clamp(min=1)
    r0 = torch.where(finite, r, torch.zeros_like(r))
    mean = r0.sum(1, keepdim=True) / n
    var = (torch.where(finite, r - mean, torch.zeros_like(r)) ** 2).sum(1, keepdim=True) / (n - 1).clamp(min=1)
    std = var.sqrt()
    zero_std = (std < min_std).squeeze(1) | (finite.sum(1) < 2)
    keep = finite & ~zero_std.unsqueeze(1)
    adv = torch.where(keep, ((r0 - mean) / (std + eps)).clamp(-clip, clip), torch.zeros_like(r))
    counts = {"nonfinite_rewards": int((~finite).sum()), "zero_std_groups": int(zero_std.sum()),
              "groups": int(r.shape[0])}
    return adv.view(-1).float(), keep.view(-1), counts


def ppo_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample clipped surrogate ``max(-A r, -A clip(r, 1 - e, 1 + e))``, the ratio and clipped flags."""
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    return torch.maximum(unclipped, clipped), ratio, (clipped > unclipped)


def choose_train_steps(mode: str, steps: int, rng: np.random.Generator, fraction: float, early_steps: int,
                       window: tuple[int, int]) -> tuple[list[int], list[int]]:
    """(SDE steps, trained steps) of one iteration.

    all: SDE and training at every step (Flow-GRPO). fraction: SDE everywhere, train a random
    ``fraction`` of the steps. early: SDE everywhere, train the first ``early_steps`` (VideoRLVR's
    Early-Step Focus: the high-noise steps decide the layout and motion). window: SDE and training
    inside ``[window[0], window[1])`` only, the ODE elsewhere (Flow-GRPO-Fast, MixGRPO).
    """
    every = list(range(steps))
    if mode == "all":
        return every, every
    if mode == "fraction":
        k = max(1, int(round(fraction * steps)))
        return every, sorted(rng.choice(steps, size=k, replace=False).tolist())
    if mode == "early":
        return every, every[:early_steps]
    if mode == "window":
        inside = every[window[0]:window[1]]
        return inside, inside
    raise ValueError(f"train_timesteps '{mode}': expected all, fraction, early or window")
