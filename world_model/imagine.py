"""Whole imagined episodes: the world model as an open-loop visual planner, judged in MuJoCo.

From the first camera frame of an episode (repeated as the H-frame history: the robot rests before it
starts), the world model imagines the episode chunk by chunk, each chunk conditioned on the last H
frames it has produced. The IDM decodes the imagined video into actions, which are interpolated to the
control rate and executed open loop from the episode's seed. This is the "decode and execute" test of
EVA (table 4 executes decoded rollouts; section 5 replans every chunk, the closed loop of the planner).
"""

from __future__ import annotations

import torch

from configs.embodiment import Embodiment
from idm.decode import decode_for_execution
from idm.model import InverseDynamicsModel
from sim.rollout import execute_open_loop
from world_model.pipeline import WorldModelPipeline


@torch.no_grad()
def imagine(pipe: WorldModelPipeline, first_frames: torch.Tensor, instructions: list[str], num_frames: int, *,
            chunk: int = 8, seed: int = 0, **sampling) -> torch.Tensor:
    """(B, 3, h, w) first frames in [0, 1] -> (B, H + num_frames, 3, h, w): the history, then imagined frames.

    Chunk c of sample b uses seed ``seed + 1000 * c + b``; ``sampling``: the keyword arguments of
    ``WorldModelPipeline.rollout`` (``SamplingConfig.sampling_kwargs``).
    """
    h = pipe.config.num_history_frames
    video = first_frames.unsqueeze(1).expand(-1, h, -1, -1, -1).float()
    b = video.shape[0]
    for c in range(-(-num_frames // chunk)):
        nxt = pipe.rollout(video[:, -h:], instructions, num_frames=chunk, seed=[seed + 1000 * c + i for i in range(b)],
                           **sampling)
        video = torch.cat([video, nxt], dim=1)
    return video[:, :h + num_frames]


def success_of_imagined_episodes(pipe: WorldModelPipeline, idm: InverseDynamicsModel, embodiment: Embodiment, env,
                                 first_frames: torch.Tensor, instructions: list[str], seeds: list[int],
                                 num_frames: int, hold_steps: int, **imagine_kw) -> tuple[list[bool], torch.Tensor]:
    """Imagine, decode and execute a batch of episodes of one task; (successes, imagined videos)."""
    video = imagine(pipe, first_frames, instructions, num_frames, **imagine_kw)
    control = decode_for_execution(idm, video, pipe.config.num_history_frames, embodiment.control_rate_hz)
    return [execute_open_loop(env, s, a, hold_steps)[0] for s, a in zip(seeds, control)], video
