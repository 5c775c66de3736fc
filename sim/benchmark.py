"""eva-bench-sim: simulator and collection throughput on this machine.

    eva-bench-sim [--steps 400] [--episodes-per-task 2] [--skip-collect]

1. Env steps per second of a task (physics at 500 Hz, one 50 Hz control step = 10 physics
   steps, plus rendering) with one and with three 128x128 cameras, next to a bare MuJoCo
   loop (mj_step x 10 + render of the same cameras, same model) in the same run; the ratio
   is the overhead of our task layer (target >= 0.7; >= 100 steps/s with one camera).
2. Collection throughput (episodes per minute, videos encoded and committed) with 1 and 2
   worker processes.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from configs import compose, load_task_config  # noqa: E402
from configs.embodiment import load_embodiment  # noqa: E402
from configs.schema import CollectConfig, RenderConfig, validate  # noqa: E402
from sim.tasks import make_task  # noqa: E402


def env_loop(task: str, cameras: list[str], steps: int, size: int, repeats: int = 3) -> tuple[float, float]:
    """(env steps/s, bare steps/s) for the same model, cameras and action stream; the two loops
    alternate ``repeats`` times and the best time of each is kept (less noise from other load)."""
    env = make_task(load_task_config(task), load_embodiment("aloha_viperx"),
                    RenderConfig(height=size, width=size, cameras=cameras))
    env.setup_demo(seed=100000)
    actions = env.expert_actions()
    actions = actions[np.arange(steps) % len(actions)]
    env.get_obs()  # create the GL context outside the timing
    # bare loop: raw MuJoCo on the same compiled model with the same actuator commands
    model, data = env.model, mujoco.MjData(env.model)
    renderer = mujoco.Renderer(model, size, size)
    cam_ids = [env.camera_ids[c] for c in cameras]
    ctrl = np.zeros((len(actions), model.nu))
    for k, a in enumerate(actions):
        env._apply_ctrl(a)
        ctrl[k] = env.data.ctrl
    renderer.update_scene(data, camera=cam_ids[0])
    renderer.render()
    t_env = t_bare = float("inf")
    for _ in range(repeats):
        env.setup_demo(seed=100000)
        start_qpos, start_ctrl = env.data.qpos.copy(), env.data.ctrl.copy()
        t0 = time.perf_counter()
        for a in actions:
            env.get_obs()
            env.take_action(a)
        t_env = min(t_env, time.perf_counter() - t0)
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.ctrl[:] = start_qpos, start_ctrl  # same initial state as the env
        mujoco.mj_forward(model, data)
        t0 = time.perf_counter()
        for k in range(len(actions)):
            for cid in cam_ids:
                renderer.update_scene(data, camera=cid)
                renderer.render()
            data.ctrl[:] = ctrl[k]
            mujoco.mj_step(model, data, nstep=env.n_substeps)
        t_bare = min(t_bare, time.perf_counter() - t0)
    renderer.close()
    env.close_env()
    return steps / t_env, steps / t_bare


def collect_throughput(workers: int, episodes_per_task: int) -> tuple[float, int]:
    from sim.collect import collect

    with tempfile.TemporaryDirectory() as tmp:
        dcfg = compose("collect", [f"workers={workers}", f"dataset.episodes_per_task={episodes_per_task}",
                                   f"dataset.root={tmp}/ds"])
        cfg = validate(dcfg, CollectConfig)
        t0 = time.perf_counter()
        collect(cfg)
        elapsed = time.perf_counter() - t0
    n = episodes_per_task * len(cfg.tasks)
    return 60.0 * n / elapsed, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="transfer_cube")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--episodes-per-task", type=int, default=2)
    ap.add_argument("--skip-collect", action="store_true")
    args = ap.parse_args()

    print(f"# simulator throughput: task {args.task}, {args.steps} control steps, {args.size}x{args.size}, "
          f"MUJOCO_GL={os.environ['MUJOCO_GL']}")
    print(f"{'cameras':<10} {'env steps/s':>12} {'bare steps/s':>13} {'ratio':>7}")
    results = {}
    for cams in (["cam_high"], ["cam_high", "cam_left_wrist", "cam_right_wrist"]):
        env_sps, bare_sps = env_loop(args.task, cams, args.steps, args.size)
        results[len(cams)] = (env_sps, bare_sps)
        print(f"{len(cams):<10} {env_sps:>12.1f} {bare_sps:>13.1f} {env_sps / bare_sps:>7.2f}")
    one, _ = results[1]
    ratio = results[1][0] / results[1][1]
    print(f"targets (one camera): >= 100 env steps/s: {'met' if one >= 100 else 'MISSED'} ({one:.0f}); "
          f"ratio >= 0.7: {'met' if ratio >= 0.7 else 'MISSED'} ({ratio:.2f})")
    if args.skip_collect:
        print("# collection throughput: skipped (--skip-collect)")
        return
    print(f"# collection throughput: 3 tasks x {args.episodes_per_task} episodes, 3 cameras, mp4 + parquet commits")
    base = None
    for workers in (1, 2):
        epm, n = collect_throughput(workers, args.episodes_per_task)
        base = base or epm
        print(f"workers={workers}: {epm:.1f} episodes/min ({n} episodes), speed-up x{epm / base:.2f}")


if __name__ == "__main__":
    main()
