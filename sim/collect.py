"""eva-collect: run the scripted experts over N episodes per task and write a LeRobot v3.0 dataset.

    eva-collect experiment=tiny dataset.root=runs/data workers=2
    eva-collect task=[insertion] dataset.episodes_per_task=50

Seeds follow RoboTwin: from 100000 * (1 + dataset.seed) upward, keeping only seeds the expert
solves. Each episode is an atomic commit; rerunning the same command after an interruption
keeps the finished episodes, discards a partial one and continues.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig
from tqdm import tqdm

from configs.constants import robotwin_start_seed
from configs.embodiment import Embodiment
from configs.run_files import save_resolved_config
from configs.schema import CollectConfig, validate
from sim.dataset import EpisodeRecord, LeRobotDatasetWriter, stage_episode_videos
from sim.parallel import make_executor, ordered_seed_search
from sim.rollout import TaskCache, record_expert

log = logging.getLogger(__name__)

_WORKER: dict = {}


def _init_worker(cfg: CollectConfig, staging: str) -> None:
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    _WORKER.update(cfg=cfg, staging=Path(staging), tasks=TaskCache(cfg.tasks, embodiment, cfg.render),
                   fps=int(embodiment.control_rate_hz))


def _collect_one(task: str, seed: int) -> EpisodeRecord | None:
    cfg: CollectConfig = _WORKER["cfg"]
    env = _WORKER["tasks"].get(task)
    ep = record_expert(env, seed)
    if not ep.success:
        return None
    staging = _WORKER["staging"] / f"{task}-{seed}"
    staging.mkdir(parents=True, exist_ok=True)
    videos, image_stats = stage_episode_videos(staging, ep.frames, _WORKER["fps"], cfg.dataset.video_codec,
                                               cfg.dataset.video_crf)
    return EpisodeRecord(states=ep.states, actions=ep.actions, instruction=ep.instruction, videos=videos,
                         image_stats=image_stats, task=task, seed=seed, success=True)


def collect(cfg: CollectConfig) -> Path:
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    instructions = [i for t in cfg.tasks.values() for i in t.instructions]
    writer = LeRobotDatasetWriter(
        cfg.dataset.root, repo_id=cfg.dataset.repo_id, fps=int(embodiment.control_rate_hz),
        robot_type=embodiment.robot_type, embodiment=embodiment.name, joint_names=list(embodiment.joint_names),
        cameras=list(cfg.render.cameras), image_shape=(cfg.render.height, cfg.render.width), tasks=instructions,
        video_codec=cfg.dataset.video_codec, video_crf=cfg.dataset.video_crf, chunk_size=cfg.dataset.chunk_size)
    done = {t: [e for e in writer.episodes if e["eva/task"] == t] for t in cfg.tasks}
    n = cfg.dataset.episodes_per_task
    total = n * len(cfg.tasks)
    bar = tqdm(total=total, initial=sum(min(len(v), n) for v in done.values()), desc="collect", unit="ep")
    start_seed = robotwin_start_seed(cfg.dataset.seed)
    skipped: dict[str, list[int]] = {t: [] for t in cfg.tasks}
    t0 = time.time()
    with make_executor(cfg.workers, _init_worker, (cfg, str(writer.staging))) as pool:
        for task in cfg.tasks:
            needed = n - len(done[task])
            if needed <= 0:
                continue
            first = max([e["eva/seed"] for e in done[task]], default=start_seed - 1) + 1

            def on_result(seed, rec, kept, task=task):
                if kept:
                    writer.add_episode(rec)
                    bar.update(1)
                else:
                    skipped[task].append(seed)
                    shutil.rmtree(writer.staging / f"{task}-{seed}", ignore_errors=True)

            ordered_seed_search(pool, _collect_one, task, first, needed,
                                max_tries=n * cfg.dataset.max_seed_tries, keep=lambda r: r is not None,
                                on_result=on_result, window=2 * cfg.workers)
    bar.close()
    shutil.rmtree(writer.staging, ignore_errors=True)
    for task, seeds in skipped.items():
        if seeds:
            log.info("%s: expert failed on seeds %s (skipped, RoboTwin protocol)", task, seeds)
    log.info("dataset %s: %d episodes, %d frames in %.1f s", cfg.dataset.root, len(writer.episodes),
             sum(e["length"] for e in writer.episodes), time.time() - t0)
    return Path(cfg.dataset.root)


@hydra.main(version_base=None, config_path="../configs", config_name="collect")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, CollectConfig)
    save_resolved_config(dcfg, cfg.dataset.root, "collect_config.yaml")
    collect(cfg)


if __name__ == "__main__":
    main()
