"""WorldModelPipeline on the tiny preset: sampling, determinism, clean history, checkpoints, LoRA."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict

from world_model.build import build_pipeline, load_preset
from world_model.latents import decode_latents, encode_video, with_anchor
from world_model.model import predicted_residual, velocity
from world_model.pipeline import WorldModelPipeline

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2"]


def velocity_preset():
    """The tiny preset predicting velocities: random weights move the output (a fresh residual model's
    zero output layer holds the newest frame whatever the sampler or the adapters)."""
    return dataclasses.replace(load_preset("tiny"), prediction="velocity")


@pytest.fixture(scope="module")
def pipe():
    cfg = load_preset("tiny")
    return build_pipeline(cfg, ["pick up the cube", "insert the peg into the socket"], seed=0)


@pytest.fixture(scope="module")
def history():
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (2, 4, 3, 128, 128), dtype=torch.uint8, generator=g)


def test_rollout_shape_determinism_and_batch_invariance(pipe, history):
    a = pipe.rollout(history, "pick up the cube", num_frames=4, steps=3, seed=5)
    assert a.shape == (2, 4, 3, 128, 128) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, pipe.rollout(history, "pick up the cube", num_frames=4, steps=3, seed=5))
    single = pipe.rollout(history[1:], "pick up the cube", num_frames=4, steps=3, seed=[6])
    assert torch.equal(a[1:], single)
    assert not torch.equal(a, pipe.rollout(history, "pick up the cube", num_frames=4, steps=3, seed=7))


def test_a_fresh_residual_model_holds_the_newest_frame(pipe, history):
    """The tiny preset (residual, hold_detail) returns the newest frame itself; without hold_detail, the newest
    frame through the codec."""
    assert pipe.config.prediction == "residual" and pipe.config.hold_detail
    newest = history[:, -1:].float() / 255
    for sampler in ("euler", "unipc"):
        out = pipe.rollout(history, "pick up the cube", num_frames=4, steps=3, seed=1, sampler=sampler)
        torch.testing.assert_close(out, newest.expand_as(out), atol=2e-5, rtol=0)
    pipe.register_to_config(hold_detail=False)
    try:
        out = pipe.rollout(history, "pick up the cube", num_frames=4, steps=3, seed=1)
    finally:
        pipe.register_to_config(hold_detail=True)
    through_codec = decode_latents(pipe.vae, encode_video(pipe.vae, newest))
    assert (through_codec - newest).abs().max() > 0.05  # 48 of 192 values per block: the codec loses detail
    torch.testing.assert_close(out, through_codec.expand_as(out), atol=2e-5, rtol=0)


def test_a_fresh_gated_residual_model_holds_the_newest_frame(history):
    cfg = load_preset("tiny")
    z = cfg.codec["components"]
    gated = dataclasses.replace(cfg, prediction="gated_residual",
                                transformer={**cfg.transformer, "out_channels": 2 * z})
    pipe = build_pipeline(gated, ["pick up the cube"], seed=0)
    newest = history[:, -1:].float() / 255
    out = pipe.rollout(history, "pick up the cube", num_frames=4, steps=3, seed=1)
    torch.testing.assert_close(out, newest.expand_as(out), atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match=f"out {2 * z} for prediction 'gated_residual'"):
        build_pipeline(dataclasses.replace(gated, transformer=cfg.transformer), ["pick up the cube"])


def masked_preset():
    cfg = load_preset("tiny")
    z = cfg.codec["components"]
    return dataclasses.replace(cfg, prediction="masked_residual", transformer={**cfg.transformer, "out_channels": z + 1})


def test_the_change_logit_keeps_unchanged_positions_exactly(history):
    """A masked residual model's residual is its own ``F`` where the change logit is positive and exactly zero
    elsewhere; with every logit negative, a model whose ``F`` is far from zero still returns the newest frame."""
    g = torch.Generator().manual_seed(0)
    f, logit = torch.randn(2, 3, 2, 4, 4, generator=g), torch.randn(2, 1, 2, 4, 4, generator=g)
    residual = predicted_residual(torch.cat([f, logit], dim=1), f, torch.rand(2, 2), f, "masked_residual")
    assert torch.equal(residual, torch.where(logit > 0, f, torch.zeros_like(f)))
    raised = predicted_residual(torch.cat([f, logit], dim=1), f, torch.rand(2, 2), f, "masked_residual",
                                change_threshold=0.5)
    assert torch.equal(raised, torch.where(logit > 0.5, f, torch.zeros_like(f)))

    cfg = masked_preset()
    pipe = build_pipeline(cfg, ["pick up the cube"], seed=0)
    newest = history[:, -1:].float() / 255
    out = pipe.rollout(history, "pick up the cube", num_frames=4, steps=3, seed=1)  # fresh: F = 0, logit 0
    torch.testing.assert_close(out, newest.expand_as(out), atol=2e-5, rtol=0)
    proj = pipe.transformer.proj_out  # (p_h p_w (z + 1)) outputs per token, the channel last
    torch.nn.init.normal_(proj.weight, std=0.1)
    logits = torch.arange(proj.bias.numel()) % (cfg.codec["components"] + 1) == cfg.codec["components"]
    with torch.no_grad():
        proj.bias[logits] = -1e4  # every position: unchanged
    out = pipe.rollout(history, "pick up the cube", num_frames=4, steps=3, seed=1)
    torch.testing.assert_close(out, newest.expand_as(out), atol=2e-5, rtol=0)
    with torch.no_grad():
        proj.bias[logits] = 1e4  # every position: changed, F moves the frame
    assert (pipe.rollout(history, "pick up the cube", num_frames=4, steps=3, seed=1) - newest).abs().max() > 0.05
    with pytest.raises(ValueError, match=f"out {cfg.codec['components'] + 1} for prediction 'masked_residual'"):
        build_pipeline(dataclasses.replace(cfg, transformer=load_preset("tiny").transformer), ["pick up the cube"])


def test_the_gated_skip_recovers_the_input_at_low_noise_and_vanishes_at_pure_noise():
    """With the gate open and no residual of its own, the model's clean estimate is the least-squares one from
    the noisy input: the input itself at sigma 0, the reference at sigma 1."""
    g = torch.Generator().manual_seed(0)
    clean, noise, reference = (torch.randn(2, 3, 2, 4, 4, generator=g) for _ in range(3))
    out = torch.cat([torch.zeros_like(clean), torch.ones_like(clean)], dim=1)  # F = 0, G = 1
    for sigma, expected in ((0.0, clean), (1.0, reference)):
        sigmas = torch.full((2, 2), sigma)
        noisy = (1 - sigma) * clean + sigma * noise
        residual = predicted_residual(out, noisy, sigmas, reference, "gated_residual")
        torch.testing.assert_close(reference + residual, expected)
    with pytest.raises(ValueError, match="has no residual"):
        predicted_residual(out, clean, torch.zeros(2, 2), reference, "velocity")


@pytest.mark.parametrize("sigma_data", [1.0, 0.2])
def test_the_skip_gain_is_the_least_squares_gain_for_its_residual_scale(sigma_data):
    """For residuals of standard deviation ``skip_sigma_data``, the skip's gain is the one regression of the
    residual on the noisy input (minus the reference's share) fits; a small scale shuts it at mid noise."""
    g = torch.Generator().manual_seed(0)
    n = 200_000
    residual, noise, reference = sigma_data * torch.randn(n, generator=g), torch.randn(n, generator=g), torch.randn(n, generator=g)
    out = torch.cat([torch.zeros(1, 1, 1, 1, n), torch.ones(1, 1, 1, 1, n)], dim=1)  # F = 0, G = 1
    for sigma in (0.1, 0.5, 0.8):
        noisy = (1 - sigma) * (reference + residual) + sigma * noise
        u = noisy - (1 - sigma) * reference
        fitted = float((u * residual).sum() / (u * u).sum())
        estimate = predicted_residual(out, noisy.view(1, 1, 1, 1, n), torch.full((1, 1), sigma),
                                      reference.view(1, 1, 1, 1, n), "gated_residual", sigma_data)
        gain = float((estimate.flatten() / u).mean())
        assert gain == pytest.approx(fitted, abs=0.01)  # the fit's standard error is about 0.003
    if sigma_data < 1:
        assert gain < 0.05  # sigma 0.8: the skip is shut


def test_history_stays_clean_through_sampling(pipe, history, monkeypatch):
    """Every denoiser call sees the exact clean history latents at noise level 0."""
    clean = encode_video(pipe.vae, with_anchor(history.float() / 255))
    n_hist = clean.shape[2]
    seen = []

    def spy(transformer, latents, frame_sigmas, *args, **kwargs):
        seen.append((latents[:, :, :n_hist].clone(), frame_sigmas.clone()))
        return velocity(transformer, latents, frame_sigmas, *args, **kwargs)

    monkeypatch.setattr("world_model.pipeline.velocity", spy)
    pipe.rollout(history, "pick up the cube", num_frames=4, steps=4, seed=0, sampler="unipc")
    assert len(seen) == 4
    for lat, sig in seen:
        assert torch.equal(lat, clean)
        assert torch.all(sig[:, :n_hist] == 0) and torch.all(sig[:, n_hist:] > 0)


def test_euler_and_unipc_agree_at_many_steps(history):
    pipe = build_pipeline(velocity_preset(), ["pick up the cube"], seed=0)
    euler = pipe.rollout(history[:1], "pick up the cube", num_frames=4, steps=60, seed=1, sampler="euler")
    unipc = pipe.rollout(history[:1], "pick up the cube", num_frames=4, steps=60, seed=1, sampler="unipc")
    coarse = pipe.rollout(history[:1], "pick up the cube", num_frames=4, steps=2, seed=1, sampler="euler")
    err = (euler - unipc).abs().mean()
    assert err < 0.01, err
    assert err < (euler - coarse).abs().mean()


def test_bad_inputs_name_the_expected_value(pipe, history):
    with pytest.raises(ValueError, match="needs the last 4"):
        pipe.rollout(history[:, :3], "x", num_frames=4)
    with pytest.raises(ValueError, match="expects 128x128"):
        pipe.rollout(history[..., :64, :64], "x", num_frames=4)
    with pytest.raises(ValueError, match="expected \\(2, 8, 14\\)"):
        pipe.rollout(history, "x", actions=torch.zeros(2, 8, 7), num_frames=4)
    with pytest.raises(ValueError, match="sampler 'ddim'"):
        pipe.rollout(history, "x", num_frames=4, sampler="ddim")
    with pytest.raises(ValueError, match="NaN"):
        pipe.rollout(torch.full((1, 4, 3, 128, 128), float("nan")), "x", num_frames=4)


def test_save_and_load_round_trip(pipe, history, tmp_path):
    pipe.save_pretrained(tmp_path)
    loaded = WorldModelPipeline.from_pretrained(tmp_path)
    assert loaded.config.num_history_frames == 4 and list(loaded.config.image_size) == [128, 128]
    kw = dict(num_frames=4, steps=3, seed=2, actions=torch.randn(2, 8, 14))
    assert torch.equal(loaded.rollout(history, "pick up the cube", **kw), pipe.rollout(history, "pick up the cube", **kw))


def test_lora_weights_round_trip_through_diffusers_loader(history, tmp_path):
    src = build_pipeline(velocity_preset(), ["pick up the cube"], seed=0)
    src.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS, init_lora_weights=False))
    WorldModelPipeline.save_lora_weights(tmp_path, transformer_lora_layers=get_peft_model_state_dict(src.transformer))
    assert (tmp_path / "pytorch_lora_weights.safetensors").exists()
    dst = build_pipeline(velocity_preset(), ["pick up the cube"], seed=0)
    before = dst.rollout(history[:1], "pick up the cube", num_frames=4, steps=2, seed=0)
    dst.load_lora_weights(tmp_path)
    after = dst.rollout(history[:1], "pick up the cube", num_frames=4, steps=2, seed=0)
    expected = src.rollout(history[:1], "pick up the cube", num_frames=4, steps=2, seed=0)
    assert not torch.equal(before, after)
    assert torch.allclose(after, expected, atol=1e-5)


def test_noise_scale_is_a_sampling_temperature(history):
    pipe = build_pipeline(velocity_preset(), ["pick up the cube"], seed=0)

    def run(seed, **kw):
        return pipe.rollout(history[:1], "pick up the cube", num_frames=4, steps=3, seed=seed, **kw)

    assert torch.equal(run(1, noise_scale=1.0), run(1))  # 1 is the plain sampler
    assert torch.equal(run(1, noise_scale=0.0), run(2, noise_scale=0.0))  # no noise: the seed no longer matters
    spread = (run(1) - run(2)).abs().mean()
    assert 0 < (run(1, noise_scale=0.3) - run(2, noise_scale=0.3)).abs().mean() < spread
    with pytest.raises(ValueError, match="noise_scale must be >= 0"):
        run(1, noise_scale=-0.5)


def test_init_sigma_warm_starts_from_the_newest_frame(history):
    """init_sigma 1 is the plain sampler; below it, sampling runs only the steps at or under that sigma, from the
    newest history latent noised to it, so the rollout lands nearer the newest frame the lower it starts."""
    pipe = build_pipeline(velocity_preset(), ["pick up the cube"], seed=0)
    calls = []
    hook = pipe.transformer.patch_embedding.register_forward_hook(lambda *_: calls.append(1))

    def run(sampler="euler", **kw):
        calls.clear()
        out = pipe.rollout(history[:1], "pick up the cube", num_frames=4, steps=10, seed=1, sampler=sampler, **kw)
        return out, len(calls)

    try:
        for sampler in ("euler", "unipc"):
            plain, nfe = run(sampler)
            assert nfe == 10 and torch.equal(run(sampler, init_sigma=1.0)[0], plain)
            warm, warm_nfe = run(sampler, init_sigma=0.5)
            assert 0 < warm_nfe < nfe
            newest = history[:1, -1:].float() / 255
            far, near = ((x - newest).abs().mean() for x in (plain, run(sampler, init_sigma=0.3)[0]))
            assert near < 0.5 * far
        for bad in (0.0, 1.5):
            with pytest.raises(ValueError, match="init_sigma must be in"):
                run(init_sigma=bad)
        with pytest.raises(ValueError, match="below every sigma"):
            run(init_sigma=1e-4)
    finally:
        hook.remove()
