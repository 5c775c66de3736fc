"""eva-bench-planner: latency and jitter of the planner's control loop on this machine.

    eva-bench-planner --world-model runs/wm/model --idm runs/idm/model --steps 4 10
    eva-bench-planner                  # random weights: the tiny world-model preset and the default IDM

Drives :meth:`real_robot.planner.Planner.step` against the wall clock, as ``planner_node`` does: one
tick per control period of the embodiment (50 Hz), a joint state every tick and a camera frame at
``--camera-hz`` (synthetic images: the timing does not depend on their content). Runs ``--seconds``
per denoising-step count and prints

* the planning latency per stage (history, world model, IDM, total): median, 95th percentile, max;
* the control loop: tick duration (median, p95, max), the share of ticks that overran the control
  period, and the start jitter (how late ticks started against their schedule: p95, max).

Both planning modes run, one row each per step count (``--modes``): ``sync`` plans inside ``step``, so a
replanning tick lasts a whole plan and the ticks behind it start late; ``async`` plans in a background thread
while the chunk keeps executing (``planner_node``'s mode). Random weights time the same computation as trained
ones (the network shapes decide the cost, not the values).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch

from configs.embodiment import load_embodiment
from configs.schema import IDMModelConfig, PlannerConfig
from idm.model import InverseDynamicsModel
from real_robot.planner import STAGES, Planner
from world_model.build import build_pipeline, load_preset
from world_model.pipeline import load_world_model

INSTRUCTION = "lift the bar with both arms"


def run_loop(planner: Planner, seconds: float, camera_hz: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tick at the control rate on the wall clock for ``seconds``; tick durations and start lateness (s)."""
    emb = planner.embodiment
    frame = rng.integers(0, 256, planner.history.shape, dtype=np.uint8)
    planner.reset(INSTRUCTION)
    durations, lateness, holds = [], [], 0
    start = time.perf_counter()
    next_frame = 0.0
    for tick in range(int(round(seconds * emb.control_rate_hz))):
        scheduled = tick * emb.dt
        wait = start + scheduled - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        t0 = time.perf_counter()
        now = t0 - start
        lateness.append(max(now - scheduled, 0.0))
        while next_frame <= now:  # the frames the camera captured since the last tick, newest stamp kept
            planner.observe({planner.cfg.camera: frame}, next_frame)
            next_frame += 1.0 / camera_hz
        holds += planner.step(emb.home, now).hold
        durations.append(time.perf_counter() - t0)
    return {"duration": np.array(durations), "lateness": np.array(lateness), "holds": holds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-model", default=None, help="saved world model; default: random tiny preset")
    ap.add_argument("--idm", default=None, help="saved IDM; default: random IDM of the default config")
    ap.add_argument("--embodiment", default="aloha_viperx")
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 10], help="denoising steps per plan")
    ap.add_argument("--frames", type=int, default=8, help="imagined frames per plan")
    ap.add_argument("--seconds", type=float, default=10.0, help="wall-clock seconds per step count")
    ap.add_argument("--camera-hz", type=float, default=30.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--modes", nargs="+", default=["sync", "async"], choices=["sync", "async"])
    args = ap.parse_args()

    embodiment = load_embodiment(args.embodiment)
    pipe = load_world_model(args.world_model) if args.world_model else build_pipeline(load_preset("tiny"),
                                                                                      [INSTRUCTION])
    if args.idm:
        idm = InverseDynamicsModel.from_pretrained(args.idm, embodiment=embodiment)
    else:
        idm_cfg = dataclasses.asdict(IDMModelConfig())
        idm = InverseDynamicsModel(**{k: tuple(v) if isinstance(v, list) else v for k, v in idm_cfg.items()},
                                   joint_names=tuple(embodiment.joint_names))
    rng = np.random.default_rng(0)
    print(f"# planner: world model {args.world_model or 'tiny (random weights)'}, IDM {args.idm or 'random'}, "
          f"{embodiment.name} at {embodiment.control_rate_hz:g} Hz (period {1e3 * embodiment.dt:.0f} ms), camera "
          f"{args.camera_hz:g} Hz, {args.frames} imagined frames per plan, {args.device}, torch threads "
          f"{torch.get_num_threads()}, {args.seconds:g} s per row")
    print(f"{'mode':>5} {'steps':>5} {'plans':>5} | " + " ".join(f"{s + ' ms':>22}" for s in STAGES)
          + f" | {'tick ms (med/p95/max)':>22} {'overrun':>7} {'late ms (p95/max)':>17} {'holds':>5}")
    for mode, steps in [(m, s) for s in args.steps for m in args.modes]:
        cfg = PlannerConfig(num_future_frames=args.frames, steps=steps, device=args.device,
                            asynchronous=mode == "async")
        planner = Planner(pipe, idm, embodiment, cfg)
        planner.warmup()
        loop = run_loop(planner, args.seconds, args.camera_hz, rng)
        planner.close()
        ms = {s: 1e3 * np.array([t[s] for t in planner.timings]) for s in STAGES}
        stages = " ".join(f"{np.median(v):6.1f}/{np.percentile(v, 95):6.1f}/{v.max():6.1f}" if len(v) else
                          f"{'no plan':>22}" for v in ms.values())
        d, late = 1e3 * loop["duration"], 1e3 * loop["lateness"]
        overrun = float(np.mean(loop["duration"] > embodiment.dt))
        print(f"{mode:>5} {steps:>5} {len(planner.timings):>5} | {stages} | {np.median(d):6.2f}/{np.percentile(d, 95):6.1f}/"
              f"{d.max():6.1f} {100 * overrun:6.1f}% {np.percentile(late, 95):8.1f}/{late.max():7.1f} "
              f"{loop['holds']:>5}")


if __name__ == "__main__":
    main()
