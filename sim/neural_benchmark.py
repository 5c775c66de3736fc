"""eva-bench-neural-sim: throughput of the world model as a simulator and of MPC candidate evaluation.

    eva-bench-neural-sim --world-model runs/wm/model
    eva-bench-neural-sim                 # random weights: the tiny preset (the cost depends on shapes only)

Prints, measured in this process:

* the neural simulator (``sim.neural_env.NeuralSimulator.step``) at batch 1 and batch 16: imagined control
  steps per second (all episodes together), imagined frames per second, seconds per call;
* MPC candidate evaluation (``ChunkMPC.imagine``: one history encoded once, all candidates in one batch) in
  candidates per second, against the same rollouts with the history repeated per candidate
  (``WorldModelPipeline.rollout``), and the ratio.

Each number is the median of ``--repeats`` timed calls after one warm-up call.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import configs
from configs.constants import ACTION_DIM
from configs.embodiment import load_embodiment
from configs.schema import ImaginationConfig, MPCConfig, validate
from sim.mpc import ChunkMPC
from sim.neural_env import NeuralSimulator, frame_rate_actions
from world_model.build import build_pipeline, load_preset
from world_model.pipeline import load_world_model

INSTRUCTION = "lift the bar with both arms"


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-model", default=None, help="saved world model; default: random tiny preset")
    ap.add_argument("--embodiment", default="aloha_viperx")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="episodes per simulator call")
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--chunk-frames", type=int, default=8)
    ap.add_argument("--steps", type=int, default=10, help="denoising steps per call")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    torch.set_grad_enabled(False)
    embodiment = load_embodiment(args.embodiment)
    pipe = load_world_model(args.world_model) if args.world_model else build_pipeline(load_preset("tiny"),
                                                                                      [INSTRUCTION])
    pipe = pipe.to(args.device)
    size = tuple(pipe.config.image_size)
    im = ImaginationConfig(chunk_frames=args.chunk_frames, steps=args.steps, device=args.device)
    rng = np.random.default_rng(0)
    print(f"world model: {args.world_model or 'tiny preset, random weights'}, {size[0]}x{size[1]}, "
          f"{args.chunk_frames} frames per call, {args.steps} denoising steps, euler, {torch.get_num_threads()} "
          f"threads on {args.device}")

    print("\nneural simulator (NeuralSimulator.step)")
    print(f"{'batch':>6} {'s/call':>8} {'control steps/s':>16} {'frames/s':>9}")
    for b in args.batches:
        sim = NeuralSimulator(pipe, embodiment.control_rate_hz, im)
        sim.reset(rng.integers(0, 256, (b, *size, 3), dtype=np.uint8), np.tile(embodiment.home, (b, 1)),
                  [INSTRUCTION] * b, list(range(b)))
        actions = np.tile(embodiment.home, (b, sim.chunk_steps, 1)) + rng.normal(0, 0.01, (b, sim.chunk_steps, ACTION_DIM))
        s = median_seconds(lambda: sim.step(actions), args.repeats)
        print(f"{b:>6} {s:>8.3f} {b * sim.chunk_steps / s:>16.1f} {b * args.chunk_frames / s:>9.1f}")

    print(f"\nMPC candidates ({args.candidates} per call)")
    cfg = validate(configs.compose("mpc", [f"candidates={args.candidates}"]), MPCConfig)
    cfg.imagination = im
    mpc = ChunkMPC(pipe, cfg, embodiment)
    history = rng.integers(0, 256, (pipe.config.num_history_frames, *size, 3), dtype=np.uint8)
    history_actions = np.tile(embodiment.home, (len(history), 1))
    chunks = np.tile(embodiment.home, (args.candidates, mpc.steps, 1)) + rng.normal(0, 0.01, (args.candidates, mpc.steps, ACTION_DIM))
    shared = median_seconds(lambda: mpc.imagine(history, history_actions, INSTRUCTION, chunks, seed=0), args.repeats)
    cond = torch.from_numpy(frame_rate_actions(np.repeat(history_actions[None], args.candidates, 0), chunks, mpc.every,
                                               mpc.frames)).to(args.device)
    hist = torch.from_numpy(history.transpose(0, 3, 1, 2))[None].expand(args.candidates, -1, -1, -1, -1)
    repeated = median_seconds(lambda: pipe.rollout(hist, INSTRUCTION, cond, num_frames=mpc.frames, steps=args.steps,
                                                   seed=[0] * args.candidates), args.repeats)
    print(f"{'history':>22} {'s/call':>8} {'candidates/s':>13}")
    print(f"{'encoded once (MPC)':>22} {shared:>8.3f} {args.candidates / shared:>13.1f}")
    print(f"{'repeated (rollout)':>22} {repeated:>8.3f} {args.candidates / repeated:>13.1f}")
    print(f"ratio: {repeated / shared:.2f}x (the codec and the text encoder run once instead of per candidate)")


if __name__ == "__main__":
    main()
