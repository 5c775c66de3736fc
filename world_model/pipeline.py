"""``WorldModelPipeline``: history + instruction (+ actions) -> imagined future frames.

A diffusers pipeline (``save_pretrained`` / ``from_pretrained`` write and read one folder per
component plus ``model_index.json``), with Wan's LoRA loader, so ``load_lora_weights`` takes a
``pytorch_lora_weights.safetensors`` saved by training. The denoising loop is in ``rollout``:
the history latent frames are re-set to their clean values after every step and are seen at noise
level 0, so only the future frames are denoised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler
from diffusers.loaders import WanLoraLoaderMixin

from configs.constants import RESIDUAL_PREDICTIONS, SAMPLERS
from world_model.latents import (clip_layout, codec_channels, codec_detail, codec_strides, decode_latents, encode_video,
                                 with_anchor)
from world_model.model import (actions_per_latent_frame, i2v_condition, predicted_residual, residual_to_velocity,
                                velocity)
from world_model.text import encode_instructions

log = logging.getLogger(__name__)


def make_scheduler(sampler: str, flow_shift: float):
    """Flow-matching schedulers with Wan's shifted sigmas: Euler, or UniPC (2nd order, flow prediction)."""
    if sampler == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=flow_shift)
    if sampler == "unipc":
        return UniPCMultistepScheduler(num_train_timesteps=1000, prediction_type="flow_prediction",
                                       use_flow_sigmas=True, flow_shift=flow_shift)
    raise ValueError(f"sampler '{sampler}': expected one of {SAMPLERS}")


def to_unit_float(frames, name: str) -> torch.Tensor:
    """(B, T, 3, H, W) uint8 or float in [0, 1] -> float32 in [0, 1], with a clear error otherwise."""
    frames = torch.as_tensor(frames)
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"{name}: expected (B, T, 3, H, W), got {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if not frames.is_floating_point():
        raise TypeError(f"{name}: dtype {frames.dtype}; use uint8 (0..255) or float (0..1)")
    if not torch.isfinite(frames).all():
        raise ValueError(f"{name}: NaN or inf in the frames")
    if frames.min() < -1e-3 or frames.max() > 1 + 1e-3:
        raise ValueError(f"{name}: float frames must be in [0, 1], got [{frames.min():.3g}, {frames.max():.3g}]")
    return frames.float()


@dataclass
class RolloutInputs:
    """The encoded conditioning of a batch of rollouts (``WorldModelPipeline.prepare``)."""

    text_states: torch.Tensor  # (B, L, text_dim)
    hist_latents: torch.Tensor  # (B, z, n_hist, h, w), clean
    noise: torch.Tensor  # (B, z, n_future, h, w), each sample from its own seed
    condition: torch.Tensor | None  # image-to-video mask + condition channels
    latent_actions: torch.Tensor | None  # (B, F, frames_per_latent, 14)
    num_frames: int
    detail: torch.Tensor | None = None  # (B, 1, 3, H, W): the newest frame's out-of-span detail (hold_detail)


class WorldModelPipeline(DiffusionPipeline, WanLoraLoaderMixin):
    model_cpu_offload_seq = "text_encoder->transformer->vae"
    _optional_components = ["action_encoder"]

    def __init__(self, tokenizer, text_encoder, transformer, vae, scheduler, action_encoder=None,
                 num_history_frames: int = 4, max_text_length: int = 16, image_size=(128, 128), fps: int = 10,
                 future_condition: str = "zeros", prediction: str = "velocity", hold_detail: bool = False,
                 skip_sigma_data: float = 1.0, change_threshold: float = 0.0):
        super().__init__()
        self.register_modules(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
                              scheduler=scheduler, action_encoder=action_encoder)
        self.register_to_config(num_history_frames=num_history_frames, max_text_length=max_text_length,
                                image_size=list(image_size), fps=fps, future_condition=future_condition,
                                prediction=prediction, hold_detail=hold_detail, skip_sigma_data=skip_sigma_data,
                                change_threshold=change_threshold)

    @property
    def temporal_stride(self) -> int:
        return codec_strides(self.vae)[0]

    def check_inputs(self, history: torch.Tensor, num_frames: int, actions: torch.Tensor | None) -> None:
        h_req = self.config.num_history_frames
        size = tuple(self.config.image_size)
        if history.shape[1] != h_req:
            raise ValueError(f"history: {history.shape[1]} frames, the world model needs the last {h_req}")
        if tuple(history.shape[-2:]) != size:
            raise ValueError(f"history: frames are {history.shape[-2]}x{history.shape[-1]}, the world model "
                             f"expects {size[0]}x{size[1]}")
        clip_layout(h_req, num_frames, self.temporal_stride)  # raises on a frame count off the VAE stride
        if actions is not None:
            if self.action_encoder is None:
                raise ValueError("actions given, but this world model has no action encoder")
            want = (history.shape[0], h_req + num_frames, self.action_encoder.config.action_dim)
            if tuple(actions.shape) != want:
                raise ValueError(f"actions: expected {want} (batch, history + future frames, action_dim), "
                                 f"got {tuple(actions.shape)}")

    def encode_text(self, instructions: list[str]) -> torch.Tensor:
        return encode_instructions(self.tokenizer, self.text_encoder, instructions, self.config.max_text_length)

    def model_inputs(self, history_latents: torch.Tensor, num_latent_frames: int, actions: torch.Tensor | None):
        """Condition block (image-to-video checkpoints only) and per-latent-frame actions."""
        n_hist = history_latents.shape[2]
        condition = None
        if self.transformer.config.in_channels == 2 * codec_channels(self.vae) + 4:
            condition = i2v_condition(history_latents, n_hist, num_latent_frames,
                                      self.config.get("future_condition", "zeros"))
        latent_actions = None
        if actions is not None:  # the anchor frame takes the first history frame's action
            latent_actions = actions_per_latent_frame(with_anchor(actions), self.temporal_stride)
        return condition, latent_actions

    @torch.no_grad()
    def prepare(self, history, instruction: str | list[str], actions=None, *, num_frames: int = 8,
                seed: int | list[int] = 0) -> RolloutInputs:
        """Check and encode the conditioning of a rollout; draw each sample's initial noise from its own seed."""
        history = to_unit_float(history, "history")
        b = history.shape[0]
        actions = None if actions is None else torch.as_tensor(actions, dtype=torch.float32)
        self.check_inputs(history, num_frames, actions)
        texts = [instruction] * b if isinstance(instruction, str) else list(instruction)
        if len(texts) != b:
            raise ValueError(f"instruction: {len(texts)} texts for a batch of {b}")
        seeds = [seed + i for i in range(b)] if isinstance(seed, int) else list(seed)
        if len(seeds) != b:
            raise ValueError(f"seed: {len(seeds)} seeds for a batch of {b}")

        device = self.transformer.device
        hist_latents = encode_video(self.vae, with_anchor(history).to(device))
        n_hist, n_future = clip_layout(self.config.num_history_frames, num_frames, self.temporal_stride)
        noise = initial_noise(seeds, hist_latents, n_future)
        condition, latent_actions = self.model_inputs(hist_latents, n_hist + n_future,
                                                      None if actions is None else actions.to(device))
        return RolloutInputs(self.encode_text(texts), hist_latents, noise, condition, latent_actions, num_frames,
                             self.held_detail(history))

    @torch.no_grad()
    def prepare_candidates(self, history, instruction: str, actions, *, num_frames: int = 8, seed: int = 0
                           ) -> RolloutInputs:
        """One history and instruction, C action sequences (C, H + num_frames, 14): the conditioning of C
        rollouts with the history and the instruction encoded once (model-predictive control). Every
        candidate starts from the same noise (``seed``): common random numbers, so candidates differ only
        by their actions."""
        history = to_unit_float(history, "history")
        if history.shape[0] != 1:
            raise ValueError(f"history: candidates share one history, got a batch of {history.shape[0]}")
        actions = torch.as_tensor(actions, dtype=torch.float32)
        c = actions.shape[0]
        self.check_inputs(history.expand(c, -1, -1, -1, -1), num_frames, actions)
        device = self.transformer.device
        hist_latents = encode_video(self.vae, with_anchor(history).to(device)).expand(c, -1, -1, -1, -1)
        n_hist, n_future = clip_layout(self.config.num_history_frames, num_frames, self.temporal_stride)
        noise = initial_noise([seed], hist_latents[:1], n_future).expand(c, -1, -1, -1, -1)
        condition, latent_actions = self.model_inputs(hist_latents, n_hist + n_future, actions.to(device))
        text = self.encode_text([instruction])
        return RolloutInputs(text.expand(c, -1, -1), hist_latents, noise, condition, latent_actions, num_frames,
                             None if (d := self.held_detail(history)) is None else d.expand(c, -1, -1, -1, -1))

    def held_detail(self, history: torch.Tensor) -> torch.Tensor | None:
        """With ``hold_detail`` (a PCA PatchCodec): what the codec's span leaves out of the newest history frame,
        added to every imagined frame, so the static scene keeps its full detail and the transformer models the
        span (an untrained residual model then returns the newest frame exactly)."""
        if not self.config.get("hold_detail", False):
            return None
        return codec_detail(self.vae, history[:, -1:].to(self.transformer.device))

    def predict_velocity(self, latents: torch.Tensor, sigma: torch.Tensor | float, inputs: RolloutInputs
                         ) -> torch.Tensor:
        """The velocity of (B, z, F, h, w) latents whose future frames sit at noise level ``sigma`` (history clean)."""
        n_hist = inputs.hist_latents.shape[2]
        frame_sigmas = torch.zeros(latents.shape[0], latents.shape[2], device=latents.device)
        frame_sigmas[:, n_hist:] = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device).view(-1, 1)
        out = velocity(self.transformer, latents, frame_sigmas, inputs.text_states,
                       action_encoder=self.action_encoder, actions=inputs.latent_actions, condition=inputs.condition)
        prediction = self.config.get("prediction", "velocity")
        if prediction in RESIDUAL_PREDICTIONS:
            reference = inputs.hist_latents[:, :, -1:]
            residual = predicted_residual(out, latents, frame_sigmas, reference, prediction,
                                          self.config.get("skip_sigma_data", 1.0),
                                          self.config.get("change_threshold", 0.0))
            return residual_to_velocity(residual, latents, frame_sigmas, reference)
        return out

    def decode(self, latents: torch.Tensor, num_frames: int, detail: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, z, F, h, w) -> the last ``num_frames`` frames (B, num_frames, 3, H, W) in [0, 1], with
        ``detail`` (``RolloutInputs.detail``) added."""
        return decode_latents(self.vae, latents, detail)[:, -num_frames:]

    @torch.no_grad()
    def rollout(self, history, instruction: str | list[str], actions=None, *, num_frames: int = 8,
                steps: int = 20, seed: int | list[int] = 0, sampler: str = "euler", flow_shift: float = 3.0,
                noise_scale: float = 1.0, init_sigma: float = 1.0, progress: bool = False) -> torch.Tensor:
        """Imagine ``num_frames`` future frames.

        history: (B, H, 3, h, w) uint8 or float in [0, 1], the last H camera frames, oldest first.
        instruction: one string for the whole batch or one per sample.
        actions: optional (B, H + num_frames, 14), the actions at every history and future frame
            (action-conditioned simulation); None for the visual planner.
        seed: one seed (sample i uses seed + i) or one per sample; a sample's result does not depend on
            the rest of the batch.
        noise_scale: the initial noise's scale (a sampling temperature; 1 samples the learned distribution,
            smaller values pull samples towards its high-density region).
        init_sigma: where sampling starts (``denoise``): 1 from pure noise; below 1 from the newest history
            frame's latent noised to that level (a warm start, like SDEdit's strength), skipping the steps above.
        Returns (B, num_frames, 3, h, w) float in [0, 1].
        """
        inputs = self.prepare(history, instruction, actions, num_frames=num_frames, seed=seed)
        return self.denoise(inputs, steps=steps, sampler=sampler, flow_shift=flow_shift, noise_scale=noise_scale,
                            init_sigma=init_sigma, progress=progress)

    @torch.no_grad()
    def denoise(self, inputs: RolloutInputs, *, steps: int = 20, sampler: str = "euler", flow_shift: float = 3.0,
                noise_scale: float = 1.0, init_sigma: float = 1.0, progress: bool = False) -> torch.Tensor:
        """The sampling loop of prepared inputs -> (B, num_frames, 3, h, w) float in [0, 1]; ``noise_scale``
        multiplies the initial noise (``rollout``).

        ``init_sigma`` < 1 starts at the first step of the schedule whose sigma is at most ``init_sigma``, from
        the flow-matching interpolation ``(1 - sigma) x_ref + sigma * noise`` with ``x_ref`` the newest history
        latent in every future frame: the rollout then runs only the remaining steps and departs from the
        scene held still instead of from pure noise (SDEdit, Meng et al. 2022, with the last frame as the
        guide). 1 (the default) is the plain sampler, bit for bit."""
        if not noise_scale >= 0:
            raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
        if not 0 < init_sigma <= 1:
            raise ValueError(f"init_sigma must be in (0, 1], got {init_sigma}")
        hist = inputs.hist_latents
        scheduler = make_scheduler(sampler, flow_shift)
        scheduler.set_timesteps(steps, device=hist.device)
        noise = inputs.noise * noise_scale
        start = 0
        if init_sigma < 1:
            start = int((scheduler.sigmas[:steps] > init_sigma).sum())
            if start == steps:
                raise ValueError(f"init_sigma {init_sigma}: below every sigma of the {steps}-step schedule "
                                 f"(lowest {float(scheduler.sigmas[steps - 1]):.3f}); raise it or the steps")
            sigma0 = float(scheduler.sigmas[start])
            noise = (1 - sigma0) * hist[:, :, -1:] + sigma0 * noise
        scheduler.set_begin_index(start)
        latents = torch.cat([hist, noise], dim=2)
        timesteps = scheduler.timesteps[start:]
        for i, t in enumerate(self.progress_bar(timesteps) if progress else timesteps, start=start):
            v = self.predict_velocity(latents, scheduler.sigmas[i], inputs)
            latents = scheduler.step(v, t, latents, return_dict=False)[0]
            latents[:, :, :hist.shape[2]] = hist  # history stays clean
        return self.decode(latents, inputs.num_frames, inputs.detail)


def initial_noise(seeds: list[int], hist_latents: torch.Tensor, n_future: int) -> torch.Tensor:
    """(len(seeds), z, n_future, h, w) standard normal noise, each sample from its own seed (on the CPU, so the
    same seed gives the same noise on every device)."""
    _, z, _, h, w = hist_latents.shape
    return torch.stack([torch.randn(z, n_future, h, w, generator=torch.Generator().manual_seed(int(s)))
                        for s in seeds]).to(hist_latents.device)


LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def load_world_model(path: str | Path) -> WorldModelPipeline:
    """A saved world model, with its LoRA adapters when the folder holds ``pytorch_lora_weights.safetensors``
    (the output of LoRA SFT and of GRPO: the base pipeline plus the adapters)."""
    pipe = WorldModelPipeline.from_pretrained(path)
    if (Path(path) / LORA_WEIGHTS).is_file():
        pipe.load_lora_weights(path)
        log.info("%s: loaded LoRA adapters", path)
    return pipe
