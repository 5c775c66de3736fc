"""Automatic success judge: a camera frame and a task name -> probability that the task is done.

Real2Sim campaigns (SIMPLER, RLVR-World, WorldGym) score thousands of imagined episodes; nobody can
watch them. The judge is a small convnet trained on simulated frames labelled by the simulator's own
``check_success()`` at the instant of the frame. Rollouts of the noisy scripted expert at several noise
levels give both outcomes, and every episode runs to the task's step limit, so a successful episode
contributes frames before and after its success.

Architecture: the IDM's stride-4 patch backbone and spatial softmax (``idm.model``); the keypoints and
the channel means of the keypoint maps go through an MLP with one output logit per task. Image
normalisation statistics are buffers, so they travel inside the checkpoint (diffusers ``ModelMixin``:
``config.json`` + ``diffusion_pytorch_model.safetensors``).

An episode is judged successful when ``consecutive`` successive frames reach ``threshold``: the
simulator's protocol is success at any step, and a run of frames guards against single-frame false
positives over a long imagined episode.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from idm.model import PATCH, Backbone, SpatialSoftmax


class SuccessJudge(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(
        self,
        tasks: tuple[str, ...] = ("transfer_cube", "insertion", "lift_bar"),
        camera: str = "cam_high",
        image_size: tuple[int, int] = (128, 128),
        fps: int = 10,
        channels: tuple[int, ...] = (32, 64, 64),
        num_keypoints: int = 32,
        hidden: int = 256,
    ):
        super().__init__()
        if image_size[0] % PATCH or image_size[1] % PATCH:
            raise ValueError(f"image_size {tuple(image_size)} must be divisible by {PATCH}")
        if not tasks:
            raise ValueError("a judge needs at least one task")
        self.backbone = Backbone(3, tuple(channels), num_keypoints)
        self.spatial_softmax = SpatialSoftmax()
        self.head = nn.Sequential(
            nn.Linear(3 * num_keypoints, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, len(tasks)),
        )
        self.register_buffer("image_mean", torch.full((3,), 0.5))
        self.register_buffer("image_std", torch.full((3,), 0.25))

    def set_normalization(self, image_mean, image_std, min_std: float = 1e-3) -> None:
        self.image_mean.copy_(torch.as_tensor(image_mean, dtype=torch.float32).reshape(3))
        self.image_std.copy_(torch.as_tensor(image_std, dtype=torch.float32).reshape(3).clamp_min(min_std))

    def task_ids(self, tasks: list[str]) -> torch.Tensor:
        known = list(self.config.tasks)
        unknown = sorted({t for t in tasks if t not in known})
        if unknown:
            raise ValueError(f"the success judge was trained for tasks {known}, not {unknown}")
        return torch.tensor([known.index(t) for t in tasks], dtype=torch.long, device=self.image_mean.device)

    def forward(self, frames: torch.Tensor, task_ids: torch.Tensor) -> torch.Tensor:
        """frames (B, 3, H, W) in [0, 1], task ids (B,) -> success logits (B,)."""
        maps = self.backbone(frames, self.image_mean, self.image_std)
        features = torch.cat([self.spatial_softmax(maps), maps.mean(dim=(2, 3))], dim=-1)
        logits = self.head(features)
        return logits.gather(1, task_ids.view(-1, 1)).squeeze(1)

    def check_frames(self, frames: torch.Tensor, where: str = "frames") -> None:
        size = tuple(self.config.image_size)
        if frames.ndim != 4 or frames.shape[1] != 3 or tuple(frames.shape[2:]) != size:
            raise ValueError(f"{where}: expected (N, 3, {size[0]}, {size[1]}) float frames in [0, 1] from camera "
                             f"'{self.config.camera}', got shape {tuple(frames.shape)}")
        if not frames.is_floating_point():
            raise ValueError(f"{where}: expected float frames in [0, 1], got {frames.dtype}")
        bad = ~torch.isfinite(frames.flatten(1)).all(dim=1)
        if bad.any():
            raise ValueError(f"{where}: non-finite values in frame {int(bad.nonzero()[0])}")

    @torch.no_grad()
    def predict(self, frames: torch.Tensor, tasks: list[str], batch_size: int = 256) -> np.ndarray:
        """(N, 3, H, W) float frames in [0, 1] and N task names -> (N,) success probabilities."""
        self.check_frames(frames)
        if len(tasks) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(tasks)} task names")
        ids = self.task_ids(tasks)
        out = [torch.sigmoid(self(frames[i:i + batch_size].to(self.image_mean.device), ids[i:i + batch_size]))
               for i in range(0, len(frames), batch_size)]
        return torch.cat(out).float().cpu().numpy() if out else np.zeros(0, np.float32)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 camera frames -> (N, 3, H, W) float in [0, 1]."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.dtype} {frames.shape}")
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float().div_(255.0)


def judged_success(probabilities: np.ndarray, threshold: float, consecutive: int) -> tuple[bool, int | None]:
    """Success when ``consecutive`` successive frames reach ``threshold``; (success, index of the first frame
    of the first such run, or None)."""
    run = 0
    for i, p in enumerate(np.asarray(probabilities)):
        run = run + 1 if p >= threshold else 0
        if run >= consecutive:
            return True, i - consecutive + 1
    return False, None


def labelled_rollout(env, policy, seed: int, camera: str, every: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Run ``policy`` from ``seed`` to the task's step limit (not stopping at success) and return the frames
    of ``camera`` every ``every`` control steps, starting with the first, with ``check_success()`` at each
    frame, and whether the episode succeeded at any step (the evaluation protocol).

    The policy must not read observations (scripted, privileged experts): none are rendered between frames.
    """
    env.setup_demo(seed=seed)
    policy.reset()
    frames, labels, success = [], [], False
    for t in range(env.step_lim + 1):
        done = env.check_success()
        success |= done
        if t % every == 0:
            frames.append(env.render(camera))
            labels.append(done)
        if t < env.step_lim:
            env.take_action(policy.select_action({}))
    return np.stack(frames), np.array(labels, dtype=bool), success
