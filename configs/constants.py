"""Names shared by every part of the stack: one place, no scattered string keys.

Action/state layout follows RoboTwin's ``joint_action.vector`` and gym-aloha:
``[left 6 joints, left gripper, right 6 joints, right gripper]``, joints in
radians, grippers normalised to 0 = closed, 1 = open.
"""

from __future__ import annotations

ARMS: tuple[str, str] = ("left", "right")
JOINTS_PER_ARM = 6
ACTION_DIM = 2 * (JOINTS_PER_ARM + 1)  # 14
LEFT_ARM = slice(0, 6)
LEFT_GRIPPER = 6
RIGHT_ARM = slice(7, 13)
RIGHT_GRIPPER = 13
GRIPPER_INDICES = (LEFT_GRIPPER, RIGHT_GRIPPER)

# Camera roles. Each embodiment maps a role to its simulator camera and ROS topic.
CAMERAS: tuple[str, str, str] = ("cam_high", "cam_left_wrist", "cam_right_wrist")

# LeRobot v3.0 feature keys and frame columns.
STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_KEY_PREFIX = "observation.images."
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")
LEROBOT_CODEBASE_VERSION = "v3.0"


def image_key(camera: str) -> str:
    """LeRobot feature key of a camera, e.g. ``observation.images.cam_high``."""
    return f"{IMAGE_KEY_PREFIX}{camera}"


# Keys of a training clip returned by the dataset reader (see sim.dataset.ClipDataset).
CLIP_FRAMES = "frames"  # dict camera -> (T, H, W, 3) uint8
CLIP_STATE = "state"  # (T, 14) float32
CLIP_ACTION = "action"  # (T, 14) float32
CLIP_INSTRUCTION = "instruction"  # str
CLIP_EPISODE = "episode_index"
CLIP_START = "start_frame"

# RoboTwin seed protocol: episode seeds of evaluation seed s start at 100000 * (1 + s).
ROBOTWIN_SEED_STRIDE = 100_000


def robotwin_start_seed(seed: int) -> int:
    return ROBOTWIN_SEED_STRIDE * (1 + seed)

# world-model image-to-video condition channels at future frames (world_model.model.i2v_condition)
FUTURE_CONDITIONS = ("zeros", "last_history")

# eva-eval-wm methods: the checkpoint, the same architecture untrained, the last history frame repeated,
# and the ground truth through the codec (the floor of any model in that latent space)
WM_EVAL_METHODS = ("model", "untrained", "repeat_last", "codec")
# eva-eval-wm's denoiser diagnostic: a future latent token is "static" when no channel of it differs from the
# newest history latent by more than this (normalised latent units)
STATIC_TOKEN_TOL = 0.05
# eva-eval-wm splits the model-minus-repeat-last PSNR by how still each predicted frame is: repeat-last's own PSNR
# of that frame, in these bands (dB); a frame copying gets at 40 dB or more is one where the arms barely move
STILLNESS_BANDS_DB = (25.0, 30.0, 40.0)

# what the world model's transformer predicts: Wan's velocity ``noise - x_data``; ``residual``, the clean
# future latent minus the newest history latent; or ``gated_residual``, a residual plus a gated skip of the noisy
# input; or ``masked_residual``, a residual plus a change logit per latent position that keeps unchanged positions
# exactly the newest history latent (world_model.model.predicted_residual)
PLANNER_POLICIES = ("planner", "planner_lookahead")  # policy kinds that run real_robot.planner.Planner
SAMPLERS = ("euler", "unipc")  # WorldModelPipeline.denoise: Euler, or UniPC (2nd order)
PREDICTIONS = ("velocity", "residual", "gated_residual", "masked_residual")
FRAME_WEIGHTINGS = ("none", "copy_error")  # eva-train-wm frame_weighting (configs.schema.TrainWMConfig)
PRECISIONS = ("auto", "bf16", "fp32")  # eva-train-idm / eva-train-wm precision (configs/precision.py)
RESIDUAL_PREDICTIONS = ("residual", "gated_residual", "masked_residual")  # zero-initialised output: a fresh model holds the newest frame
MOTION_REFERENCES = ("pretrained", "recorded")  # the executability reward's motion-gate floor
MOTION_MEASURES = ("agreement", "displacement")  # rl_post_train.rewards.motion_reward

# Real2Sim (sim/real2sim.py, eva-campaign): fewer policies than this say nothing about a ranking
MIN_RANKED_POLICIES = 3

# append-only episode records (sim.records) of eva-eval, eva-campaign, eva-mpc and eva-eval-ros, in the output
# directory; the records of one policy (eva-eval, sim_robot_node's results_file) are keyed by task and seed
EPISODES_FILE = "episodes.jsonl"
EPISODE_KEY = ("task", "seed")
