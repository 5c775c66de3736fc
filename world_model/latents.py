"""Latent spaces of the world model and the frame layout of a clip.

Two codecs with one interface (``encode_video`` / ``decode_latents`` below):

* ``AutoencoderKLWan`` (diffusers): the Wan VAE of real checkpoints, 8x spatial and 4x temporal
  compression, 16 channels (48 for Wan2.2), latents normalised with the ``latents_mean/std`` of its config.
* ``PatchCodec``: the tiny preset's latent space. A tiny Wan VAE costs about a minute per
  training step on this two-core CPU (its causal 3D convolutions run frame chunk by frame chunk),
  so it cannot be trained here in minutes. ``PatchCodec`` is a linear codec instead: each frame is
  cut into ``patch x patch`` pixel blocks (space-to-depth, ``3 * patch**2`` values per block at
  ``H/patch x W/patch``), and each block is projected on its first ``components`` principal
  components, fitted on our frames (:meth:`PatchCodec.fit`), then normalised per component. Decoding
  is the transposed projection, so the codec is exact on the span of the components and the
  transformer sees a compact token (the tiny preset: 48 of 192 values per block, 34 dB PSNR and 0.006
  LPIPS of reconstruction on held-out frames, as ``eva-eval-wm`` reports under ``codec``). ``components=None`` keeps all values: the exact space-to-depth mapping. Temporal stride 1.

Clip layout. The history is the last ``H`` camera frames (EVA: H = 4). A causal video VAE encodes
frame 0 alone and then ``stride`` frames per latent frame, so a clip is laid out as
``[oldest history frame] + H history frames + N future frames`` with ``H`` and ``N`` multiples of the
stride: the first ``1 + H / stride`` latent frames are history, the remaining ``N / stride`` are
predicted. Because the VAE is causal, encoding the history alone gives the same history latents as
encoding the whole clip.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn


class PatchCodec(ModelMixin, ConfigMixin):
    """Linear per-block codec: (B, 3, T, H, W) in [-1, 1] <-> (B, z, T, H/p, W/p), z = ``components`` or 3 p^2.

    Encoding: space-to-depth blocks ``u`` (3 p^2 values), ``c = basis @ (u - block_mean)`` when
    ``components`` is set (``c = u`` otherwise), then ``(c - latents_mean) / latents_std``. The basis
    rows are orthonormal, so decoding ``basis.T @ c + block_mean`` is the orthogonal projection of the
    block on the fitted subspace. An unfitted codec has a random orthonormal basis.
    """

    @register_to_config
    def __init__(self, patch: int = 8, components: int | None = None, latents_mean: list[float] | None = None,
                 latents_std: list[float] | None = None):
        super().__init__()
        d = 3 * patch * patch
        if components is not None and not 0 < components <= d:
            raise ValueError(f"PatchCodec(patch={patch}): components={components} must be in 1..{d}")
        z = d if components is None else components
        mean = torch.zeros(z) if latents_mean is None else torch.tensor(latents_mean, dtype=torch.float32)
        std = torch.ones(z) if latents_std is None else torch.tensor(latents_std, dtype=torch.float32)
        if mean.shape != (z,) or std.shape != (z,):
            raise ValueError(f"PatchCodec(patch={patch}, components={components}): latents_mean/std need {z} "
                             f"values, got {tuple(mean.shape)} / {tuple(std.shape)}")
        self.register_buffer("mean", mean.view(1, z, 1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, z, 1, 1, 1), persistent=False)
        if components is not None:  # saved with the weights; fitted by PatchCodec.fit
            self.register_buffer("basis", torch.linalg.qr(torch.randn(d, components))[0].T.contiguous())
            self.register_buffer("block_mean", torch.zeros(d))
        self._dummy = nn.Parameter(torch.zeros(()), requires_grad=False)  # ModelMixin needs a parameter

    @classmethod
    @torch.no_grad()
    def fit(cls, frames: torch.Tensor, patch: int = 8, components: int | None = None,
            min_std: float = 1e-3) -> PatchCodec:
        """A codec fitted on frames (N, 3, H, W) in [0, 1]: principal components of the pixel blocks
        (when ``components`` is set), the mean of each latent channel and one scale for all of them."""
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"PatchCodec.fit: expected frames (N, 3, H, W), got {tuple(frames.shape)}")
        blocks = nn.functional.pixel_unshuffle(frames.double() * 2 - 1, patch)  # (N, d, h, w)
        blocks = blocks.permute(0, 2, 3, 1).reshape(-1, blocks.shape[1])
        d = blocks.shape[1]
        if components is None:
            codes = blocks
        else:
            if len(blocks) < d:
                raise ValueError(f"PatchCodec.fit: {len(blocks)} blocks cannot fit {components} components of {d}")
            block_mean = blocks.mean(0)
            centred = blocks - block_mean
            eigvals, eigvecs = torch.linalg.eigh(centred.T @ centred / len(blocks))
            basis = eigvecs[:, eigvals.argsort(descending=True)[:components]].T  # (components, d)
            codes = centred @ basis.T
        # one scale for every channel (unit variance on average): with an orthonormal basis the flow-matching
        # loss is then the pixel-space squared error within the span, the error PSNR measures
        scale = max(float(codes.var(0).mean().sqrt()), min_std)
        codec = cls(patch=patch, components=components, latents_mean=codes.mean(0).tolist(),
                    latents_std=[scale] * codes.shape[1])
        if components is not None:
            codec.basis.copy_(basis)
            codec.block_mean.copy_(block_mean)
        return codec

    @property
    def z_dim(self) -> int:
        return self.config.components or 3 * self.config.patch ** 2

    @property
    def temporal_stride(self) -> int:
        return 1

    @property
    def spatial_stride(self) -> int:
        return self.config.patch

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) in [-1, 1] -> normalised latents (B, z, T, H/p, W/p)."""
        b, c, t, h, w = video.shape
        p = self.config.patch
        if h % p or w % p:
            raise ValueError(f"PatchCodec(patch={p}): frame size {h}x{w} is not divisible by {p}")
        blocks = nn.functional.pixel_unshuffle(video.transpose(1, 2).reshape(b * t, c, h, w), p)
        if self.config.components is not None:
            blocks = _per_frame_matmul(self.basis, blocks - self.block_mean.view(1, -1, 1, 1))
        z = blocks.reshape(b, t, self.z_dim, h // p, w // p).transpose(1, 2)
        return (z - self.mean) / self.std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> (B, 3, T, H, W) in [-1, 1] (not clipped)."""
        b, z, t, h, w = latents.shape
        p = self.config.patch
        blocks = (latents * self.std + self.mean).transpose(1, 2).reshape(b * t, z, h, w)
        if self.config.components is not None:
            blocks = _per_frame_matmul(self.basis.T, blocks) + self.block_mean.view(1, -1, 1, 1)
        return nn.functional.pixel_shuffle(blocks, p).reshape(b, t, 3, h * p, w * p).transpose(1, 2)


def _per_frame_matmul(matrix: torch.Tensor, blocks: torch.Tensor) -> torch.Tensor:
    """(m, d) x (N, d, h, w) -> (N, m, h, w), one frame at a time: the same kernel whatever N is, so a
    frame's latents do not depend on the rest of the batch (bit for bit)."""
    n, d, h, w = blocks.shape
    return torch.stack([matrix @ frame.reshape(d, h * w) for frame in blocks]).reshape(n, -1, h, w)


Codec = AutoencoderKLWan | PatchCodec


def codec_strides(codec: Codec) -> tuple[int, int]:
    """(temporal, spatial) compression of a codec."""
    if isinstance(codec, PatchCodec):
        return codec.temporal_stride, codec.spatial_stride
    return int(codec.config.scale_factor_temporal), int(codec.config.scale_factor_spatial)


def codec_channels(codec: Codec) -> int:
    return codec.z_dim if isinstance(codec, PatchCodec) else int(codec.config.z_dim)


def encode_video(codec: Codec, video: torch.Tensor) -> torch.Tensor:
    """Frames (B, T, 3, H, W) in [0, 1] -> normalised latents (B, z, F, h, w)."""
    x = video.permute(0, 2, 1, 3, 4) * 2.0 - 1.0
    if isinstance(codec, PatchCodec):
        return codec.encode(x)
    x = x.to(codec.dtype)
    latents = codec.encode(x).latent_dist.mode()
    mean = torch.tensor(codec.config.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
    std = torch.tensor(codec.config.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
    return ((latents.float() - mean) / std)


def decode_latents(codec: Codec, latents: torch.Tensor, detail: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised latents (B, z, F, h, w) -> frames (B, T, 3, H, W) in [0, 1]; ``detail`` (``codec_detail``
    of a reference frame, broadcast over the frames) is added before clipping."""
    if isinstance(codec, PatchCodec):
        video = codec.decode(latents)
    else:
        mean = torch.tensor(codec.config.latents_mean, device=latents.device).view(1, -1, 1, 1, 1)
        std = torch.tensor(codec.config.latents_std, device=latents.device).view(1, -1, 1, 1, 1)
        video = codec.decode((latents * std + mean).to(codec.dtype)).sample.float()
    video = video.permute(0, 2, 1, 3, 4)
    if detail is not None:
        video = video + detail
    return ((video + 1.0) / 2.0).clamp(0.0, 1.0)


def codec_detail(codec: Codec, frames: torch.Tensor) -> torch.Tensor:
    """What a PatchCodec with fewer components than block values leaves out of frames (B, T, 3, H, W) in
    [0, 1]: the frames minus their projection on the codec's span, (B, T, 3, H, W) in the codec's [-1, 1]
    units. With it a PCA codec is invertible: span components from the latents, the rest from here."""
    if not isinstance(codec, PatchCodec) or codec.config.components is None:
        raise ValueError("codec_detail needs a PatchCodec with 'components' set (a linear projection); "
                         f"got {type(codec).__name__}")
    x = frames.permute(0, 2, 1, 3, 4) * 2.0 - 1.0
    return (x - codec.decode(codec.encode(x))).permute(0, 2, 1, 3, 4)


def clip_layout(num_history: int, num_future: int, temporal_stride: int) -> tuple[int, int]:
    """(history latent frames, future latent frames) for H history and N future pixel frames."""
    for name, n in (("history frames", num_history), ("future frames", num_future)):
        if n <= 0 or n % temporal_stride:
            raise ValueError(f"{name}: {n}; must be a positive multiple of the VAE's temporal stride "
                             f"{temporal_stride} (a clip is 1 + {temporal_stride}k frames)")
    return 1 + num_history // temporal_stride, num_future // temporal_stride


def with_anchor(frames: torch.Tensor) -> torch.Tensor:
    """Prepend the oldest frame: (B, T, ...) -> (B, 1 + T, ...), the causal VAE's stand-alone first frame."""
    return torch.cat([frames[:, :1], frames], dim=1)
