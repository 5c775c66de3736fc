"""eva-train-wm on a tiny dataset: a run, exact resume, LoRA output, two processes == one process."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from configs.schema import TrainWMConfig
from tests.world_model.conftest import TINY_WM, wm_train_config
from world_model.build import build_pipeline
from world_model.latents import PatchCodec, encode_video, with_anchor
from world_model.model import change_mask
from world_model.pipeline import WorldModelPipeline
from world_model.train import draw_noise, flow_loss, shifted, train, unshifted


def _cfg(root, run_dir, *overrides) -> TrainWMConfig:
    return wm_train_config(root, run_dir, *overrides)


def _weights(model_dir):
    return load_file(str(model_dir / "transformer" / "diffusion_pytorch_model.safetensors"))


def test_resume_is_exact(lift_dataset, tmp_path):
    full = train(_cfg(lift_dataset, tmp_path / "full", "max_steps=4", "eval_every=2", "checkpoint_every=2"))
    train(_cfg(lift_dataset, tmp_path / "split", "max_steps=2", "eval_every=2", "checkpoint_every=2"))
    resumed = train(_cfg(lift_dataset, tmp_path / "split", "max_steps=4", "eval_every=2", "checkpoint_every=2"))
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the run learned something: weights moved from their initial values
    init = _weights(train(_cfg(lift_dataset, tmp_path / "zero", "max_steps=1", "lr=1e-12")))
    assert any(not torch.allclose(a[k], init[k]) for k in a)


def test_lora_run_writes_a_loadable_lora_file(lift_dataset, tmp_path):
    with pytest.raises(ValueError, match="cannot move its zero output layer"):
        train(_cfg(lift_dataset, tmp_path / "refused", "max_steps=2", "finetune=lora"))
    out = train(_cfg(lift_dataset, tmp_path / "lora", "max_steps=2", "finetune=lora", "lora_rank=4",
                     "ema_decay=0.9", "precision=bf16", "gradient_checkpointing=true",
                     "world_model.prediction=velocity"))  # random weights move a velocity model's output
    assert (out / "pytorch_lora_weights.safetensors").exists()
    pipe = WorldModelPipeline.from_pretrained(out)
    history = torch.rand(1, 4, 3, 64, 64)
    base = pipe.rollout(history, "lift the bar", num_frames=4, steps=2, seed=0)
    pipe.load_lora_weights(out)
    assert not torch.equal(base, pipe.rollout(history, "lift the bar", num_frames=4, steps=2, seed=0))


@pytest.mark.parametrize("schedule", ["history", "independent"])
def test_max_sigma_confines_the_drawn_noise_levels(lift_dataset, tmp_path, schedule):
    shape, n_hist, shift = (48, 12, 16, 16), 5, 3.0
    assert unshifted(float(shifted(0.37, shift)), shift) == pytest.approx(0.37)
    full = _cfg(lift_dataset, tmp_path, f"noise_schedule={schedule}")
    low = _cfg(lift_dataset, tmp_path, f"noise_schedule={schedule}", "max_sigma=0.3")
    drawn_full = [draw_noise(full, (0, i), shape, n_hist, shift) for i in range(200)]
    drawn_low = [draw_noise(low, (0, i), shape, n_hist, shift) for i in range(200)]
    sig_full = torch.cat([d[1][d[2] > 0] for d in drawn_full])
    sig_low = torch.cat([d[1][d[2] > 0] for d in drawn_low])
    assert sig_full.max() > 0.9 and 0.25 < sig_low.max() <= 0.3
    # the same random draws: noise, loss mask and action flag are unchanged, only the levels move
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and a[3] == b[3]
               for a, b in zip(drawn_full, drawn_low))
    with pytest.raises(ValueError, match="max_sigma"):
        _cfg(lift_dataset, tmp_path, "max_sigma=0")


def test_masked_residual_loss_adds_the_change_cross_entropy(lift_dataset, tmp_path):
    """A masked residual model's loss is a residual model's squared error on ``F`` plus ``change_loss_weight``
    times the change logit's cross-entropy per latent position of the loss frames; a fresh model (``F`` = 0,
    logit 0) scores ln 2 at every such position, changed or not. A run trains and saves it."""
    z = 48
    masked = ["world_model.prediction=masked_residual", f"world_model.transformer.out_channels={z + 1}"]
    cfgs = {w: _cfg(lift_dataset, tmp_path, *masked, f"change_loss_weight={w}") for w in (0.0, 0.5)}
    pipe = build_pipeline(cfgs[0.0].world_model, ["lift the bar"], codec=PatchCodec(8, z))
    plain = build_pipeline(dataclasses.replace(cfgs[0.0].world_model, prediction="residual",
                                               transformer={**cfgs[0.0].world_model.transformer, "out_channels": z}),
                           ["lift the bar"], codec=pipe.vae)
    frames, actions = torch.rand(2, 8, 3, 64, 64), torch.randn(2, 8, 14)
    text = pipe.encode_text(["lift the bar"] * 2)
    keys = [(0, 0), (0, 1)]
    loss = {w: flow_loss(pipe, frames, actions, text, keys, c, 5, 3.0, 2) for w, c in cfgs.items()}
    assert loss[0.0] == flow_loss(plain, frames, actions, text, keys, cfgs[0.0], 5, 3.0, 2) > 0
    loss_frames = torch.stack([draw_noise(cfgs[0.0], k, (z, 9, 8, 8), 5, 3.0)[2] for k in keys]).mean()
    assert (loss[0.5] - loss[0.0]).item() == pytest.approx(0.5 * math.log(2) * float(loss_frames), rel=1e-5)
    x = torch.zeros(1, 2, 3, 1, 2)
    x[0, 1, 1, 0, 1] = 0.06  # one channel of one position moves past the tolerance, another stays within it
    x[0, 0, 2, 0, 0] = 0.04
    assert change_mask(x, torch.zeros(1, 2, 1, 1, 2), 0.05).flatten().tolist() == [0, 0, 0, 1, 0, 0]
    out = train(_cfg(lift_dataset, tmp_path / "run", *masked, "max_steps=2"))
    assert WorldModelPipeline.from_pretrained(out).config.prediction == "masked_residual"


def test_bad_batch_split_is_refused(lift_dataset, tmp_path):
    with pytest.raises(ValueError, match="finetune"):
        _cfg(lift_dataset, tmp_path, "finetune=qlora")


def test_two_processes_match_one(lift_dataset, tmp_path):
    one = train(_cfg(lift_dataset, tmp_path / "one", "max_steps=2", "batch_size=4"))
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={29500 + os.getpid() % 1000}", "-m", "world_model.train", f"dataset_root={lift_dataset}",
           f"run_dir={tmp_path / 'two'}", *TINY_WM, "max_steps=2", "batch_size=4"]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    a, b = _weights(one), _weights(tmp_path / "two" / "model")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_copy_error_weighting_divides_each_frame_by_its_copying_error(lift_dataset, tmp_path):
    """``frame_weighting=copy_error``: a fresh residual model (``F`` = 0, the newest frame held) has each loss
    frame's squared error equal to its copying error ``e``, weighted to ``e (1 + floor) / (e + floor)``: the
    log-error gradient of per-frame PSNR, which a nearly static frame scores as much as a sweeping one."""
    z, floor = 48, 0.01
    masked = ["world_model.prediction=masked_residual", f"world_model.transformer.out_channels={z + 1}",
              "change_loss_weight=0"]
    plain_cfg = _cfg(lift_dataset, tmp_path, *masked)
    cfg = _cfg(lift_dataset, tmp_path, *masked, "frame_weighting=copy_error", f"frame_weight_floor={floor}")
    pipe = build_pipeline(cfg.world_model, ["lift the bar"], codec=PatchCodec(8, z))
    frames, actions = torch.rand(2, 8, 3, 64, 64), torch.randn(2, 8, 14)
    frames[1, 4:] = frames[1, 3:4]  # the second clip holds still after its history: zero copying error there
    text = pipe.encode_text(["lift the bar"] * 2)
    keys = [(0, 0), (0, 1)]
    x = encode_video(pipe.vae, with_anchor(frames))
    e = ((x - x[:, :, 4:5]) ** 2).mean((1, 3, 4))  # (B, F) copying error of every latent frame
    mask = torch.stack([draw_noise(cfg, k, tuple(x.shape[1:]), 5, 3.0)[2] for k in keys])
    assert mask[0, 5:].sum() > 0 and mask[1, 5:].sum() > 0
    expected = (mask * e * (1 + floor) / (e + floor)).sum() / (2 * x.shape[2])
    assert flow_loss(pipe, frames, actions, text, keys, cfg, 5, 3.0, 2).item() == pytest.approx(expected.item(),
                                                                                                rel=1e-5)
    plain = (mask * e).sum() / (2 * x.shape[2])
    assert flow_loss(pipe, frames, actions, text, keys, plain_cfg, 5, 3.0, 2).item() == pytest.approx(plain.item(),
                                                                                                      rel=1e-5)
    with pytest.raises(ValueError, match="frame_weighting"):
        _cfg(lift_dataset, tmp_path, "world_model.prediction=velocity", "frame_weighting=copy_error")
