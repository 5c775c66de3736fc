"""eva-train-judge: train the success judge of Real2Sim campaigns on labelled simulated frames.

    eva-train-judge run_dir=runs/judge max_minutes=4

1. Data: the noisy scripted expert at each of ``noise_levels`` runs ``episodes_per_level`` episodes per task
   (seeds from RoboTwin's ``100000 * (1 + seed)``) and ``val_episodes_per_level`` held-out ones (the next
   seed block); frames of the judge's camera at its frame rate, labelled by ``check_success()``. Each split
   is cached in ``<run_dir>/data/<split>.npz`` with the settings that made it, so a rerun with the same
   settings skips the simulation.
2. Training: class-balanced binary cross-entropy, AdamW, optional augmentation (blur and pixel noise: the
   judge also reads imagined frames, which are softer than rendered ones), a wall-clock budget.
3. Held-out report (``<run_dir>/metrics.json``): frame accuracy and balanced accuracy per task, and episode
   accuracy (the judged outcome of a whole held-out episode vs the simulator's) per task.

The model is ``<run_dir>/model`` (diffusers ``save_pretrained``).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from configs.constants import robotwin_start_seed
from configs.embodiment import Embodiment
from configs.run_files import atomic_write_json, replace_dir, save_resolved_config
from configs.schema import TrainJudgeConfig, validate
from sim.judge import SuccessJudge, frames_to_tensor, judged_success, labelled_rollout
from sim.parallel import make_executor
from sim.policies import NoisyExpertPolicy
from sim.rollout import TaskCache

log = logging.getLogger(__name__)

SPLITS = ("train", "heldout")
_WORKER: dict = {}


def _init_worker(cfg: TrainJudgeConfig) -> None:
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    _WORKER.update(cfg=cfg, tasks=TaskCache(cfg.tasks, embodiment, cfg.render))


def _rollout(job: tuple[str, float, int]) -> tuple[np.ndarray, np.ndarray, bool]:
    task, level, seed = job
    cfg: TrainJudgeConfig = _WORKER["cfg"]
    env = _WORKER["tasks"].get(task)
    every = int(round(env.embodiment.control_rate_hz / cfg.judge.fps))
    return labelled_rollout(env, NoisyExpertPolicy(env, level, cfg.noise_correlation), seed, cfg.judge.camera, every)


def data_settings(cfg: TrainJudgeConfig, split: str) -> dict[str, Any]:
    episodes = cfg.episodes_per_level if split == "train" else cfg.val_episodes_per_level
    return {"tasks": sorted(cfg.tasks), "noise_levels": list(cfg.noise_levels),
            "noise_correlation": cfg.noise_correlation, "episodes_per_level": episodes,
            "first_seed": robotwin_start_seed(cfg.seed + SPLITS.index(split)), "camera": cfg.judge.camera,
            "fps": cfg.judge.fps, "image_size": [cfg.render.height, cfg.render.width]}


def labelled_frames(cfg: TrainJudgeConfig, split: str) -> dict[str, np.ndarray]:
    """The split's frames, labels, task names, episode ids and episode outcomes (cached on disk)."""
    path = Path(cfg.run_dir) / "data" / f"{split}.npz"
    settings = data_settings(cfg, split)
    if path.is_file():
        with np.load(path) as cached:
            if json.loads(str(cached["settings"])) == settings:
                log.info("%s: reusing the cached %s split", path, split)
                return {k: cached[k] for k in cached.files}
        log.info("%s: settings changed, simulating the %s split again", path, split)
    jobs = [(task, level, settings["first_seed"] + i) for task in settings["tasks"]
            for level in cfg.noise_levels for i in range(settings["episodes_per_level"])]
    frames, labels, tasks, episode, outcome, levels = [], [], [], [], [], []
    with make_executor(cfg.workers, _init_worker, (cfg,)) as pool:
        for ep, ((task, level, _), (f, lab, success)) in enumerate(
                tqdm(zip(jobs, pool.map(_rollout, jobs)), total=len(jobs), desc=f"simulate {split}", unit="ep")):
            frames.append(f)
            labels.append(lab)
            tasks += [task] * len(f)
            episode += [ep] * len(f)
            outcome.append(success)
            levels.append(level)
    data = {"frames": np.concatenate(frames), "labels": np.concatenate(labels), "tasks": np.array(tasks),
            "episode": np.array(episode), "episode_task": np.array([j[0] for j in jobs]),
            "episode_success": np.array(outcome), "episode_noise": np.array(levels),
            "settings": np.array(json.dumps(settings))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **data)
    tmp.replace(path)
    return data


def augment(frames: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Half of the batch blurred (3x3 box), all of it with a little pixel noise."""
    blur = torch.rand(len(frames), generator=gen) < 0.5
    out = frames.clone()
    out[blur] = F.avg_pool2d(frames[blur], 3, stride=1, padding=1, count_include_pad=False)
    return (out + 0.02 * torch.randn(out.shape, generator=gen)).clamp_(0, 1)


def report(judge: SuccessJudge, data: dict[str, np.ndarray], threshold: float, consecutive: int) -> dict[str, Any]:
    probs = judge.predict(frames_to_tensor(data["frames"]), list(data["tasks"]))
    pred, labels = probs >= threshold, data["labels"]
    out: dict[str, Any] = {}
    for task in sorted(set(data["episode_task"])):
        m = data["tasks"] == task
        pos, neg = labels[m], ~labels[m]
        tpr = float((pred[m] & pos).sum() / max(pos.sum(), 1))
        tnr = float((~pred[m] & neg).sum() / max(neg.sum(), 1))
        episodes = np.flatnonzero(data["episode_task"] == task)
        judged = [judged_success(probs[data["episode"] == e], threshold, consecutive)[0] for e in episodes]
        truth = data["episode_success"][episodes]
        out[task] = {"frames": int(m.sum()), "positive_frames": int(pos.sum()),
                     "frame_accuracy": float((pred[m] == labels[m]).mean()), "balanced_accuracy": (tpr + tnr) / 2,
                     "episodes": len(episodes), "true_successes": int(truth.sum()),
                     "judged_successes": int(np.sum(judged)), "episode_accuracy": float(np.mean(judged == truth))}
    return out


def train(cfg: TrainJudgeConfig) -> Path:
    run = Path(cfg.run_dir)
    torch.manual_seed(cfg.seed)
    data = {split: labelled_frames(cfg, split) for split in SPLITS}
    train_data = data["train"]
    for task in sorted(cfg.tasks):
        rates = []
        for level in cfg.noise_levels:
            m = (train_data["episode_task"] == task) & (train_data["episode_noise"] == level)
            rates.append(f"{level:g}: {int(train_data['episode_success'][m].sum())}/{int(m.sum())}")
        log.info("%s: training episodes that succeed, per noise level: %s", task, ", ".join(rates))
    frames = frames_to_tensor(train_data["frames"])
    labels = torch.from_numpy(train_data["labels"]).float()
    judge = SuccessJudge(tasks=tuple(sorted(cfg.tasks)), camera=cfg.judge.camera,
                         image_size=(cfg.render.height, cfg.render.width), fps=cfg.judge.fps,
                         channels=tuple(cfg.judge.channels), num_keypoints=cfg.judge.num_keypoints,
                         hidden=cfg.judge.hidden)
    sample = frames[torch.randperm(len(frames))[:512]]
    judge.set_normalization(sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3)))
    task_ids = judge.task_ids(list(train_data["tasks"]))
    pos_weight = (1 - labels.mean()) / labels.mean().clamp_min(1e-3)  # balance the classes
    opt = torch.optim.AdamW(judge.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    start, step = time.monotonic(), 0
    bar = tqdm(total=cfg.max_steps, desc="train judge", unit="step")
    judge.train()
    while step < cfg.max_steps and time.monotonic() - start < 60 * cfg.max_minutes:
        idx = torch.randint(0, len(frames), (cfg.batch_size,), generator=gen)
        x = augment(frames[idx], gen) if cfg.augment else frames[idx]
        loss = F.binary_cross_entropy_with_logits(judge(x, task_ids[idx]), labels[idx], pos_weight=pos_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        bar.update(1)
        if step % 25 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    judge.eval()
    metrics = {"steps": step, "train_minutes": (time.monotonic() - start) / 60,
               "threshold": cfg.threshold, "consecutive": cfg.consecutive,
               "heldout": report(judge, data["heldout"], cfg.threshold, cfg.consecutive)}
    tmp = run / ".model.tmp"
    judge.save_pretrained(tmp)
    replace_dir(tmp, run / "model")
    atomic_write_json(run / "metrics.json", metrics)
    for task, r in metrics["heldout"].items():
        log.info("%s held out: frame accuracy %.3f (balanced %.3f), episode accuracy %.3f over %d episodes",
                 task, r["frame_accuracy"], r["balanced_accuracy"], r["episode_accuracy"], r["episodes"])
    return run / "model"


@hydra.main(version_base=None, config_path="../configs", config_name="train_judge")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, TrainJudgeConfig)
    save_resolved_config(dcfg, cfg.run_dir, "train_judge_config.yaml")
    log.info("config:\n%s", OmegaConf.to_yaml(dcfg))
    train(cfg)


if __name__ == "__main__":
    main()
