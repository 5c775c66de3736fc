"""The neural simulator: action alignment with training, determinism per seed, batch invariance, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from configs.constants import ACTION_DIM
from configs.schema import ImaginationConfig
from sim.neural_env import NeuralSimulator, to_uint8
from world_model.pipeline import load_world_model

CONTROL_HZ = 50.0


@pytest.fixture(scope="module")
def pipe(tiny_world_model):
    return load_world_model(tiny_world_model)


def make_sim(pipe, **kw) -> NeuralSimulator:
    return NeuralSimulator(pipe, CONTROL_HZ, ImaginationConfig(chunk_frames=4, steps=2, **kw))


def first_frames(b: int, size: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (b, size, size, 3), dtype=np.uint8)


def test_actions_reach_the_world_model_at_its_frame_rate(pipe, monkeypatch):
    sim = make_sim(pipe)
    h, every, n = sim.num_history, sim.every, sim.cfg.chunk_frames
    assert every == 5 and sim.chunk_steps == 20
    seen = []
    real = pipe.rollout
    monkeypatch.setattr(pipe, "rollout", lambda history, instr, actions, **kw: seen.append(actions.numpy().copy())
                        or real(history, instr, actions, **kw))
    states = np.full((2, ACTION_DIM), -1.0)
    sim.reset(first_frames(2), states, ["lift the bar"] * 2, [0, 1])
    # action value = 100 * chunk + control step, the same on every joint
    chunk0 = np.broadcast_to(np.arange(20, dtype=np.float64)[None, :, None], (2, 20, ACTION_DIM)).copy()
    sim.step(chunk0)
    cond = seen[0][0, :, 0]
    assert cond.shape == (h + n,)
    np.testing.assert_array_equal(cond[:h - 1], -1.0)  # rest: the joint state
    assert cond[h - 1] == 0  # the command issued at the newest history frame
    np.testing.assert_array_equal(cond[h:h + n - 1], [5, 10, 15])  # the command issued at each future frame
    assert cond[h + n - 1] == 19  # not issued yet: the chunk's last command
    sim.step(chunk0 + 100)
    cond = seen[1][0, :, 0]
    np.testing.assert_array_equal(cond[:h], [5, 10, 15, 100])  # the last one replaced by what was issued
    np.testing.assert_array_equal(cond[h:], [105, 110, 115, 119])


def test_episodes_are_deterministic_per_seed_and_independent_of_the_batch(pipe):
    frames, states = first_frames(2), np.zeros((2, ACTION_DIM))
    actions = np.random.default_rng(1).normal(0, 0.1, (2, 20, ACTION_DIM))

    def run(idx: list[int]) -> torch.Tensor:
        sim = make_sim(pipe)
        sim.reset(frames[idx], states[idx], ["lift the bar"] * len(idx), [7 + i for i in idx])
        return torch.cat([sim.step(actions[idx]), sim.step(actions[idx])], dim=1)

    both = run([0, 1])
    assert both.shape == (2, 8, 3, 64, 64)
    torch.testing.assert_close(run([1])[0], both[1], rtol=0, atol=0)
    torch.testing.assert_close(run([0, 1]), both, rtol=0, atol=0)
    images = to_uint8(both)
    assert images.shape == (2, 8, 64, 64, 3) and images.dtype == np.uint8


def test_a_history_longer_than_one_frame_is_used_newest_last(pipe):
    sim = make_sim(pipe)
    frames = np.stack([first_frames(1)[0] * 0 + i for i in range(6)])[None].astype(np.uint8)  # (1, 6, 64, 64, 3)
    newest = sim.reset(frames, np.zeros((1, ACTION_DIM)), ["lift the bar"], [0])
    np.testing.assert_array_equal(newest[0], frames[0, -1])
    np.testing.assert_allclose(sim.history[0, :, 0, 0, 0].numpy() * 255, [2, 3, 4, 5], atol=1e-4)


def test_bad_input_is_refused(pipe):
    sim = make_sim(pipe)
    with pytest.raises(RuntimeError, match="reset"):
        sim.step(np.zeros((1, 20, ACTION_DIM)))
    with pytest.raises(ValueError, match="world model's resolution"):
        sim.reset(first_frames(1, size=32), np.zeros((1, ACTION_DIM)), ["x"], [0])
    with pytest.raises(ValueError, match="uint8"):
        sim.reset(first_frames(1).astype(np.float32), np.zeros((1, ACTION_DIM)), ["x"], [0])
    with pytest.raises(ValueError, match="1 episodes but 2 instructions"):
        sim.reset(first_frames(1), np.zeros((1, ACTION_DIM)), ["x", "y"], [0])
    sim.reset(first_frames(1), np.zeros((1, ACTION_DIM)), ["x"], [0])
    with pytest.raises(ValueError, match=r"expected \(1, 20, 14\)"):
        sim.step(np.zeros((1, 19, ACTION_DIM)))
    bad = np.zeros((1, 20, ACTION_DIM))
    bad[0, 3, 2] = np.inf
    with pytest.raises(ValueError, match="non-finite values in episodes \\[0\\]"):
        sim.step(bad)
    with pytest.raises(ValueError, match="does not divide"):
        NeuralSimulator(pipe, 33.0)
