"""Flow-GRPO correctness: the SDE, log-probabilities, ratio, KL, advantages, batch arithmetic, the whole loop."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file

from rl_post_train.grpo import (choose_train_steps, gaussian_kl, gaussian_log_prob, group_advantages, ppo_loss,
                                sample_sde, sde_mean_std, sde_sigmas, step_log_prob)
from rl_post_train.rewards import CALIBRATION_FILE, Calibration, RewardOutput
from rl_post_train.train import advantages_of, train
from tests.rl_post_train.conftest import TINY_GRPO, grpo_config
from world_model.pipeline import WorldModelPipeline
from world_model.train import LORA_TARGETS


def _history(n=2, size=64, seed=0):
    return torch.rand(n, 4, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def lora_pipe(tiny_models):
    pipe = WorldModelPipeline.from_pretrained(tiny_models[1])
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS))
    return pipe


# ----------------------------------------------------------------------------- the SDE itself

def test_sde_keeps_the_marginals_of_a_gaussian():
    """Exact velocity of x_data ~ N(mu, tau^2); SDE samples from pure noise end at N(mu, tau^2).

    (With 60 steps the Euler discretisation alone leaves the std about 4% low, ODE and SDE alike.)
    """
    mu, tau, n, steps = 0.7, 0.3, 40000, 600
    sigmas = sde_sigmas(steps, flow_shift=3.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, dtype=torch.float64, generator=g)
    for i in range(steps):
        s = float(sigmas[i])
        var = (1 - s) ** 2 * tau ** 2 + s ** 2
        centred = x - (1 - s) * mu
        v = (s / var) * centred - (mu + (1 - s) * tau ** 2 / var * centred)  # E[noise | x] - E[x_data | x]
        mean, std = sde_mean_std(x, v, sigmas, i, noise_level=0.7)
        x = mean.double() + std * torch.randn(n, 1, dtype=torch.float64, generator=g)
    assert x.mean().item() == pytest.approx(mu, abs=0.005)
    assert x.std().item() == pytest.approx(tau, abs=0.005)


def test_log_prob_and_kl_golden_values():
    mean = torch.zeros(1, 4)
    x = torch.tensor([[0.0, 1.0, -1.0, 2.0]])
    want = -(0 + 1 + 1 + 4) / 4 / (2 * 4.0) - math.log(2.0) - 0.5 * math.log(2 * math.pi)
    assert gaussian_log_prob(x, mean, std=2.0).item() == pytest.approx(want)
    assert gaussian_kl(x, mean, std=2.0).item() == pytest.approx((0 + 1 + 1 + 4) / 4 / 8)
    with pytest.raises(ValueError, match="noise level 0"):
        gaussian_log_prob(x, mean, std=0.0)


def test_noise_level_zero_reproduces_the_ode_sampler(tiny_models):
    pipe = WorldModelPipeline.from_pretrained(tiny_models[1])
    history = _history()
    ode = pipe.rollout(history, "lift the bar", num_frames=4, steps=4, seed=3, sampler="euler", flow_shift=3.0)
    inputs = pipe.prepare(history, "lift the bar", num_frames=4, seed=3)
    traj = sample_sde(pipe, inputs, [3, 4], steps=4, noise_level=0.0, sde_steps=list(range(4)), flow_shift=3.0)
    torch.testing.assert_close(pipe.decode(traj.latents[-1], 4, inputs.detail), ode, rtol=0, atol=1e-6)
    # with noise, the result differs and every step has a finite log-probability
    noisy = sample_sde(pipe, inputs, [3, 4], steps=4, noise_level=0.7, sde_steps=list(range(4)), flow_shift=3.0)
    assert torch.isfinite(noisy.log_probs).all() and not torch.equal(noisy.latents[-1], traj.latents[-1])


def test_first_ratio_is_exactly_one_and_kl_is_zero(lora_pipe):
    history = _history()
    inputs = lora_pipe.prepare(history, "lift the bar", num_frames=4, seed=0)
    traj = sample_sde(lora_pipe, inputs, [0, 1], steps=3, noise_level=0.7, sde_steps=[0, 1, 2], flow_shift=3.0)
    for i in range(3):
        logp, mean, std = step_log_prob(lora_pipe, traj, i, slice(None), 0.7)
        assert torch.equal(torch.exp(logp - traj.log_probs[:, i]), torch.ones(2))
        _, mean_ref, _ = step_log_prob(lora_pipe, traj, i, slice(None), 0.7, reference=True)
        assert torch.equal(gaussian_kl(mean, mean_ref, std), torch.zeros(2))


def test_a_sample_does_not_depend_on_its_batch(lora_pipe):
    history = _history(3)
    both = lora_pipe.prepare(history, "lift the bar", num_frames=4, seed=[10, 11, 12])
    alone = lora_pipe.prepare(history[1:2], "lift the bar", num_frames=4, seed=[11])
    a = sample_sde(lora_pipe, both, [10, 11, 12], 3, 0.7, [0, 1, 2], 3.0)
    b = sample_sde(lora_pipe, alone, [11], 3, 0.7, [0, 1, 2], 3.0)
    torch.testing.assert_close(a.latents[-1][1:2], b.latents[-1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(a.log_probs[1:2], b.log_probs, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- advantages and loss

def test_group_advantages_drop_nonfinite_and_flat_groups():
    r = torch.tensor([1.0, 2.0, 3.0, float("nan"), 5.0, 5.0, 5.0, 5.0, 0.0, float("inf"), 0.0, 2.0])
    adv, keep, counts = group_advantages(r, group_size=4, clip=1.0)
    assert counts == {"nonfinite_rewards": 2, "zero_std_groups": 1, "groups": 3}
    assert keep.tolist() == [True, True, True, False, False, False, False, False, True, False, True, True]
    assert torch.isfinite(adv).all() and adv[~keep].abs().sum() == 0
    # group 1: rewards 1, 2, 3 -> mean 2, sample std 1 -> advantages -1, 0, 1
    assert adv[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-5)
    assert adv.abs().max() <= 1.0  # clipped


def test_per_reward_advantages_keep_a_group_that_one_reward_leaves_flat():
    # group 0: perceptual 1, 2, 3 and motion flat at 1 (every sample moves enough): kept on perceptual alone
    # group 1: both flat: dropped; group 2: a NaN perceptual reward drops its sample
    cfg = SimpleNamespace(reward=SimpleNamespace(combine="advantages", video_gate_weight=0.0), group_size=3,
                          adv_clip=5.0)
    perceptual = torch.tensor([1.0, 2.0, 3.0, 4.0, 4.0, 4.0, 1.0, float("nan"), 3.0])
    motion = torch.tensor([1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.0, 0.5, 1.0])
    rewards = {"perceptual": RewardOutput(perceptual, {}), "motion": RewardOutput(motion, {})}
    adv, keep, counts, total = advantages_of(cfg, rewards, {"perceptual": 1.0, "motion": 0.5})
    assert keep.tolist() == [True, True, True, False, False, False, True, False, True]
    assert counts == {"nonfinite_rewards": 1, "zero_std_groups": 1, "groups": 3}
    assert adv[:3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-5)  # motion adds nothing
    # group 2: perceptual 1, 3 (std sqrt 2) and motion 0, 0.5, 1 (std 0.5), motion weighted by 0.5
    assert adv[[6, 8]].tolist() == pytest.approx([-1 / 2 ** 0.5 - 0.5, 1 / 2 ** 0.5 + 0.5], abs=1e-5)
    assert torch.isfinite(adv).all() and adv[~keep].abs().sum() == 0


@pytest.mark.parametrize("video_gate_weight", [0.0, 0.5])
def test_video_gate_as_its_own_advantage(video_gate_weight):
    # group 0: the smoother samples move less in the frames; group 1: smoothness flat, the gate spread
    smooth = torch.tensor([0.4, 0.5, 0.6, 0.5, 0.5, 0.5])
    motion_gate = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    video_gate = torch.tensor([1.0, 0.5, 0.0, 0.2, 0.6, 1.0])
    product = smooth * motion_gate * video_gate
    parts = {"smoothness": smooth, "motion_gate": motion_gate, "video_gate": video_gate}
    cfg = SimpleNamespace(reward=SimpleNamespace(combine="advantages", video_gate_weight=video_gate_weight),
                          group_size=3, adv_clip=5.0)
    adv, keep, counts, total = advantages_of(cfg, {"executability": RewardOutput(product, parts)},
                                             {"executability": 1.0})
    torch.testing.assert_close(total.total, product)  # the logged reward is the product either way
    assert keep.all() and counts == {"nonfinite_rewards": 0, "zero_std_groups": 0, "groups": 2}
    if video_gate_weight == 0:  # one advantage of the product, 0.4 / 0.25 / 0 and 0.1 / 0.3 / 0.5
        group = product[:3]  # 0.4, 0.25, 0: the least smooth sample has the highest advantage
        assert adv[:3].tolist() == pytest.approx(((group - group.mean()) / group.std()).tolist(), abs=1e-5)
        assert adv[0] > 0
        assert adv[3:].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-5)
    else:  # smoothness -1, 0, 1 plus 0.5 x gate 1, 0, -1; group 1: 0.5 x the gate's -1, 0, 1
        assert adv.tolist() == pytest.approx([-0.5, 0.0, 0.5, -0.5, 0.0, 0.5], abs=1e-5)


def test_ppo_loss_clips_the_ratio():
    logp_old = torch.zeros(3)
    logp = torch.log(torch.tensor([1.0, 1.5, 0.5]))
    adv = torch.tensor([1.0, 1.0, -1.0])
    loss, ratio, clipped = ppo_loss(logp, logp_old, adv, clip_range=0.2)
    assert loss.tolist() == pytest.approx([-1.0, -1.2, 0.8])
    assert clipped.tolist() == [False, True, True]


def test_train_step_subsets():
    rng = np.random.default_rng(0)
    assert choose_train_steps("all", 10, rng, 0.5, 3, (0, 4)) == (list(range(10)), list(range(10)))
    assert choose_train_steps("early", 10, rng, 0.5, 3, (0, 4))[1] == [0, 1, 2]
    assert choose_train_steps("window", 10, rng, 0.5, 3, (2, 5)) == ([2, 3, 4], [2, 3, 4])
    sde, trained = choose_train_steps("fraction", 10, rng, 0.3, 3, (0, 4))
    assert sde == list(range(10)) and len(trained) == 3 and len(set(trained)) == 3


def test_batch_arithmetic_is_validated(tiny_models, tmp_path):
    cfg = grpo_config(tiny_models, tmp_path, "prompts_per_step=3", "group_size=8", "updates_per_step=2",
                      "micro_batch=4")
    assert cfg.batch_arithmetic(1) == {"samples_per_step": 24, "samples_per_process": 24, "samples_per_update": 12,
                                       "micro_batch": 4, "accumulation": 3}
    with pytest.raises(ValueError, match="prompts_per_step=3 does not divide over 2 processes"):
        cfg.batch_arithmetic(2)
    with pytest.raises(ValueError, match="micro_batch=5"):
        grpo_config(tiny_models, tmp_path, "micro_batch=5").batch_arithmetic(1)
    with pytest.raises(ValueError, match="updates_per_step=3"):
        grpo_config(tiny_models, tmp_path, "updates_per_step=3").batch_arithmetic(1)


# ----------------------------------------------------------------------------- eva-grpo end to end

def _lora(run_dir):
    return load_file(str(run_dir / "model" / "pytorch_lora_weights.safetensors"))


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_executability_run_logs_resumes_exactly_and_loads(tiny_models, tmp_path):
    train(grpo_config(tiny_models, tmp_path / "full", "max_steps=2", "updates_per_step=2", "micro_batch=1"))
    rec = _metrics(tmp_path / "full")[0]
    assert 0.9 < rec["ratio_min"] <= 1.0 <= rec["ratio_max"] < 1.1  # the second mini-batch is slightly off-policy
    for key in ("reward", "reward/executability/jerk", "reward/executability/video_motion", "kl", "clip_fraction",
                "zero_std_ratio", "time/sampling"):
        assert key in rec
    assert (tmp_path / "full" / CALIBRATION_FILE).exists()  # stored with the run
    train(grpo_config(tiny_models, tmp_path / "split", "max_steps=1", "updates_per_step=2", "micro_batch=1"))
    resumed = train(grpo_config(tiny_models, tmp_path / "split", "max_steps=2", "updates_per_step=2",
                                "micro_batch=1"))
    a, b = _lora(tmp_path / "full"), _lora(tmp_path / "split")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)  # the update moved the adapters
    pipe = WorldModelPipeline.from_pretrained(resumed)
    pipe.load_lora_weights(resumed)  # diffusers' loader takes the saved file


def test_accumulation_does_not_change_the_update(tiny_models, tmp_path):
    one = train(grpo_config(tiny_models, tmp_path / "mb4", "max_steps=1", "micro_batch=4", "train_timesteps=early"))
    two = train(grpo_config(tiny_models, tmp_path / "mb2", "max_steps=1", "micro_batch=2", "train_timesteps=early"))
    a, b = load_file(str(one / "pytorch_lora_weights.safetensors")), load_file(str(two / "pytorch_lora_weights.safetensors"))
    for k in a:
        # one Adam step moves each weight by about lr (3e-4) or less; summation order moves it by far less
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_grad_split_separates_the_kl_term_and_leaves_the_update_alone(tiny_models, tmp_path):
    train(grpo_config(tiny_models, tmp_path / "nokl", "max_steps=1", "kl_beta=0", "log_grad_split=true"))
    rec = _metrics(tmp_path / "nokl")[0]
    # without a KL term the whole (pre-clipping) gradient is the policy term's
    assert rec["grad_norm/kl"] <= 1e-6 * rec["grad_norm/policy"]
    assert rec["grad_norm/policy"] == pytest.approx(rec["grad_norm"], rel=1e-5)
    on = train(grpo_config(tiny_models, tmp_path / "on", "max_steps=2", "kl_beta=1", "log_grad_split=true"))
    off = train(grpo_config(tiny_models, tmp_path / "off", "max_steps=2", "kl_beta=1"))
    first, second = _metrics(tmp_path / "on")
    # the adapters start at zero, so the policy is the reference and the KL term has no gradient until the
    # first update has moved them
    assert first["grad_norm/kl"] <= 1e-6 * first["grad_norm/policy"]
    assert second["grad_norm/kl"] > 1e3 * max(first["grad_norm/kl"], 1e-30)
    assert -1 <= second["grad_cos/policy_kl"] <= 1
    # the KL per trained denoising step: zero at the start, and (equal sample counts) averaging to the logged KL
    first_kl, second_kl = ([v for k, v in rec.items() if k.startswith("kl/step_")] for rec in (first, second))
    assert len(second_kl) == second["trained_steps"] and all(v == 0 for v in first_kl)
    assert np.mean(second_kl) == pytest.approx(second["kl"], rel=1e-5) and second["kl"] > 0
    a, b = load_file(str(on / "pytorch_lora_weights.safetensors")), load_file(str(off / "pytorch_lora_weights.safetensors"))
    for k in a:  # the diagnostic only reads the gradient
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-8)


def test_perceptual_run_and_window_mode(tiny_models, tmp_path):
    train(grpo_config(tiny_models, tmp_path / "p", "reward=perceptual", "max_steps=1", "train_timesteps=window",
                      "reward.repetition_weight=0.1", "reward.motion_weight=0.5", "reward.combine=advantages"))
    rec = _metrics(tmp_path / "p")[0]
    assert "reward/perceptual/lpips" in rec and "reward/repetition/repetition_rate" in rec
    assert 0 <= rec["reward/motion"] <= 1 and "reward/motion/motion_agreement" in rec
    assert rec["trained_steps"] == 2


def test_nonfinite_rewards_are_dropped_and_counted(tiny_models, tmp_path, monkeypatch):
    from rl_post_train import train as train_module

    real = train_module.Scorer.__call__

    def poisoned(self, *args):
        out = real(self, *args)
        out["executability"].total[0] = float("nan")
        return out

    monkeypatch.setattr(train_module.Scorer, "__call__", poisoned)
    out = train(grpo_config(tiny_models, tmp_path / "nan", "max_steps=1", "group_size=3", "micro_batch=3"))
    assert _metrics(tmp_path / "nan")[0]["dropped_nonfinite"] == 1
    assert all(torch.isfinite(v).all() for v in load_file(str(out / "pytorch_lora_weights.safetensors")).values())


def test_missing_calibration_is_refused_with_the_command(tiny_models, tmp_path):
    with pytest.raises(FileNotFoundError, match="eva-calibrate-reward"):
        train(grpo_config(tiny_models, tmp_path / "x", f"reward.executability.calibration_file={tmp_path}/none.json"))
    cal = Calibration.load(tiny_models[3])
    assert cal.p0 > 0 and cal.num_rollouts == 4
    assert set(cal.term_shares) == {"jerk", "acc_smooth", "vel_limit", "acc_limit"}
    assert sum(cal.term_shares.values()) == pytest.approx(1.0)


def test_two_processes_match_one(tiny_models, tmp_path):
    one = train(grpo_config(tiny_models, tmp_path / "one", "max_steps=1", "micro_batch=2"))
    root, wm, idm, calibration = tiny_models
    env = dict(os.environ, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={29600 + os.getpid() % 1000}", "-m", "rl_post_train.train", f"dataset_root={root}",
           f"checkpoint={wm}", f"idm_checkpoint={idm}", f"run_dir={tmp_path / 'two'}",
           f"reward.executability.calibration_file={calibration}", *TINY_GRPO, "max_steps=1", "micro_batch=2"]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=300)
    a, b = load_file(str(one / "pytorch_lora_weights.safetensors")), _lora(tmp_path / "two")
    for k in a:
        # one Adam step moves each weight by about lr (3e-4) or less; summation order moves it by far less
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- checkpoint selection

SELECT = ["val_every=1", "val_episodes_per_task=1", "val_windows=2", "val_lpips_tolerance=0.05",
          "val_agreement_tolerance=0.1"]


def _state_params(run_dir):
    return torch.load(run_dir / "checkpoint" / "grpo_state.pt", weights_only=False)["params"]


def _same_adapters(saved: dict, params: dict) -> bool:
    """The saved LoRA file (diffusers' key names) holds the same tensors as the checkpoint's parameters."""
    return len(saved) == len(params) and all(any(torch.equal(v, p) for p in params.values()) for v in saved.values())


def test_selection_scores_held_out_windows_and_saves_the_selected_adapters(tiny_models, tmp_path):
    out = train(grpo_config(tiny_models, tmp_path / "sel", "max_steps=2", *SELECT))
    records = [json.loads(line) for line in (tmp_path / "sel" / "validation.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [0, 1, 2]
    for r in records:
        assert math.isfinite(r["reward"]) and r["lpips"] >= 0 and 0 <= r["agreement"] <= 1 and r["seconds"] > 0
        # the executability reward's own parts are logged; smoothness bounds the reward (the gates are <= 1)
        assert 0 <= r["reward"] <= r["smoothness"] + 1e-6 and r["smoothness"] <= 1 and r["jerk"] >= 0
        assert 0 <= r["vel_violation_frac"] <= 1 and 0 <= r["acc_violation_frac"] <= 1
    # the rule, recomputed from the log: the best-rewarded eligible record, the start included
    start = records[0]
    eligible = [r for r in records
                if r["lpips"] <= 1.05 * start["lpips"] and r["agreement"] >= 0.9 * start["agreement"]]
    best = max(eligible, key=lambda r: r["reward"])
    summary = json.loads((tmp_path / "sel" / "selection.json").read_text())
    assert summary["selected"]["step"] == best["step"] == records[-1]["selected_step"]
    saved = load_file(str(out / "pytorch_lora_weights.safetensors"))
    if best["step"] == 0:
        assert all(v.abs().sum() == 0 for k, v in saved.items() if "lora_B" in k)
    elif best["step"] == 2:
        assert _same_adapters(saved, _state_params(tmp_path / "sel"))


def test_selection_skips_an_ineligible_best_and_survives_a_resume(tiny_models, tmp_path, monkeypatch):
    from rl_post_train import train as train_module

    # start, then iterations 1-3: iteration 2 has the highest reward but LPIPS 10% above the start's, and
    # iteration 3 the agreement 20% below it; iteration 1 is the selected checkpoint
    scores = {0: (0.5, 0.10, 0.5), 1: (0.7, 0.104, 0.46), 2: (0.9, 0.11, 0.5), 3: (0.95, 0.10, 0.4)}
    queue = []  # the iterations whose validation the next calls score

    def fake_score(self):
        return dict(zip(("reward", "lpips", "agreement"), scores[queue.pop(0)]))

    monkeypatch.setattr(train_module.Selection, "score", fake_score)
    queue[:] = [0, 1, 2, 3]
    out = train(grpo_config(tiny_models, tmp_path / "full", "max_steps=3", *SELECT))
    assert not queue and json.loads((tmp_path / "full" / "selection.json").read_text())["selected"]["step"] == 1
    queue[:] = [0, 1]
    train(grpo_config(tiny_models, tmp_path / "one", "max_steps=1", *SELECT))
    assert _same_adapters(load_file(str(out / "pytorch_lora_weights.safetensors")), _state_params(tmp_path / "one"))
    # interrupted after iteration 2 and resumed: the start and the best so far come back from the checkpoint
    queue[:] = [0, 1, 2]
    train(grpo_config(tiny_models, tmp_path / "split", "max_steps=2", *SELECT))
    queue[:] = [3]
    resumed = train(grpo_config(tiny_models, tmp_path / "split", "max_steps=3", *SELECT))
    assert not queue
    a, b = (load_file(str(m / "pytorch_lora_weights.safetensors")) for m in (out, resumed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_smoothness_tolerance_skips_reward_bought_with_jerk(tiny_models, tmp_path, monkeypatch):
    from rl_post_train import train as train_module

    # reward, LPIPS, agreement, smoothness: iteration 2 has the best reward and is eligible by LPIPS and
    # agreement, but is less smooth than the start; the smoothness gate keeps iteration 1 instead
    scores = {0: (0.5, 0.10, 0.5, 0.60), 1: (0.6, 0.10, 0.5, 0.61), 2: (0.9, 0.10, 0.5, 0.55)}
    queue = []

    def fake_score(self):
        return dict(zip(("reward", "lpips", "agreement", "smoothness"), scores[queue.pop(0)]))

    monkeypatch.setattr(train_module.Selection, "score", fake_score)
    for tolerance, selected in (("null", 2), ("0", 1), ("0.1", 2)):  # 0.55 >= 0.9 x 0.60
        queue[:] = [0, 1, 2]
        run = tmp_path / f"tol{tolerance}"
        train(grpo_config(tiny_models, run, "max_steps=2", *SELECT, f"val_smoothness_tolerance={tolerance}"))
        summary = json.loads((run / "selection.json").read_text())
        assert not queue and summary["selected"]["step"] == selected
        assert summary["val_smoothness_tolerance"] == (None if tolerance == "null" else float(tolerance))
