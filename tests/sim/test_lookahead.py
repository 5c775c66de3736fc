"""Expert lookahead (the planner with the simulator in place of the world model): its frames are the expert's
future from the live state, the live simulation is untouched, and ``policy=planner_lookahead`` runs in eva-eval."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import configs
from configs.schema import EvaluateConfig, validate
from sim.lookahead import ExpertLookahead
from sim.tasks import make_task
from tests.conftest import SMALL_RENDER, tiny_idm

SIZE = SMALL_RENDER["height"]
EVERY = 5  # control steps per video frame: 50 Hz / 10 fps


@pytest.fixture(scope="module")
def env(embodiment, small_render):
    task = make_task(configs.load_task_config("lift_bar"), embodiment, small_render)
    yield task
    task.close_env()


def live_state(env) -> dict:
    d = env.data
    return {"qpos": d.qpos.copy(), "qvel": d.qvel.copy(), "ctrl": d.ctrl.copy(), "act": d.act.copy(),
            "time": d.time, "executed": env.take_action_cnt, "frame": env.render("cam_high")}


def as_uint8(video: torch.Tensor) -> np.ndarray:
    return (video * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()


def test_frames_are_the_experts_future_and_the_live_simulation_is_untouched(env):
    env.setup_demo(seed=100000)
    look = ExpertLookahead(env, "cam_high", fps=10, image_size=[SIZE, SIZE])
    look.reset()
    plan = look.plan
    for a in plan[:7]:  # mid-frame: the lookahead continues from the control step the episode is at
        env.take_action(a)
    before = live_state(env)
    history = torch.zeros(1, 4, 3, SIZE, SIZE, dtype=torch.uint8)
    video = look.rollout(history, "lift the bar", num_frames=3, seed=123, steps=7)
    after = live_state(env)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key], err_msg=key)
    assert video.shape == (1, 3, 3, SIZE, SIZE) and video.dtype == torch.float32
    # the same actions executed for real give the same frames
    frames = as_uint8(video)[0]
    for j in range(3):
        for a in plan[7 + EVERY * j:7 + EVERY * (j + 1)]:
            env.take_action(a)
        np.testing.assert_array_equal(frames[j], env.render("cam_high"))
    assert not np.array_equal(frames[0], frames[2])  # the arms move in the first frames of lift_bar


def test_past_the_end_of_the_plan_the_last_action_is_held(env):
    env.setup_demo(seed=100001)
    look = ExpertLookahead(env, "cam_high", fps=10, image_size=[SIZE, SIZE])
    look.reset()
    for a in look.plan:
        env.take_action(a)
    history = torch.zeros(1, 4, 3, SIZE, SIZE, dtype=torch.uint8)
    video = look.rollout(history, "", num_frames=2)
    env.take_action(look.plan[-1])  # what the lookahead executes after the plan's end
    assert np.abs(as_uint8(video)[0, 0].astype(int) - env.render("cam_high").astype(int)).max() <= 1


def test_before_the_first_episode_the_newest_frame_is_held(env):
    look = ExpertLookahead(env, "cam_high", fps=10, image_size=[SIZE, SIZE])
    history = torch.randint(0, 256, (1, 4, 3, SIZE, SIZE), dtype=torch.uint8)
    video = look.rollout(history, "", num_frames=2)  # the planner's warm-up
    assert torch.equal(video[0, 1], history[0, -1].float() / 255)


def test_bad_settings_are_refused(env):
    with pytest.raises(ValueError, match="camera 'cam_left_wrist' is not rendered"):
        ExpertLookahead(env, "cam_left_wrist", fps=10, image_size=[SIZE, SIZE])
    with pytest.raises(ValueError, match=r"reads \[128, 128\] frames, the simulator renders \[64, 64\]"):
        ExpertLookahead(env, "cam_high", fps=10, image_size=[128, 128])
    with pytest.raises(ValueError, match="not a multiple of 15 fps"):
        ExpertLookahead(env, "cam_high", fps=15, image_size=[SIZE, SIZE])
    with pytest.raises(ValueError, match="needs the MuJoCo simulator"):
        ExpertLookahead(object(), "cam_high", fps=10, image_size=[SIZE, SIZE])


def test_eva_eval_runs_the_planner_with_the_lookahead(tmp_path):
    from sim.evaluate import evaluate

    idm = tiny_idm(tmp_path / "idm")
    cfg = validate(configs.compose("evaluate", [
        "policy=planner_lookahead", f"policy.planner.idm={idm}", "policy.planner.world_model=/nonexistent",
        "policy.planner.num_future_frames=4", "task=[lift_bar]", "tasks.lift_bar.step_limit=40",
        f"render.height={SIZE}", f"render.width={SIZE}", "render.cameras=[cam_high]", "eval.episodes_per_task=1",
        "eval.only_expert_solvable=false", "eval.save_video=none", "workers=1", f"output_dir={tmp_path / 'eval'}"]),
        EvaluateConfig)
    info = evaluate(cfg)
    latency = info["per_task"]["lift_bar"]["planner_latency_s"]
    assert latency["total"]["count"] == 2 and latency["world_model"]["median"] > 0  # 40 steps, 20-step chunks
    episode = info["per_episode"][0]
    assert episode["failure_reason"] is None or episode["failure_reason"].startswith("step limit")

