"""The world model's denoiser: diffusers' ``WanTransformer3DModel`` plus a zero-initialised action encoder.

Convention (diffusers' flow matching, used throughout ``world_model``): a latent at noise level
``sigma`` in [0, 1] is ``x_sigma = (1 - sigma) * x_data + sigma * noise`` and the transformer
predicts the velocity ``v = noise - x_data``; Wan's timestep is ``1000 * sigma``. (DESIGN.md
writes the same path with ``t = 1 - sigma`` and target ``x_data - noise``.)

Conditioning:

* **History** (diffusion forcing): every latent frame has its own noise level. The timestep is
  given per token, ``(B, seq_len)``, which the Wan blocks accept (Wan2.2 TI2V uses the same hook),
  so history frames can be clean (sigma 0) or lightly noised while future frames are noisy.
  For image-to-video checkpoints (``in_channels = 2 * z + 4``: noisy latent, 4 mask channels, condition
  latent, as Wan2.1-I2V and LVP) the history is also given in the condition channels, and the future
  frames' condition channels hold zeros or the newest history latent (``i2v_condition``).
* **Instruction**: text-encoder states through the transformer's cross-attention.
* **Actions** (optional): the 14-D actions of the pixel frames each latent frame covers go through
  an MLP whose last layer is zero-initialised, and are added to the timestep embedding of that
  frame's tokens. At initialisation the output is bit-identical to the model without actions, so a
  pretrained checkpoint starts unchanged; a per-sample mask implements action dropout, so one
  checkpoint serves as visual planner (no actions) and as action-conditioned simulator.

Prediction (``prediction`` in the pipeline config): Wan checkpoints predict the velocity. A ``residual``
model predicts the clean latent of each frame minus the newest history latent, and its velocity is
derived, ``v = (x_sigma - x_data) / sigma`` (``residual_to_velocity``); with a zero-initialised output
layer a fresh residual model imagines the newest frame held still, and training spends its steps on the
motion (the tiny preset, which trains from scratch in minutes). Samplers and GRPO only see velocities.

A ``gated_residual`` model (``out_channels = 2 z``) outputs a residual ``F`` and a gate ``G`` per latent value;
its residual is ``F + G * c(sigma) * (x_sigma - (1 - sigma) * reference)``, where ``c(sigma) = s_d^2 (1 - sigma) /
(s_d^2 (1 - sigma)^2 + sigma^2)`` is the linear least-squares gain that recovers a residual of standard deviation
``s_d`` (``skip_sigma_data``, 1 by default) from the noisy input (EDM's skip connection, Karras et al. 2022,
written for this flow path and reference). With ``s_d = 1`` the gain is about 1 from sigma 0 to 0.5, and a
gate that opens there keeps part of the initial noise through the sampler; a small ``s_d`` (0.2: gain 0.94
at sigma 0.1, 0.08 at 0.5) confines the skip to the last, low-noise steps. A plain
residual model has to carry the noisy input's exact values through the transformer to use them, and at low
noise it does not (``eva-eval-wm``'s denoiser diagnostic); here it only decides, per value, how much of them to
take. Zero-initialised, ``F = G = 0``: a fresh model still holds the newest frame.

A ``masked_residual`` model (``out_channels = z + 1``) outputs a residual ``F`` and one change logit per latent
position (an 8x8 pixel block of the tiny preset). Its residual is ``F`` where the logit is positive and exactly zero
elsewhere: a position it calls unchanged keeps the newest history latent to the last bit. Training fits ``F`` as a
``residual`` model does and the logit by binary cross-entropy on whether the true latent moved (``change_mask``;
the masks of video prediction models, Finn et al. 2016, made binary for a denoiser). A plain residual model never
outputs exactly zero, so its samples carry a faint block texture over the static scene that copying does not.
Zero-initialised, the logit is 0 (unchanged) and ``F = 0``: a fresh model holds the newest frame. Sampling opens
a position where its logit exceeds ``change_threshold`` (0 by default, probability 1/2): a higher threshold trades
missed motion for fewer static positions opened by mistake.

``velocity()`` is the forward pass (the transformer's output: the velocity, or the residual of a
residual model), written out so the layer calls are visible; it uses the
transformer's own submodules, so its weights keep diffusers' layout and load from real Wan checkpoints.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from configs.constants import ACTION_DIM, FUTURE_CONDITIONS, RESIDUAL_PREDICTIONS

NUM_TRAIN_TIMESTEPS = 1000  # Wan's timestep = 1000 * sigma
I2V_MASK_CHANNELS = 4  # Wan2.1-I2V: one mask channel per pixel frame of a latent frame


class ActionEncoder(ModelMixin, ConfigMixin):
    """Actions of the pixel frames of each latent frame -> an offset of that frame's timestep embedding.

    Input ``(B, F, frames_per_latent, action_dim)`` in physical units; they are normalised with the
    training-set statistics stored as buffers (so they travel inside the checkpoint). The last layer is
    zero-initialised: a fresh encoder adds exactly zero.
    """

    @register_to_config
    def __init__(self, action_dim: int = ACTION_DIM, frames_per_latent: int = 4, hidden_dim: int = 256,
                 embed_dim: int = 1536):
        super().__init__()
        self.linear_1 = nn.Linear(action_dim * frames_per_latent, hidden_dim)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(hidden_dim, embed_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))

    def set_normalization(self, mean, std, min_std: float = 1e-3) -> None:
        self.action_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.action_std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(min_std))

    def forward(self, actions: torch.Tensor) -> torch.Tensor:
        b, f, n, a = actions.shape
        if (n, a) != (self.config.frames_per_latent, self.config.action_dim):
            raise ValueError(f"actions: expected (B, F, {self.config.frames_per_latent}, {self.config.action_dim}) "
                             f"per latent frame, got {tuple(actions.shape)}")
        x = (actions - self.action_mean) / self.action_std
        return self.linear_2(self.act(self.linear_1(x.reshape(b, f, n * a))))


def actions_per_latent_frame(actions: torch.Tensor, temporal_stride: int) -> torch.Tensor:
    """Per-pixel-frame actions (B, T, A) with T = 1 + stride * k -> (B, 1 + k, stride, A).

    The Wan VAE encodes frame 0 alone and then ``stride`` frames per latent frame; latent frame 0
    gets frame 0's action repeated, latent frame j the actions of pixel frames 1 + stride*(j-1) .. stride*j.
    """
    b, t, a = actions.shape
    if (t - 1) % temporal_stride:
        raise ValueError(f"actions: {t} frames; expected 1 + {temporal_stride}*k to match the VAE's temporal stride")
    first = actions[:, :1].expand(b, temporal_stride, a).unsqueeze(1)
    rest = actions[:, 1:].reshape(b, (t - 1) // temporal_stride, temporal_stride, a)
    return torch.cat([first, rest], dim=1)


def i2v_condition(history_latents: torch.Tensor, num_history: int, num_frames: int,
                  future: str = "zeros") -> torch.Tensor:
    """Mask + condition-latent channels of image-to-video checkpoints, (B, 4 + z, F, h, w).

    The first ``num_history`` latent frames carry the (clean) history latents and a mask of ones, as
    Wan2.1-I2V marks its known frames. The future frames have a mask of zeros and, in their condition
    channels, zeros (``future="zeros"``, Wan's layout) or the newest history latent
    (``future="last_history"``: every future token sees the frame it most likely resembles at its own
    position, so copying is a per-token map and training spends its steps on the motion).
    """
    if future not in FUTURE_CONDITIONS:
        raise ValueError(f"future condition '{future}': expected one of {FUTURE_CONDITIONS}")
    b, z, _, h, w = history_latents.shape
    cond = history_latents.new_zeros(b, z, num_frames, h, w)
    cond[:, :, :num_history] = history_latents[:, :, :num_history]
    if future == "last_history":
        cond[:, :, num_history:] = history_latents[:, :, num_history - 1:num_history]
    mask = history_latents.new_zeros(b, I2V_MASK_CHANNELS, num_frames, h, w)
    mask[:, :, :num_history] = 1.0  # one channel per pixel frame: all pixel frames of a history latent are known
    return torch.cat([mask, cond], dim=1)


SIGMA_FLOOR = 1e-3  # residual_to_velocity divides by sigma; history frames sit at sigma 0


def residual_to_velocity(residual: torch.Tensor, latents: torch.Tensor, frame_sigmas: torch.Tensor,
                         reference: torch.Tensor) -> torch.Tensor:
    """Velocity of a residual model: clean latents ``reference + residual`` (reference: the newest history
    latent, (B, z, 1, h, w)) seen from ``latents`` at per-frame noise levels (B, F). Frames at sigma 0 get a
    finite, unused value."""
    sigma = frame_sigmas.clamp_min(SIGMA_FLOOR).view(*frame_sigmas.shape[:1], 1, -1, 1, 1)
    return (latents - (reference + residual)) / sigma


def change_mask(latents: torch.Tensor, reference: torch.Tensor, tol: float) -> torch.Tensor:
    """1 where a latent position (B, 1, F, h, w) differs from ``reference`` by more than ``tol`` in some channel:
    the target of a ``masked_residual`` model's change logit."""
    return ((latents - reference).abs().amax(1, keepdim=True) > tol).float()


def predicted_residual(out: torch.Tensor, latents: torch.Tensor, frame_sigmas: torch.Tensor, reference: torch.Tensor,
                       prediction: str, skip_sigma_data: float = 1.0, change_threshold: float = 0.0) -> torch.Tensor:
    """The residual (clean latents minus ``reference``) of a ``residual``, ``gated_residual`` or ``masked_residual``
    model's output; ``skip_sigma_data`` is the residual scale the gated skip's gain assumes, ``change_threshold``
    the logit above which a masked residual model's position counts as changed (module docstring)."""
    if prediction == "residual":
        return out
    if prediction == "masked_residual":  # the residual where the change logit says the position moves, else 0
        return out[:, :-1] * (out[:, -1:] > change_threshold)
    if prediction != "gated_residual":
        raise ValueError(f"prediction '{prediction}' has no residual (expected one of {RESIDUAL_PREDICTIONS})")
    z = out.shape[1] // 2
    sigma = frame_sigmas.view(*frame_sigmas.shape[:1], 1, -1, 1, 1)
    var = skip_sigma_data ** 2
    gain = var * (1 - sigma) / (var * (1 - sigma) ** 2 + sigma ** 2)
    return out[:, :z] + out[:, z:] * gain * (latents - (1 - sigma) * reference)


def zero_output_layer(transformer: WanTransformer3DModel) -> None:
    """A fresh residual model predicts a zero residual: the newest history frame, held still."""
    nn.init.zeros_(transformer.proj_out.weight)
    nn.init.zeros_(transformer.proj_out.bias)


def velocity(transformer: WanTransformer3DModel, latents: torch.Tensor, frame_sigmas: torch.Tensor,
             text_states: torch.Tensor, *, action_encoder: ActionEncoder | None = None,
             actions: torch.Tensor | None = None, action_mask: torch.Tensor | None = None,
             condition: torch.Tensor | None = None) -> torch.Tensor:
    """Predicted velocity ``noise - x_data`` for latents (B, z, F, h, w) at per-frame noise levels (B, F).

    ``actions`` (B, F, frames_per_latent, A) need ``action_encoder``; ``action_mask`` (B,) of 0/1
    switches them off per sample (action dropout, or a batch mixing both modes). ``condition`` is the
    mask + condition-latent block of image-to-video checkpoints (see ``i2v_condition``).
    """
    t = transformer
    b, _, f, h, w = latents.shape
    p_t, p_h, p_w = t.config.patch_size
    if p_t != 1:
        raise ValueError(f"per-frame noise levels need a temporal patch size of 1, got {p_t}")
    if frame_sigmas.shape != (b, f):
        raise ValueError(f"frame_sigmas: expected ({b}, {f}) (one noise level per latent frame), "
                         f"got {tuple(frame_sigmas.shape)}")
    x = latents if condition is None else torch.cat([latents, condition], dim=1)
    if x.shape[1] != t.config.in_channels:
        raise ValueError(f"transformer expects {t.config.in_channels} input channels, got {x.shape[1]} "
                         f"(latents {latents.shape[1]}" + ("" if condition is None else f" + condition "
                                                             f"{condition.shape[1]}") + ")")
    dtype = t.patch_embedding.weight.dtype
    rotary_emb = t.rope(x)
    # one sample at a time: the convolution picks its kernel by batch size, and a sample's result
    # must not depend on the rest of the batch
    hidden = torch.cat([t.patch_embedding(sample[None]) for sample in x.to(dtype)])
    hidden = hidden.flatten(2).transpose(1, 2).contiguous()  # (B, L, D)
    tokens_per_frame = (h // p_h) * (w // p_w)

    # per-token timestep embedding (diffusion forcing), plus the actions of each latent frame
    ce = t.condition_embedder
    timestep = (frame_sigmas * NUM_TRAIN_TIMESTEPS).repeat_interleave(tokens_per_frame, dim=1)
    temb_in = ce.timesteps_proj(timestep.flatten()).unflatten(0, (b, -1))
    temb = ce.time_embedder(temb_in.to(ce.time_embedder.linear_1.weight.dtype)).to(dtype)  # (B, L, D)
    if actions is not None:
        if action_encoder is None:
            raise ValueError("actions were given but the world model has no action encoder")
        offset = action_encoder(actions.to(action_encoder.linear_1.weight.dtype)).to(dtype)  # (B, F, D)
        if action_mask is not None:
            offset = offset * action_mask.to(dtype).view(b, 1, 1)
        temb = temb + offset.repeat_interleave(tokens_per_frame, dim=1)
    timestep_proj = ce.time_proj(ce.act_fn(temb)).unflatten(2, (6, -1))  # (B, L, 6, D)
    encoder_states = ce.text_embedder(text_states.to(dtype))

    for block in t.blocks:
        if torch.is_grad_enabled() and t.gradient_checkpointing:
            hidden = t._gradient_checkpointing_func(block, hidden, encoder_states, timestep_proj, rotary_emb)
        else:
            hidden = block(hidden, encoder_states, timestep_proj, rotary_emb)

    shift, scale = (t.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
    hidden = (t.norm_out(hidden.float()) * (1 + scale.squeeze(2)) + shift.squeeze(2)).type_as(hidden)
    hidden = t.proj_out(hidden)
    # unpatchify (B, L, p_t*p_h*p_w*C) -> (B, C, F, H, W)
    hidden = hidden.reshape(b, f, h // p_h, w // p_w, p_h, p_w, -1)
    return hidden.permute(0, 6, 1, 2, 4, 3, 5).reshape(b, -1, f, h, w).float()
