"""eva-bench-idm: decode throughput of the IDM on this machine.

    eva-bench-idm [--checkpoint runs/idm/model] [--frames 100]

Decodes a 10 s video at the IDM's frame rate (100 frames at 10 fps) with batch sizes 1
and 16, and times the model's forward pass alone on the same windows (the baseline):
the ratio is what window building and input checks cost on top of the network.
Then times one training step (forward, backward, AdamW; batch 32) from a uint8 batch as the
training windows hold it: fp32; the backbone under bf16 autocast (``eva-train-idm precision=bf16``)
with the frames converted to floats in [0, 1] first; and bf16 with the uint8 frames given to the
model as they are (what ``eva-train-idm`` does), alternating the three.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from configs.precision import resolve_precision
from idm.decode import decode_video
from idm.model import InverseDynamicsModel


def best_time(fn, repeats: int, sync=None) -> float:
    """Shortest of ``repeats`` runs of ``fn``; ``sync`` (e.g. torch.cuda.synchronize) brackets each run."""
    sync = sync or (lambda: None)
    best = float("inf")
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="IDM checkpoint; default: random weights, default config")
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = (InverseDynamicsModel.from_pretrained(args.checkpoint) if args.checkpoint
             else InverseDynamicsModel(joint_names=tuple(f"j{i}" for i in range(14))).eval())
    c = model.config
    h, w = c.image_size
    print(f"# IDM decode: {len(c.cameras)} camera(s) {h}x{w}, k={c.context_k}, {c.fps} fps, "
          f"torch threads {torch.get_num_threads()}, {'checkpoint ' + args.checkpoint if args.checkpoint else 'random weights'}")
    print(f"{'batch':>5} {'frames':>7} {'decode s':>9} {'frames/s':>9} {'forward-only s':>15} {'ratio':>6} "
          f"{'s per 10 s episode':>19}")
    for batch in (1, 16):
        video = torch.randint(0, 256, (batch, args.frames, 3, h, w), dtype=torch.uint8)
        videos = {cam: video for cam in c.cameras}
        t_dec = best_time(lambda: decode_video(model, videos), args.repeats)
        windows = torch.randint(0, 256, (min(256, batch * args.frames), len(c.cameras), 2 * c.context_k + 1, 3, h, w),
                                dtype=torch.uint8)
        n_chunks = -(-batch * args.frames // len(windows))
        with torch.no_grad():
            t_fwd = best_time(lambda: [model(windows) for _ in range(n_chunks)], args.repeats)
        frames = batch * args.frames
        per_episode = t_dec / batch * (10 * c.fps / args.frames)
        print(f"{batch:>5} {frames:>7} {t_dec:>9.3f} {frames / t_dec:>9.1f} {t_fwd:>15.3f} {t_dec / t_fwd:>6.2f} "
              f"{per_episode:>19.3f}")

    train_step_times(model)


def train_step_times(model: InverseDynamicsModel, batch: int = 32, steps: int = 5, rounds: int = 3) -> None:
    c = model.config
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    frames = torch.randint(0, 256, (batch, len(c.cameras), 2 * c.context_k + 1, 3, *c.image_size), dtype=torch.uint8)
    target = torch.randn(batch, c.action_dim)
    variants = {"fp32": (False, True), "bf16, float frames": (True, True), "bf16, uint8 frames": (True, False)}

    def run(bf16: bool, as_float: bool) -> None:
        for _ in range(steps):
            x = frames.float().div_(255.0) if as_float else frames
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.mse_loss(model(x), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    for v in variants.values():  # warm-up
        run(*v)
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):  # alternate, best of each
        for name, v in variants.items():
            best[name] = min(best[name], best_time(lambda: run(*v), 1) / steps)
    print(f"# training step, batch {batch}, from uint8 windows: "
          + ", ".join(f"{name} {t * 1000:.1f} ms" for name, t in best.items())
          + f"; bf16 x{best['fp32'] / best['bf16, float frames']:.2f} over fp32, uint8 input "
          f"x{best['bf16, float frames'] / best['bf16, uint8 frames']:.2f} over float input; "
          f"precision=auto picks {resolve_precision('auto')} on this machine")


if __name__ == "__main__":
    main()
