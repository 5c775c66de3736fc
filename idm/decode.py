"""Batched decoding of whole videos into action sequences, and resampling to the control rate.

Input convention: ``(B, T, 3, H, W)`` per camera (a tensor for a one-camera model, or a dict
camera -> tensor), either ``uint8`` in 0..255 or floating point in [0, 1], at the model's
frame rate (``config.fps``) and resolution (``config.image_size``). Anything else is an
error, except a resolution mismatch with ``resize=True``, which resizes explicitly
(bilinear, antialiased).

Edge rule: the IDM sees frames t-k..t+k. For the first and last k frames the video is
padded by repeating its first and last frame, so a video of T frames gives T actions and
action t is aligned with frame t.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from idm.model import InverseDynamicsModel


def _check_video(name: str, video, size: tuple[int, int], resize: bool) -> torch.Tensor:
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(video)
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"video '{name}': expected a tensor or numpy array, got {type(video).__name__}")
    if video.ndim != 5:
        raise ValueError(f"video '{name}': expected shape (B, T, 3, H, W), got {tuple(video.shape)}")
    if video.shape[2] != 3:
        hint = " (channels last? permute to (B, T, 3, H, W))" if video.shape[-1] == 3 else ""
        raise ValueError(f"video '{name}': expected 3 channels at dim 2, got shape {tuple(video.shape)}{hint}")
    if video.is_floating_point():
        video = video.float()
        bad = ~torch.isfinite(video)
        if bad.any():
            b, t = torch.nonzero(bad.flatten(2).any(-1))[0].tolist()
            raise ValueError(f"video '{name}': NaN or inf in batch {b}, frame {t}")
        lo, hi = video.min().item(), video.max().item()
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"video '{name}': float frames must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}]"
                             + (" (0..255 floats? divide by 255 or pass uint8)" if hi > 1.5 else ""))
    elif video.dtype != torch.uint8:  # uint8 goes to the model as it is
        raise TypeError(f"video '{name}': dtype {video.dtype} is not supported; use uint8 (0..255) or float (0..1)")
    h, w = video.shape[-2:]
    if (h, w) != tuple(size):
        if not resize:
            raise ValueError(f"video '{name}': resolution {h}x{w}, the IDM expects {size[0]}x{size[1]} "
                             f"(pass resize=True to resize explicitly)")
        b, t = video.shape[:2]
        unit = video.float() / 255.0 if video.dtype == torch.uint8 else video
        video = F.interpolate(unit.flatten(0, 1), size=tuple(size), mode="bilinear", antialias=True,
                              align_corners=False).reshape(b, t, 3, *size).clamp(0, 1)
    return video


@torch.no_grad()
def decode_video(model: InverseDynamicsModel, video, *, resize: bool = False, max_windows: int = 256) -> torch.Tensor:
    """Video(s) -> actions (B, T, action_dim) in physical units (radians, normalised grippers)."""
    cams = list(model.config.cameras)
    videos = video if isinstance(video, dict) else {cams[0]: video} if len(cams) == 1 else None
    if videos is None:
        raise ValueError(f"the IDM uses cameras {cams}: pass a dict camera -> (B, T, 3, H, W)")
    if set(videos) != set(cams):
        raise ValueError(f"the IDM uses cameras {cams}, got videos for {sorted(videos)}")
    checked = [_check_video(c, videos[c], tuple(model.config.image_size), resize) for c in cams]
    b, t = checked[0].shape[:2]
    for c, v in zip(cams, checked):
        if v.shape[:2] != (b, t):
            raise ValueError(f"camera '{c}': shape {tuple(v.shape[:2])} differs from '{cams[0]}' {(b, t)}")
    if len({v.dtype for v in checked}) > 1:  # uint8 and float cameras mixed: all as floats in [0, 1]
        checked = [v.float() / 255.0 if v.dtype == torch.uint8 else v for v in checked]
    k = model.config.context_k
    device = next(model.parameters()).device
    x = torch.stack(checked, dim=1)  # (B, cams, T, 3, H, W)
    offsets = torch.arange(-k, k + 1)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, b * t, max_windows):  # windows are gathered one chunk at a time, never all at once
        index = torch.arange(i, min(i + max_windows, b * t))
        bi, ti = index // t, index % t
        frames = (ti[:, None] + offsets).clamp(0, t - 1)  # the edge rule: first and last frames repeated
        chunk = x[bi[:, None], :, frames].transpose(1, 2)  # (n, cams, 2k+1, 3, H, W)
        out.append(model.unnormalize_action(model(chunk.to(device))).cpu())
    model.train(was_training)
    return torch.cat(out).reshape(b, t, -1)


def to_control_rate(actions, video_fps: float, control_hz: float):
    """Linear interpolation from the video frame rate to the control rate.

    ``actions`` (..., T, D) at ``video_fps`` -> (..., (T - 1) * r + 1, D) with r = control_hz / video_fps,
    which must be an integer. Sample j*r equals video action j; in between, joints and grippers are
    interpolated linearly (the executed targets move at constant speed between frames).
    """
    ratio = control_hz / video_fps
    r = int(round(ratio))
    if r < 1 or abs(ratio - r) > 1e-9:
        raise ValueError(f"control rate {control_hz} Hz is not an integer multiple of the video rate {video_fps} fps")
    a = torch.as_tensor(actions) if not isinstance(actions, np.ndarray) else torch.from_numpy(actions)
    if a.shape[-2] < 1:
        raise ValueError("no actions to interpolate")
    if r == 1 or a.shape[-2] == 1:
        out = a
    else:
        w = torch.arange(r, dtype=a.dtype) / r  # (r,)
        start, end = a[..., :-1, None, :], a[..., 1:, None, :]
        seg = start + (end - start) * w[:, None]  # (..., T-1, r, D)
        out = torch.cat([seg.flatten(-3, -2), a[..., -1:, :]], dim=-2)
    return out.numpy() if isinstance(actions, np.ndarray) else out


def decode_for_execution(idm: InverseDynamicsModel, video: torch.Tensor, num_history: int, control_hz: float
                         ) -> np.ndarray:
    """IDM actions of an imagined (B, H + N, 3, h, w) video from the last history frame on, at the control rate."""
    actions = decode_video(idm, video)[:, num_history - 1:]
    return to_control_rate(actions, idm.config.fps, control_hz).numpy()
