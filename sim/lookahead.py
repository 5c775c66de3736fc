"""Expert lookahead: the planner with the simulator in place of the world model (simulation only).

The receding-horizon planner (``real_robot.planner.Planner``) imagines the next frames, decodes them with
the IDM and executes the result behind the safety filter. :class:`ExpertLookahead` answers the planner's
``rollout`` call with frames the simulator renders: it copies the current MuJoCo state, executes the
scripted expert's plan from the current control step on (the plan of this episode, made at its start), renders
the planner's camera at every video frame, and throws the copy away. Everything after the imagination is the
planner's own code: the history buffer, the IDM decode, the interpolation to the control rate, the safety
filter and the replanning.

So ``eva-eval policy=planner_lookahead`` measures the planner with a perfect world model: an upper bound for the
learned one with the same IDM, and a check of the loop itself (its success should be close to the IDM's replay
success in ``eva-eval-idm``). A world model that falls short of it is what limits the planner.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import torch

from sim.tasks import BimanualTask


class ExpertLookahead:
    """The part of ``WorldModelPipeline`` the planner uses (``config``, ``to``, ``rollout``), from the simulator.

    ``reset()`` after ``env.setup_demo`` plans the expert's episode; ``rollout`` then returns the frames the
    expert's next actions would produce from the current state, leaving the simulation as it was.
    """

    def __init__(self, env: BimanualTask, camera: str, fps: int, image_size, num_history_frames: int = 4):
        if not isinstance(env, BimanualTask):
            raise ValueError(f"expert lookahead needs the MuJoCo simulator (eva-eval), got {type(env).__name__}")
        if camera not in env.camera_ids:
            raise ValueError(f"expert lookahead: camera '{camera}' is not rendered; render.cameras = "
                             f"{list(env.camera_ids)}")
        size = [env.render_cfg.height, env.render_cfg.width]
        if list(image_size) != size:
            raise ValueError(f"expert lookahead: the IDM reads {list(image_size)} frames, the simulator renders {size}")
        ratio = env.embodiment.control_rate_hz / fps
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"expert lookahead: control rate {env.embodiment.control_rate_hz} Hz is not a multiple "
                             f"of {fps} fps")
        self.env, self.camera, self.every = env, camera, int(round(ratio))
        self.config = SimpleNamespace(num_history_frames=num_history_frames, fps=fps, image_size=list(image_size))
        self.device = torch.device("cpu")
        self.plan: np.ndarray | None = None

    def to(self, device) -> ExpertLookahead:
        self.device = torch.device(device)
        return self

    def reset(self) -> None:
        """Plan the expert's actions for the episode ``env.setup_demo`` has just set up."""
        self.plan = self.env.expert_actions()

    @torch.no_grad()
    def rollout(self, history: torch.Tensor, instruction, actions=None, *, num_frames: int = 8, seed=0,
                **sampling) -> torch.Tensor:
        """(1, num_frames, 3, h, w) frames in [0, 1]: frame j after the expert's next ``j * every`` actions (the
        last one held past the end of its plan). Instruction, seed and sampling settings have no effect: the
        future is the simulator's. Before the first episode (the planner's warm-up) the newest frame is held."""
        if self.plan is None:
            newest = history[:, -1:].float() / (255.0 if history.dtype == torch.uint8 else 1.0)
            return newest.expand(-1, num_frames, -1, -1, -1).to(self.device)
        env = self.env
        live, executed = env.data, env.take_action_cnt
        env.data = copy.copy(live)  # a throwaway copy of the whole MuJoCo state
        frames = []
        try:
            for _ in range(num_frames):
                for _ in range(self.every):
                    env.take_action(self.plan[min(env.take_action_cnt, len(self.plan) - 1)])
                frames.append(env.render(self.camera))
        finally:
            env.data, env.take_action_cnt = live, executed
        video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255.0
        return video[None].to(self.device)
