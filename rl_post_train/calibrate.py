"""eva-calibrate-reward: the scale of EVA's executability reward, from the pre-trained world model.

    eva-calibrate-reward checkpoint=runs/wm/model idm_checkpoint=runs/idm/model \
        output=runs/grpo_executability/executability_calibration.json

EVA (section 4.2) sets ``P_0`` "from rollouts of the pre-trained video model": we roll out the
model (instruction only, the ODE sampler) from ``num_prompts`` seeded dataset windows, decode the
videos with the IDM, and take ``P_0`` as the ``reward.executability.p0_quantile`` quantile of the
penalties, so the pre-trained model scores about 0.5 at gamma = 1. The motion floor of the reward
(against frozen videos) is ``min_speed_fraction`` times the median mean joint speed of the same
rollouts. The JSON also holds each weighted term's share of the mean penalty (EVA eq. 8), which
shows whether a weight lets its term matter (a limit term at 1e-5 of the penalty cannot steer GRPO).
Writes a JSON that ``eva-grpo`` requires and copies into its run directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from configs.embodiment import Embodiment
from configs.run_files import save_resolved_config
from configs.schema import CalibrateRewardConfig, validate
from idm.decode import decode_video
from idm.model import InverseDynamicsModel
from rl_post_train.rewards import Calibration, ExecutabilityReward
from sim.dataset import LeRobotDataset
from world_model.data import ClipWindows
from world_model.pipeline import WorldModelPipeline

log = logging.getLogger(__name__)


def calibrate(cfg: CalibrateRewardConfig) -> Calibration:
    embodiment = Embodiment.from_dict(cfg.embodiment, source="config 'embodiment'")
    pipe = WorldModelPipeline.from_pretrained(cfg.checkpoint)
    idm = InverseDynamicsModel.from_pretrained(cfg.idm_checkpoint, embodiment=embodiment).eval()
    reward = ExecutabilityReward(cfg.reward.executability, embodiment, calibration=None)
    h, fps = pipe.config.num_history_frames, pipe.config.fps
    ds = LeRobotDataset(cfg.dataset_root, expected_embodiment=embodiment.name)
    windows = ClipWindows(ds, list(range(len(ds))), cfg.camera, fps, h + cfg.num_future_frames,
                          tuple(pipe.config.image_size))
    episodes, starts = windows.sample_index(np.random.default_rng(cfg.seed), cfg.num_prompts)
    parts_all: list[dict[str, torch.Tensor]] = []
    for i in tqdm(range(0, cfg.num_prompts, cfg.batch_size), desc="calibrate", unit="batch"):
        sl = slice(i, min(i + cfg.batch_size, cfg.num_prompts))
        frames, _, texts = windows.batch(episodes[sl], starts[sl])
        history = frames[:, :h]
        pred = pipe.rollout(history, texts, num_frames=cfg.num_future_frames, steps=cfg.steps,
                            seed=[cfg.seed + j for j in range(sl.start, sl.stop)], sampler="euler",
                            flow_shift=cfg.flow_shift)
        actions = decode_video(idm, torch.cat([history, pred], dim=1))[:, h - 1:]
        parts_all.append(reward.penalty(actions, fps))
    parts = {k: torch.cat([p[k] for p in parts_all]) for k in parts_all[0]}
    penalties, speeds = parts["penalty"].numpy(), parts["mean_speed"].numpy()
    if not np.isfinite(penalties).all():
        raise ValueError(f"{int((~np.isfinite(penalties)).sum())} rollouts gave a non-finite penalty; "
                         "check the IDM and world-model checkpoints")
    exe = cfg.reward.executability
    calibration = Calibration(
        p0=float(max(np.quantile(penalties, exe.p0_quantile), 1e-12)),
        min_speed=float(exe.min_speed_fraction * np.median(speeds)), num_rollouts=len(penalties),
        source=f"world model {cfg.checkpoint}, IDM {cfg.idm_checkpoint}, {cfg.num_prompts} windows of "
               f"{cfg.dataset_root} (seed {cfg.seed}), euler {cfg.steps} steps",
        term_shares=reward.term_shares(parts))
    calibration.save(cfg.output)
    log.info("P_0 = %.4g (penalty quantile %.2f; min %.4g, max %.4g); motion floor %.4g rad/s -> %s",
             calibration.p0, exe.p0_quantile, penalties.min(), penalties.max(), calibration.min_speed, cfg.output)
    log.info("share of the mean penalty by weighted term: %s",
             ", ".join(f"{k} {100 * v:.3g}%" for k, v in calibration.term_shares.items()))
    return calibration


@hydra.main(version_base=None, config_path="../configs", config_name="calibrate_reward")
def main(dcfg: DictConfig) -> None:
    cfg = validate(dcfg, CalibrateRewardConfig)
    save_resolved_config(dcfg, Path(cfg.output).parent, "calibrate_reward_config.yaml")
    calibrate(cfg)


if __name__ == "__main__":
    main()
