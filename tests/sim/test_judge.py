"""The success judge: decision rule, checkpoint round trip, bad input, labelled rollouts, eva-train-judge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import configs
from configs.schema import TrainJudgeConfig, validate
from sim.judge import SuccessJudge, frames_to_tensor, judged_success, labelled_rollout

SIZE = 64


def tiny_judge(**kw) -> SuccessJudge:
    torch.manual_seed(0)
    return SuccessJudge(tasks=("lift_bar", "transfer_cube"), image_size=(SIZE, SIZE), channels=(8, 16),
                        num_keypoints=4, hidden=16, **kw)


def test_judged_success_needs_a_run_of_confident_frames():
    p = np.array([0.2, 0.9, 0.1, 0.6, 0.7, 0.95])
    assert judged_success(p, 0.5, 1) == (True, 1)
    assert judged_success(p, 0.5, 2) == (True, 3)
    assert judged_success(p, 0.5, 3) == (True, 3)
    assert judged_success(p, 0.5, 4) == (False, None)
    assert judged_success(p, 0.99, 1) == (False, None)
    assert judged_success(np.zeros(0), 0.5, 1) == (False, None)


def test_save_load_round_trip_gives_identical_outputs(tmp_path):
    judge = tiny_judge()
    judge.set_normalization([0.4, 0.5, 0.6], [0.2, 0.1, 0.3])
    frames = torch.rand(5, 3, SIZE, SIZE)
    tasks = ["lift_bar", "transfer_cube", "lift_bar", "lift_bar", "transfer_cube"]
    judge.save_pretrained(tmp_path / "judge")
    loaded = SuccessJudge.from_pretrained(tmp_path / "judge")
    np.testing.assert_array_equal(judge.eval().predict(frames, tasks), loaded.eval().predict(frames, tasks))
    assert list(loaded.config.tasks) == ["lift_bar", "transfer_cube"]
    torch.testing.assert_close(loaded.image_std, torch.tensor([0.2, 0.1, 0.3]))


def test_bad_input_is_refused_with_the_reason():
    judge = tiny_judge().eval()
    with pytest.raises(ValueError, match="not \\['insertion'\\]"):
        judge.predict(torch.rand(1, 3, SIZE, SIZE), ["insertion"])
    with pytest.raises(ValueError, match="expected \\(N, 3, 64, 64\\)"):
        judge.predict(torch.rand(1, 3, 32, 32), ["lift_bar"])
    with pytest.raises(ValueError, match="float frames"):
        judge.predict(torch.zeros(1, 3, SIZE, SIZE, dtype=torch.uint8), ["lift_bar"])
    frames = torch.rand(3, 3, SIZE, SIZE)
    frames[2, 0, 5, 5] = float("nan")
    with pytest.raises(ValueError, match="frame 2"):
        judge.predict(frames, ["lift_bar"] * 3)
    with pytest.raises(ValueError, match="3 frames but 2 task names"):
        judge.predict(torch.rand(3, 3, SIZE, SIZE), ["lift_bar"] * 2)
    with pytest.raises(ValueError, match="uint8"):
        frames_to_tensor(np.zeros((2, SIZE, SIZE, 3), np.float32))


def test_a_tiny_judge_learns_a_visual_success_cue():
    """Success frames have a bright square in the top half; the task heads must use the task id."""
    gen = torch.Generator().manual_seed(0)
    n = 64
    frames = torch.rand(n, 3, SIZE, SIZE, generator=gen) * 0.3
    labels = torch.arange(n) % 2 == 0
    rows = torch.randint(4, 20, (n,), generator=gen)
    for i in range(n):
        r = int(rows[i]) if labels[i] else int(rows[i]) + 36
        frames[i, :, r:r + 8, 20:28] = 1.0
    judge = tiny_judge()
    ids = torch.zeros(n, dtype=torch.long)
    opt = torch.optim.Adam(judge.parameters(), lr=3e-3)
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(judge(frames, ids), labels.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    probs = judge.eval().predict(frames, ["lift_bar"] * n)
    assert np.mean((probs >= 0.5) == labels.numpy()) >= 0.95, loss.item()


def test_labelled_rollout_labels_every_frame_with_the_simulator(embodiment, small_render):
    from sim.policies import ScriptedExpertPolicy
    from sim.tasks import make_task

    env = make_task(configs.load_task_config("lift_bar"), embodiment, small_render)
    frames, labels, success = labelled_rollout(env, ScriptedExpertPolicy(env), 100000, "cam_high", every=5)
    assert frames.shape == (env.step_lim // 5 + 1, SIZE, SIZE, 3) and frames.dtype == np.uint8
    assert success and labels[-1] and not labels[0]
    first = int(np.argmax(labels))
    # replaying the expert up to the first positive frame reproduces the simulator's success there
    env.setup_demo(seed=100000)
    plan = env.expert_actions()
    for t in range(first * 5):
        env.take_action(plan[min(t, len(plan) - 1)])
    assert env.check_success()
    env.close_env()


def train_judge_config(tmp_path, *overrides) -> TrainJudgeConfig:
    return validate(configs.compose("train_judge", [
        f"run_dir={tmp_path}", "task=[lift_bar]", f"render.height={SIZE}", f"render.width={SIZE}",
        "noise_levels=[0.0,0.6]", "episodes_per_level=1", "val_episodes_per_level=1", "max_steps=5",
        "batch_size=8", "judge.channels=[8,16]", "judge.num_keypoints=4", "judge.hidden=16", "workers=1",
        *overrides]), TrainJudgeConfig)


def test_eva_train_judge_writes_a_model_and_a_heldout_report(tmp_path):
    from sim.train_judge import labelled_frames, train

    cfg = train_judge_config(tmp_path)
    model = train(cfg)
    judge = SuccessJudge.from_pretrained(model)
    assert tuple(judge.config.image_size) == (SIZE, SIZE) and list(judge.config.tasks) == ["lift_bar"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    report = metrics["heldout"]["lift_bar"]
    assert metrics["steps"] == 5 and report["episodes"] == 2
    assert 0 <= report["frame_accuracy"] <= 1 and 0 <= report["episode_accuracy"] <= 1
    data = labelled_frames(cfg, "heldout")  # cached: the same arrays, no simulation
    assert report["frames"] == len(data["frames"]) and report["true_successes"] == int(data["episode_success"].sum())
    assert data["episode_success"][0]  # the noiseless expert succeeds


def test_train_judge_config_refuses_bad_values(tmp_path):
    with pytest.raises(ValueError, match="noise_levels"):
        train_judge_config(tmp_path, "noise_levels=[]")
    with pytest.raises(ValueError, match="'judge.camera'"):
        train_judge_config(tmp_path, "judge.camera=cam_left_wrist")
    with pytest.raises(ValueError, match="'threshold'"):
        train_judge_config(tmp_path, "threshold=1.5")
