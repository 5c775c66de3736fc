"""Inverse dynamics model of EVA (section 4.1): frames I_{t-k..t+k} -> action a_t.

Each camera's 2k+1 frames are stacked on the channel axis and go through a convolutional
backbone; a spatial softmax turns every output channel into an expected image position
(x, y); an MLP maps the keypoints of all cameras to the 14-D action. Action and image
normalisation statistics are buffers, so they travel inside the checkpoint.

Checkpoints are diffusers-style: ``config.json`` (ConfigMixin) + ``model.safetensors``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from safetensors.torch import load_file, save_file
from torch import nn

from configs.constants import ACTION_DIM

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
PATCH = 4  # default stem patch size: keypoint maps are H/4 x W/4
CONFIG_NAME = "config.json"


class SpatialSoftmax(nn.Module):
    """(B, K, H, W) feature maps -> (B, 2K) expected (x, y) per channel, coordinates in [-1, 1].

    x grows to the right (width), y grows downwards (height); a learnable temperature
    sharpens or flattens the softmax. Any map size: the pixel grid is built from the input.
    """

    def __init__(self):
        super().__init__()
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, k, h, w = features.shape
        grid = dict(device=features.device, dtype=torch.float32)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, **grid), torch.linspace(-1, 1, w, **grid), indexing="ij")
        positions = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1).to(features.dtype)
        attention = torch.softmax(features.reshape(b, k, h * w) * (-self.log_temperature).exp(), dim=-1)
        # expectation of (x, y) under each channel's attention, as one matrix product (B, K, HW) @ (HW, 2)
        return (attention @ positions).reshape(b, 2 * k)


class ConvBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.GroupNorm(min(8, c_out), c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(self.norm(self.conv(x)))


class Backbone(nn.Module):
    """Stacked frames (B, 3(2k+1), H, W) -> keypoint feature maps (B, K, H/p, W/p).

    A p x p stride-p "patchify" stem (p = 4 by default), then 3x3 convolutions at that resolution:
    on a CPU this is about 1.5x faster than a 5x5 stride-2 stem followed by a stride-2 block, at
    the same keypoint-map resolution. With p = 8 the 3x3 convolutions run on a quarter of the
    positions of p = 4.
    """

    def __init__(self, in_channels: int, channels: tuple[int, ...], num_keypoints: int, patch: int = PATCH):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels[0], kernel_size=patch, stride=patch)
        self.stem_norm = nn.GroupNorm(min(8, channels[0]), channels[0])
        self.blocks = nn.ModuleList(
            ConvBlock(c_in, c_out, kernel=3, stride=1) for c_in, c_out in zip(channels[:-1], channels[1:])
        )
        self.to_keypoints = nn.Conv2d(channels[-1], num_keypoints, kernel_size=1)

    def forward(self, frames: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """frames (B, 3(2k+1), H, W), uint8 in 0..255 or float in [0, 1]; ``mean``/``std`` (3,) the
        per-colour image statistics of frames in [0, 1].

        The normalisation (frames / 255 - mean) / std is folded into the stem's weights and bias: the stem
        is a linear map without padding, so this is exact, and it saves passes over the frames. uint8
        frames go straight to the compute dtype (exact in bf16 too: integers up to 256 are representable),
        without a float32 copy.
        """
        if frames.dtype == torch.uint8:
            mean, std = mean * 255.0, std * 255.0
            dtype = torch.get_autocast_dtype(frames.device.type) if torch.is_autocast_enabled(
                frames.device.type) else self.stem.weight.dtype
            frames = frames.to(dtype)
        repeats = self.stem.in_channels // 3
        inv_std = (1.0 / std).repeat(repeats).view(1, -1, 1, 1)
        weight = self.stem.weight * inv_std
        bias = self.stem.bias - (weight * mean.repeat(repeats).view(1, -1, 1, 1)).sum((1, 2, 3))
        x = nn.functional.conv2d(frames, weight, bias, stride=self.stem.stride)
        x = nn.functional.silu(self.stem_norm(x))
        for block in self.blocks:
            x = block(x)
        return self.to_keypoints(x)


class InverseDynamicsModel(nn.Module, ConfigMixin):
    config_name = CONFIG_NAME

    @register_to_config
    def __init__(
        self,
        cameras: tuple[str, ...] = ("cam_high",),
        context_k: int = 2,
        image_size: tuple[int, int] = (128, 128),
        fps: int = 10,
        channels: tuple[int, ...] = (32, 64, 64),
        num_keypoints: int = 32,
        mlp_hidden: int = 256,
        action_dim: int = ACTION_DIM,
        embodiment: str = "aloha_viperx",
        joint_names: tuple[str, ...] = (),
        patch_sizes: tuple[int, ...] | None = None,
    ):
        super().__init__()
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 widths, got {channels}")
        patches = tuple(patch_sizes) if patch_sizes else (PATCH,) * len(cameras)
        if len(patches) != len(cameras):
            raise ValueError(f"patch_sizes {list(patches)}: one per camera of {list(cameras)}")
        for cam, p in zip(cameras, patches):
            if p < 1 or image_size[0] % p or image_size[1] % p:
                raise ValueError(f"image_size {tuple(image_size)} must be divisible by the patch size {p} of camera '{cam}'")
        window = 2 * context_k + 1
        self.backbones = nn.ModuleList(Backbone(3 * window, tuple(channels), num_keypoints, p) for p in patches)
        self.spatial_softmax = SpatialSoftmax()
        self.head = nn.Sequential(
            nn.Linear(2 * num_keypoints * len(cameras), mlp_hidden),
            nn.SiLU(),
            nn.Linear(mlp_hidden, mlp_hidden),
            nn.SiLU(),
            nn.Linear(mlp_hidden, action_dim),
        )
        self.register_buffer("action_mean", torch.zeros(action_dim))
        self.register_buffer("action_std", torch.ones(action_dim))
        self.register_buffer("image_mean", torch.full((3,), 0.5))
        self.register_buffer("image_std", torch.full((3,), 0.25))

    @property
    def window(self) -> int:
        return 2 * self.config.context_k + 1

    def set_normalization(self, action_mean, action_std, image_mean, image_std, min_std: float = 1e-3) -> None:
        """Statistics of the training set (LeRobot stats.json); tiny stds are floored."""
        self.action_mean.copy_(torch.as_tensor(action_mean, dtype=torch.float32))
        self.action_std.copy_(torch.as_tensor(action_std, dtype=torch.float32).clamp_min(min_std))
        self.image_mean.copy_(torch.as_tensor(image_mean, dtype=torch.float32).reshape(3))
        self.image_std.copy_(torch.as_tensor(image_std, dtype=torch.float32).reshape(3).clamp_min(min_std))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """frames (B, cameras, 2k+1, 3, H, W), uint8 in 0..255 or float in [0, 1] -> normalised action
        (B, action_dim)."""
        keypoints = []
        for cam, backbone in enumerate(self.backbones):
            feature_maps = backbone(frames[:, cam].flatten(1, 2), self.image_mean, self.image_std)
            keypoints.append(feature_maps.float())
        # Keypoints and the head always run in fp32, also under a bf16 autocast of the backbone:
        # bf16's 8-bit mantissa would quantise image coordinates to about 1/128 of the image,
        # coarser than the joint precision the IDM must reach.
        with torch.autocast(device_type=frames.device.type, enabled=False):
            keypoints = torch.cat([self.spatial_softmax(f) for f in keypoints], dim=-1)
            return self.head(keypoints)

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.action_mean) / self.action_std

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return action * self.action_std + self.action_mean

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, directory: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` (atomically, via a temporary name)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_config(directory)
        tmp = directory / f".{WEIGHTS_NAME}.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, str(tmp))
        tmp.replace(directory / WEIGHTS_NAME)

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, embodiment=None, map_location: str = "cpu"
                        ) -> "InverseDynamicsModel":
        """Load a checkpoint. With ``embodiment`` (an ``Embodiment``), refuse one trained for another robot."""
        directory = Path(directory)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).exists():
                raise FileNotFoundError(f"{directory}: missing {name}; expected an IDM checkpoint "
                                        f"({CONFIG_NAME} + {WEIGHTS_NAME})")
        config = json.loads((directory / CONFIG_NAME).read_text())
        if embodiment is not None:
            if config.get("embodiment") != embodiment.name or tuple(config.get("joint_names", ())) != tuple(
                    embodiment.joint_names) or config.get("action_dim") != len(embodiment.joint_names):
                raise ValueError(
                    f"{directory}: checkpoint is for embodiment '{config.get('embodiment')}' "
                    f"(action_dim {config.get('action_dim')}, joints {config.get('joint_names')}), "
                    f"the config asks for '{embodiment.name}' (action_dim {len(embodiment.joint_names)}, "
                    f"joints {list(embodiment.joint_names)})")
        model = cls.from_config(cls.load_config(directory))
        state = load_file(str(directory / WEIGHTS_NAME), device=map_location)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise KeyError(f"{directory / WEIGHTS_NAME}: keys do not match the model; "
                           f"missing {sorted(missing)}, unexpected {sorted(unexpected)}")
        return model.eval()
