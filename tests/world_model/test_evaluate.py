"""eva-eval-wm end to end on a tiny checkpoint: every method, both modes, files written."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import configs
from configs.schema import EvalWMConfig, validate
from tests.conftest import tiny_idm
from tests.world_model.conftest import wm_train_config
from world_model.evaluate import METHODS, METRICS, MODES, by_stillness, evaluate_wm, paired_difference
from world_model.train import train


def test_evaluation_scores_every_method_in_both_modes(lift_dataset, tmp_path):
    ckpt = train(wm_train_config(lift_dataset, tmp_path / "run", "max_steps=1"))
    cfg = validate(configs.compose("eval_wm", [f"checkpoint={ckpt}", f"dataset_root={lift_dataset}",
                                               f"output_dir={tmp_path / 'eval'}", "num_future_frames=4",
                                               "num_windows=3", "batch_size=2", "steps=2", "num_videos=1"]),
                   EvalWMConfig)
    summary = evaluate_wm(cfg)
    on_disk = json.loads((tmp_path / "eval" / "wm_eval.json").read_text())
    assert on_disk == summary
    for mode in MODES:
        for method in METHODS:
            assert set(summary["modes"][mode][method]) == set(METRICS)
        repeat = summary["modes"][mode]["repeat_last"]
        assert repeat["repetition"]["mean"] == 1.0  # a repeated frame repeats
        assert repeat["motion"]["mean"] == 0.0  # and does not move; the ground truth does
        codec_motion = summary["modes"][mode]["codec"]["motion"]["mean"]
        assert codec_motion == pytest.approx(summary["ground_truth_motion"]["mean"], abs=0.02)
        assert 0 < repeat["lpips"]["mean"] < 1 and repeat["psnr"]["mean"] > 10
        paired = summary["model_vs_repeat_last"][mode]["psnr"]  # the mean of differences = the difference of means
        assert paired["mean"] == pytest.approx(summary["modes"][mode]["model"]["psnr"]["mean"] - repeat["psnr"]["mean"])
        per_frame = summary["model_vs_repeat_last_per_frame"][mode]  # one row per predicted frame, averaging
        assert len(per_frame) == 4  # to the window-level paired difference
        for k in ("psnr", "lpips"):  # float32 frame scores, batched differently: 1e-4 of the scores themselves
            assert np.mean([r[k]["mean"] for r in per_frame]) == pytest.approx(
                summary["model_vs_repeat_last"][mode][k]["mean"], abs=1e-4 * repeat[k]["mean"])
        bands = summary["model_vs_repeat_last_by_stillness"][mode]  # the bands split the frames and the difference
        assert sum(r["share"] for r in bands) == pytest.approx(1)
        assert sum(r["contribution"] for r in bands) == pytest.approx(  # float32 dB: 1e-6 of the scores
            summary["model_vs_repeat_last"][mode]["psnr"]["mean"], rel=1e-4, abs=1e-6 * repeat["psnr"]["mean"])
    for mode in MODES:  # the denoiser diagnostic: one row per noise level, copying's error on moving positions > 0
        rows = summary["denoiser"][mode]
        assert [r["sigma"] for r in rows] == sorted(cfg.diagnostic_sigmas)
        assert all(r["moving_mse"] >= 0 and 0 <= r["static_fraction"] <= 1 for r in rows)
        assert any(r["copy_moving_mse"] > 0 for r in rows)
    assert (tmp_path / "eval" / "grid_0.mp4").exists() and (tmp_path / "eval" / "wm_eval.png").exists()
    assert "| repeat_last |" in (tmp_path / "eval" / "wm_eval.md").read_text()
    with pytest.raises(ValueError, match="change_threshold=1.0: .* 'residual' model; only masked_residual"):
        evaluate_wm(dataclasses.replace(cfg, change_threshold=1.0))


def test_denoiser_error_of_an_untrained_residual_model_is_copying():
    """A fresh residual model predicts the newest history latent: its error is exactly copying's, at every noise
    level, and zero at static positions."""
    from world_model.build import build_pipeline, load_preset
    from world_model.evaluate import denoiser_error_sums, denoiser_summary
    from world_model.latents import encode_video, with_anchor
    pipe = build_pipeline(load_preset("tiny"), ["lift the bar"], seed=0)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(2, 1, 3, 128, 128, generator=g).expand(-1, 8, -1, -1, -1).clone()
    frames[:, 6:, :, :32, :32] = torch.rand(2, 2, 3, 32, 32, generator=g)  # one corner changes in the future
    clip = encode_video(pipe.vae, with_anchor(frames))
    sums = {}
    for mode in MODES:
        inputs = pipe.prepare(frames[:, :4], ["lift the bar"] * 2, torch.zeros(2, 8, 14) if mode == "simulator" else None,
                              num_frames=4, seed=[0, 1])
        sums |= denoiser_error_sums(pipe, clip, inputs, mode, [0.1, 1.0])
    summary = denoiser_summary(sums)
    for mode in MODES:
        for r in summary[mode]:
            assert r["static_mse"] == pytest.approx(0, abs=1e-10)
            assert r["moving_mse"] == pytest.approx(r["copy_moving_mse"], rel=1e-5) and r["moving_mse"] > 0
            assert 0.5 < r["static_fraction"] < 1


def test_executability_and_imagined_episodes_in_mujoco(lift_dataset, tmp_path):
    ckpt = train(wm_train_config(lift_dataset, tmp_path / "run", "max_steps=1"))
    idm = tiny_idm(tmp_path / "idm")
    cfg = validate(configs.compose("eval_wm", [
        f"checkpoint={ckpt}", f"dataset_root={lift_dataset}", f"output_dir={tmp_path / 'eval'}", "task=[lift_bar]",
        "num_future_frames=4", "num_windows=2", "batch_size=2", "steps=2", "num_videos=0", f"idm_checkpoint={idm}",
        "episodes_per_task=1", "hold_steps=0"]), EvalWMConfig)
    summary = evaluate_wm(cfg)
    exe = summary["executability"]
    assert set(exe) == {*METHODS, "ground_truth"} and not summary["executability_calibrated"]
    assert "reward" not in exe["model"] and exe["model"]["penalty"]["mean"] >= 0
    run = summary["mujoco"]["lift_bar"]
    assert run["episodes"] == 1 and run["success"] in (0.0, 1.0) and len(run["per_episode"]) == 1
    assert (tmp_path / "eval" / "imagined_lift_bar.mp4").exists()
    assert "imagined episodes executed open loop" in (tmp_path / "eval" / "wm_eval.md").read_text()


def test_imagined_episodes_need_an_idm():
    import pytest

    with pytest.raises(ValueError, match="idm_checkpoint"):
        validate(configs.compose("eval_wm", ["episodes_per_task=2"]), EvalWMConfig)


def test_negative_noise_scale_is_refused():
    import pytest

    with pytest.raises(ValueError, match="'noise_scale'.*-0.1"):
        validate(configs.compose("eval_wm", ["noise_scale=-0.1"]), EvalWMConfig)


def test_by_stillness_splits_the_difference_by_repeat_last_psnr():
    repeat = np.array([[20.0, 27.0], [35.0, 50.0]])  # one frame in each band
    model = repeat + np.array([[1.0, 0.5], [-1.0, -6.0]])
    rows = by_stillness(model, repeat)
    assert [(r["from_db"], r["to_db"]) for r in rows] == [(None, 25.0), (25.0, 30.0), (30.0, 40.0), (40.0, None)]
    assert [r["mean"] for r in rows] == [1.0, 0.5, -1.0, -6.0]
    assert [r["contribution"] for r in rows] == [0.25, 0.125, -0.25, -1.5]
    assert all(r["share"] == 0.25 for r in rows)
    assert by_stillness(np.array([[21.0]]), np.array([[20.0]]))[3] == {"from_db": 40.0, "to_db": None, "share": 0.0,
                                                                      "mean": None, "contribution": 0.0}


def test_paired_difference_signs_and_errors():
    model = {"psnr": [21.0, 25.0, 23.0], "ssim": [0.8, 0.9, 0.7], "lpips": [0.10, 0.05, 0.20]}
    base = {"psnr": [20.0, 26.0, 21.0], "ssim": [0.8, 0.8, 0.8], "lpips": [0.12, 0.06, 0.10]}
    d = paired_difference(model, base)
    assert d["psnr"]["mean"] == pytest.approx(2 / 3) and d["psnr"]["model_better"] == pytest.approx(2 / 3)
    assert d["psnr"]["sem"] == pytest.approx(float(np.std([1.0, -1.0, 2.0]) / np.sqrt(3)))
    assert d["lpips"]["mean"] == pytest.approx(0.07 / 3) and d["lpips"]["model_better"] == pytest.approx(2 / 3)
    assert d["ssim"]["model_better"] == pytest.approx(1 / 3)  # a tie is not a win
