"""eva-bench-wm: world-model rollout and training-step time on this machine.

    eva-bench-wm [--checkpoint runs/wm/model]                       # the tiny preset on the CPU
    eva-bench-wm --preset wan2.1-1.3b --device cuda --dtype bf16    # random weights at real scale (GPU)

Rollout: seconds per ``rollout()`` of 8 future frames from 4 history frames at batch 1 and 8, Euler and
UniPC, and the number of function evaluations (transformer calls, counted with a forward hook, not
assumed). Training: one SFT step (flow loss forward, backward, AdamW) of ``eva-train-wm`` at batch 8,
fp32 and bf16 autocast, alternating.
"""

from __future__ import annotations

import argparse

import torch

import configs
from configs.precision import resolve_precision
from configs.schema import TrainWMConfig, validate
from idm.benchmark import best_time
from world_model.build import build_pipeline, load_preset
from world_model.latents import clip_layout
from world_model.pipeline import load_world_model
from world_model.train import flow_loss

INSTRUCTION = "lift the bar with both arms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None, help="saved world model; default: random weights of --preset")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    pipe = load_world_model(args.checkpoint) if args.checkpoint else build_pipeline(load_preset(args.preset),
                                                                                    [INSTRUCTION])
    pipe.transformer.to(args.device)
    if args.dtype == "bf16":  # Wan keeps its norms, rope and time embedding in fp32 (diffusers' _keep_in_fp32_modules)
        pipe.transformer.to(torch.bfloat16)
    for m in (pipe.text_encoder, pipe.action_encoder, pipe.vae):
        m.to(args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    calls = [0]
    # one patch embedding per denoiser call (world_model.model.velocity)
    pipe.transformer.patch_embedding.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    h, (hh, ww) = pipe.config.num_history_frames, pipe.config.image_size
    n_params = sum(p.numel() for p in pipe.transformer.parameters())
    print(f"# world model: {args.checkpoint or args.preset + ' (random weights)'}, transformer "
          f"{n_params / 1e6:.1f} M parameters, {hh}x{ww}, {h} history + {args.frames} future frames, "
          f"{args.device} {args.dtype}, torch threads {torch.get_num_threads()}")
    print(f"{'sampler':>8} {'batch':>5} {'steps':>5} {'NFE':>4} {'s/rollout':>10} {'s/sample':>9} {'frames/s':>9}")
    for sampler in ("euler", "unipc"):
        for b in args.batches:
            history = torch.rand(b, h, 3, hh, ww, device=args.device)

            def roll():
                pipe.rollout(history, INSTRUCTION, num_frames=args.frames, steps=args.steps, seed=0, sampler=sampler)

            roll()  # warm-up
            calls[0] = 0
            roll()
            nfe = calls[0]
            t = best_time(roll, args.repeats, sync)
            print(f"{sampler:>8} {b:>5} {args.steps:>5} {nfe:>4} {t:>10.3f} {t / b:>9.3f} {b * args.frames / t:>9.1f}")

    # one SFT step as eva-train-wm runs it, fp32 and bf16 autocast, alternating
    cfg = validate(configs.compose("train_wm", [f"num_future_frames={args.frames}"]), TrainWMConfig)
    pipe.transformer.float().train()
    params = [p for p in pipe.transformer.parameters()] + [p for p in pipe.action_encoder.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    stride = pipe.temporal_stride
    n_hist, _ = clip_layout(h, args.frames, stride)
    frames = torch.rand(args.train_batch, h + args.frames, 3, hh, ww, device=args.device)
    actions = torch.zeros(args.train_batch, h + args.frames, 14, device=args.device)
    text = pipe.encode_text([INSTRUCTION] * args.train_batch)
    keys = [(0, 0, j) for j in range(args.train_batch)]

    def train_step(precision: str) -> None:
        cfg.precision = precision
        loss = flow_loss(pipe, frames, actions, text, keys, cfg, n_hist, 3.0, args.train_batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for p in ("fp32", "bf16"):
        train_step(p)  # warm-up
    best = {"fp32": float("inf"), "bf16": float("inf")}
    for _ in range(args.repeats):
        for p in best:
            best[p] = min(best[p], best_time(lambda: train_step(p), 1, sync))
    print(f"# SFT step, batch {args.train_batch}: fp32 {best['fp32']:.3f} s, bf16 autocast {best['bf16']:.3f} s "
          f"(x{best['fp32'] / best['bf16']:.2f}); "
          f"precision=auto picks {resolve_precision('auto', torch.device(args.device).type)} here")


if __name__ == "__main__":
    main()
