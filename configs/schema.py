"""Structured (dataclass) configs. Hydra composes the YAML groups beside this file;
``validate(cfg, Schema)`` merges the result onto the dataclass, which type-checks every
field and runs ``__post_init__``, so a bad value fails at start with its field name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from configs.constants import (CAMERAS, FRAME_WEIGHTINGS, FUTURE_CONDITIONS, MIN_RANKED_POLICIES, MOTION_MEASURES,
                               MOTION_REFERENCES, PLANNER_POLICIES, PRECISIONS, PREDICTIONS, RESIDUAL_PREDICTIONS,
                               SAMPLERS, STATIC_TOKEN_TOL, WM_EVAL_METHODS)


def _check(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"config field '{where}': {msg}")


@dataclass
class TaskConfig:
    name: str = MISSING
    step_limit: int = 400  # control steps before an episode is declared failed
    instructions: list[str] = field(default_factory=list)  # training paraphrases
    eval_instructions: list[str] = field(default_factory=list)  # held out for evaluation
    # object -> [x_min, x_max, y_min, y_max] of its initial position on the table (m)
    randomization: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"tasks.{self.name}"
        _check(self.step_limit > 0, f"{where}.step_limit", f"must be positive, got {self.step_limit}")
        _check(len(self.instructions) > 0, f"{where}.instructions", "needs at least one instruction")
        _check(len(self.eval_instructions) > 0, f"{where}.eval_instructions", "needs at least one held-out instruction")
        overlap = set(self.instructions) & set(self.eval_instructions)
        _check(not overlap, f"{where}.eval_instructions", f"must be held out, but overlaps training: {sorted(overlap)}")
        for obj, r in self.randomization.items():
            _check(len(r) == 4 and r[0] <= r[1] and r[2] <= r[3], f"{where}.randomization.{obj}",
                   f"expected [x_min, x_max, y_min, y_max], got {list(r)}")


@dataclass
class RenderConfig:
    height: int = 128
    width: int = 128
    cameras: list[str] = field(default_factory=lambda: list(CAMERAS))
    shadows: bool = False
    multisample: bool = False

    def __post_init__(self) -> None:
        _check(self.height > 0 and self.width > 0, "render.height/width", f"got {self.height}x{self.width}")
        unknown = [c for c in self.cameras if c not in CAMERAS]
        _check(not unknown, "render.cameras", f"unknown {unknown}; known: {list(CAMERAS)}")
        _check(len(self.cameras) > 0, "render.cameras", "needs at least one camera")


@dataclass
class DatasetConfig:
    root: str = "runs/dataset"
    repo_id: str = "eva/sim_aloha"
    episodes_per_task: int = 10
    seed: int = 0  # RoboTwin protocol: episode seeds start at 100000 * (1 + seed)
    max_seed_tries: int = 3  # give up on a task after episodes_per_task * this many seeds
    video_codec: str = "libx264"
    video_crf: int = 18
    chunk_size: int = 1000  # files per chunk-XXX directory (LeRobot v3 default)

    def __post_init__(self) -> None:
        _check(self.episodes_per_task > 0, "dataset.episodes_per_task", f"must be positive, got {self.episodes_per_task}")
        _check(self.max_seed_tries >= 1, "dataset.max_seed_tries", f"must be >= 1, got {self.max_seed_tries}")
        _check(self.video_codec in ("libx264", "libsvtav1", "mpeg4"), "dataset.video_codec",
               f"unsupported '{self.video_codec}'; use libx264, libsvtav1 or mpeg4")
        _check(0 <= self.video_crf <= 51, "dataset.video_crf", f"must be in 0..51, got {self.video_crf}")


@dataclass
class PolicyConfig:
    kind: str = "expert"  # expert | noisy_expert | replay | import | planner | planner_lookahead
    noise_level: float = 0.0  # noisy_expert: std (rad, normalised for grippers) of the perturbation
    noise_correlation: float = 0.9  # noisy_expert: AR(1) coefficient of the perturbation per step
    dataset_root: Optional[str] = None  # replay: dataset whose actions are replayed
    target: Optional[str] = None  # import: "package.module:Class", with reset() and select_action(obs)
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: Optional[str] = None  # label in reports; defaults to kind
    # planner: world model + IDM behind the safety filter (defined in the planner section below);
    # planner_lookahead: the same with the simulator in place of the world model (sim/lookahead.py)
    planner: PlannerConfig = field(default_factory=lambda: PlannerConfig())

    def __post_init__(self) -> None:
        kinds = ("expert", "noisy_expert", "replay", "import", *PLANNER_POLICIES)
        _check(self.kind in kinds, "policy.kind", f"unknown '{self.kind}'; known: {list(kinds)}")
        _check(self.noise_level >= 0, "policy.noise_level", f"must be >= 0, got {self.noise_level}")
        _check(0 <= self.noise_correlation < 1, "policy.noise_correlation", f"must be in [0, 1), got {self.noise_correlation}")
        _check(self.kind != "replay" or bool(self.dataset_root), "policy.dataset_root", "replay needs a dataset root")
        _check(self.kind != "import" or bool(self.target), "policy.target", "import needs 'module:Class'")


@dataclass
class EvalConfig:
    episodes_per_task: int = 10
    seed: int = 0  # RoboTwin protocol: st_seed = 100000 * (1 + seed)
    only_expert_solvable: bool = True  # RoboTwin: keep only seeds the expert solves
    save_video: str = "all"  # all | failed | none
    use_eval_instructions: bool = True

    def __post_init__(self) -> None:
        _check(self.episodes_per_task > 0, "eval.episodes_per_task", f"must be positive, got {self.episodes_per_task}")
        _check(self.save_video in ("all", "failed", "none"), "eval.save_video",
               f"expected all | failed | none, got '{self.save_video}'")


@dataclass
class CollectConfig:
    embodiment: dict[str, Any] = MISSING  # contents of configs/embodiment/<name>.yaml
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    workers: int = 2

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "tasks", "no task selected")
        _check(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")


@dataclass
class EvaluateConfig:
    embodiment: dict[str, Any] = MISSING
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str = "runs/eval"
    workers: int = 2
    video_fps: int = 25  # mp4 playback rate (frames are subsampled from the control rate)

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "tasks", "no task selected")
        _check(self.workers >= 1, "workers", f"must be >= 1, got {self.workers}")


@dataclass
class ReportConfig:
    run_dir: str = "runs/demo"
    title: str = "EVA stack: simulated data and expert evaluation"


# Sections that belong to one stage. An ``experiment=`` preset sets several stages at once
# (dataset size for eva-collect, episodes for eva-eval, ...); each app drops the sections of
# the other stages before validation. Unknown keys anywhere else are still errors.
STAGE_SECTIONS = ("dataset", "eval", "policy")


def validate(cfg: DictConfig | dict, schema: type) -> Any:
    """Merge a composed config onto its dataclass schema and return the typed object."""
    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)
    own = {f.name for f in fields(schema)}
    keep = OmegaConf.masked_copy(cfg, [k for k in cfg if k in own or k not in STAGE_SECTIONS])
    merged = OmegaConf.merge(OmegaConf.structured(schema), keep)
    return OmegaConf.to_object(merged)


# ============================================================================ IDM
@dataclass
class IDMModelConfig:
    """Architecture of ``idm.model.InverseDynamicsModel`` (EVA section 4.1)."""

    cameras: list[str] = field(default_factory=lambda: ["cam_high"])
    context_k: int = 2  # frames t-k .. t+k
    image_size: list[int] = field(default_factory=lambda: [128, 128])
    fps: int = 10  # video frame rate the IDM reads (world-model rate)
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    num_keypoints: int = 64
    mlp_hidden: int = 512
    # stem patch size per camera (keypoint maps at image_size / p); null = 4 for every camera
    patch_sizes: Optional[list[int]] = None

    def __post_init__(self) -> None:
        unknown = [c for c in self.cameras if c not in CAMERAS]
        _check(not unknown and len(self.cameras) > 0, "idm.cameras", f"unknown or empty {self.cameras}; known {list(CAMERAS)}")
        _check(self.context_k >= 0, "idm.context_k", f"must be >= 0, got {self.context_k}")
        _check(len(self.image_size) == 2 and min(self.image_size) >= 8 and all(n % 4 == 0 for n in self.image_size),
               "idm.image_size", f"expected [H, W] >= 8 and divisible by 4, got {list(self.image_size)}")
        _check(self.fps > 0, "idm.fps", f"must be positive, got {self.fps}")
        _check(len(self.channels) >= 2 and min(self.channels) > 0, "idm.channels", f"need >= 2 widths, got {list(self.channels)}")
        _check(self.num_keypoints > 0 and self.mlp_hidden > 0, "idm.num_keypoints/mlp_hidden", "must be positive")
        if self.patch_sizes is not None:
            _check(len(self.patch_sizes) == len(self.cameras) and all(
                p >= 1 and self.image_size[0] % p == 0 and self.image_size[1] % p == 0 for p in self.patch_sizes),
                "idm.patch_sizes", f"expected one patch size per camera {list(self.cameras)}, each dividing "
                f"image_size {list(self.image_size)}, got {list(self.patch_sizes)}")


@dataclass
class TrainIDMConfig:
    embodiment: dict[str, Any] = MISSING
    idm: IDMModelConfig = field(default_factory=IDMModelConfig)
    dataset_root: str = "runs/idm_data/train"
    val_episodes_per_task: int = 2  # the last N episodes of each task are held out for validation
    run_dir: str = "runs/idm"
    max_steps: int = 12000
    max_minutes: float = 15.0  # wall-clock budget; the run checkpoints and stops when it is spent
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    log_every: int = 25
    eval_every: int = 500
    checkpoint_every: int = 500
    val_windows: int = 512  # fixed, seeded validation windows
    seed: int = 0
    # share of training windows per task (normalised over the tasks present), e.g. {insertion: 2, transfer_cube: 1,
    # lift_bar: 1}; null: uniform over all frames (a task's share is its share of the frames)
    task_weights: Optional[dict[str, float]] = None
    ema_decay: float = 0.999  # EMA of the weights (validated and saved as the model); 0 = off
    # "bf16": the convolutional backbone runs under bf16 autocast (keypoints and head stay fp32); faster steps on
    # CPUs with AVX512 or AMX and on GPUs, many times slower on AVX2-only CPUs. "fp32": everything fp32.
    # "auto": bf16 where the hardware has native bf16 kernels, fp32 elsewhere (configs/precision.py).
    precision: str = "auto"

    def __post_init__(self) -> None:
        _check(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}, got '{self.precision}'")
        _check(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        for name in ("max_steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "val_windows"):
            _check(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        _check(self.lr > 0, "lr", f"must be positive, got {self.lr}")
        _check(self.max_minutes > 0, "max_minutes", f"must be positive, got {self.max_minutes}")
        _check(self.val_episodes_per_task >= 1, "val_episodes_per_task", f"must be >= 1, got {self.val_episodes_per_task}")
        bad = {t: w for t, w in (self.task_weights or {}).items() if not w > 0}
        _check(not bad, "task_weights", f"weights must be positive, got {bad}")


@dataclass
class EvalIDMConfig:
    embodiment: dict[str, Any] = MISSING
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    checkpoint: str = "runs/idm/model"
    dataset_root: str = "runs/idm_data/test"  # held-out episodes with ground-truth video
    output_dir: str = "runs/idm_eval"
    max_episodes_per_task: int = 50
    hold_steps: int = 25  # control steps the last decoded action is held before success is judged
    plot_episodes: int = 1  # decoded-vs-true joint plots per task
    ablations: bool = False  # also replay decoded arms + recorded grippers, and the reverse

    def __post_init__(self) -> None:
        _check(self.max_episodes_per_task > 0, "max_episodes_per_task", f"must be positive, got {self.max_episodes_per_task}")
        _check(self.hold_steps >= 0, "hold_steps", f"must be >= 0, got {self.hold_steps}")


# ============================================================================ rewards
PERCEPTUAL_METRICS = ("l1_lpips", "l1", "lpips", "mse", "mae", "psnr", "ssim")  # rl_post_train.rewards


@dataclass
class ExecutabilityRewardConfig:
    """EVA's executability reward (section 4.2, eqs 5-9); see rl_post_train/rewards.py.

    Units: actions in rad (grippers normalised), so acceleration in rad/s^2 and jerk in rad/s^3.
    The Huber thresholds sit near the scripted experts' typical magnitudes at the control rate.
    """

    rate: str = "control"  # control: interpolate to the control rate, then difference | video: at 1/fps
    delta_acc: float = 2.0  # Huber threshold on acceleration (rad/s^2)
    delta_jerk: float = 50.0  # Huber threshold on jerk (rad/s^3)
    lambda_jerk: float = 1.0
    lambda_acc: float = 1.0
    # the limit terms are squared excesses in (rad/s)^2, tiny next to the jerk term at the control rate: at 10 the
    # velocity term was 4e-6 to 3e-5 of the SFT model's mean penalty, too little for GRPO to see; at 1e5 it is 3%
    # to 24% (calibration rollouts / held-out windows; eva-calibrate-reward logs each term's share), and P_0 (the
    # median rollout has no violation) stays the same
    lambda_vel_limit: float = 1.0e5
    lambda_acc_limit: float = 1.0
    gamma: float = 1.0
    calibration_file: Optional[str] = None  # made by eva-calibrate-reward; holds P_0 and the motion floor
    p0_quantile: float = 0.5  # P_0 = this quantile of the pre-trained model's penalties
    # the motion gate's floor is min_speed_fraction times a reference speed (0 = no gate):
    #   pretrained: the pre-trained model's median decoded speed, one floor for all (stored with P_0)
    #   recorded:   the mean speed of the recorded (commanded) actions of the same window, per sample
    motion_reference: str = "pretrained"
    min_speed_fraction: float = 0.25
    # the video gate (0 = off; needs recorded frames): R is scaled down in proportion below the fraction
    #   displacement: the prediction's mean absolute pixel change from the newest history frame must reach this
    #                 fraction of the recorded video's (a flickering texture passes it)
    #   agreement:    the motion agreement of the prediction with the recording (world_model.metrics; 1 = the
    #                 recorded frame-to-frame changes) must reach this value, in (0, 1]
    video_motion_fraction: float = 0.0
    video_motion_measure: str = "displacement"

    def __post_init__(self) -> None:
        _check(self.rate in ("control", "video"), "reward.rate", f"must be 'control' or 'video', got '{self.rate}'")
        for name in ("delta_acc", "delta_jerk", "gamma"):
            _check(getattr(self, name) > 0, f"reward.{name}", f"must be positive, got {getattr(self, name)}")
        for name in ("lambda_jerk", "lambda_acc", "lambda_vel_limit", "lambda_acc_limit", "min_speed_fraction",
                     "video_motion_fraction"):
            _check(getattr(self, name) >= 0, f"reward.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(0 < self.p0_quantile < 1, "reward.p0_quantile", f"must be in (0, 1), got {self.p0_quantile}")
        _check(self.motion_reference in MOTION_REFERENCES, "reward.motion_reference",
               f"must be one of {MOTION_REFERENCES}, got '{self.motion_reference}'")
        _check(self.video_motion_measure in MOTION_MEASURES, "reward.video_motion_measure",
               f"must be one of {MOTION_MEASURES}, got '{self.video_motion_measure}'")
        _check(self.video_motion_measure != "agreement" or self.video_motion_fraction <= 1, "reward.video_motion_fraction",
               f"an agreement is at most 1; got {self.video_motion_fraction} with video_motion_measure=agreement")


# ============================================================================ world model
@dataclass
class SamplingConfig:
    """How a world-model rollout is sampled (``WorldModelPipeline.denoise``). The base of every config that
    samples: eva-eval-wm, the planner and the neural simulator (imagination); their YAML keeps the fields flat."""

    steps: int = 10  # denoising steps
    sampler: str = "euler"  # euler | unipc
    flow_shift: float = 3.0
    noise_scale: float = 1.0  # initial noise scale (a sampling temperature; 1 = the trained prior)
    init_sigma: float = 1.0  # where sampling starts: 1 pure noise; < 1 the newest history frame noised to it

    def check_sampling(self, where: str = "") -> None:
        _check(self.steps > 0, f"{where}steps", f"must be positive, got {self.steps}")
        _check(self.sampler in SAMPLERS, f"{where}sampler", f"must be one of {list(SAMPLERS)}, got '{self.sampler}'")
        _check(self.flow_shift > 0, f"{where}flow_shift", f"must be positive, got {self.flow_shift}")
        _check(self.noise_scale >= 0, f"{where}noise_scale", f"must be >= 0, got {self.noise_scale}")
        _check(0 < self.init_sigma <= 1, f"{where}init_sigma", f"must be in (0, 1], got {self.init_sigma}")

    def sampling_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``WorldModelPipeline.denoise``/``rollout``."""
        return {"steps": self.steps, "sampler": self.sampler, "flow_shift": self.flow_shift,
                "noise_scale": self.noise_scale, "init_sigma": self.init_sigma}


@dataclass
class WorldModelConfig:
    """A named world-model configuration (``configs/world_model/<name>.yaml``); see world_model/build.py."""

    name: str = MISSING
    transformer: dict[str, Any] = field(default_factory=dict)  # WanTransformer3DModel arguments
    codec: dict[str, Any] = field(default_factory=dict)  # {type: patch|wan_vae, ...its arguments}
    text_encoder: dict[str, Any] = field(default_factory=dict)  # {type: tiny_umt5|umt5_xxl, ...}
    action_hidden_dim: int = 256
    num_history_frames: int = 4  # EVA conditions on the last 4 camera frames
    max_text_length: int = 16
    image_size: list[int] = field(default_factory=lambda: [128, 128])
    fps: int = 10
    flow_shift: float = 3.0
    future_condition: str = "zeros"  # image-to-video condition channels at future frames: zeros|last_history
    prediction: str = "velocity"  # the transformer's output: one of PREDICTIONS (world_model/model.py); Wan: velocity
    hold_detail: bool = False  # PCA PatchCodec: what its span leaves out is held from the newest history frame
    skip_sigma_data: float = 1.0  # gated_residual: the residual scale its skip gain assumes (small: low noise only)
    change_threshold: float = 0.0  # masked_residual: a position changes where its logit exceeds this (sampling)

    def __post_init__(self) -> None:
        where = f"world_model ({self.name})"
        _check(not self.hold_detail or (self.codec.get("type") == "patch" and self.codec.get("components")),
               f"{where}.hold_detail", "needs a PatchCodec with 'components' (a linear projection); the codec is "
               f"{dict(self.codec)}")
        _check(self.codec.get("type") in ("patch", "wan_vae"), f"{where}.codec.type",
               f"expected 'patch' or 'wan_vae', got {self.codec.get('type')!r}")
        _check(self.skip_sigma_data > 0, f"{where}.skip_sigma_data", f"expected > 0, got {self.skip_sigma_data}")
        _check(self.prediction in PREDICTIONS, f"{where}.prediction",
               f"expected one of {PREDICTIONS}, got {self.prediction!r}")
        _check(self.future_condition in FUTURE_CONDITIONS, f"{where}.future_condition",
               f"expected one of {FUTURE_CONDITIONS}, got {self.future_condition!r}")
        _check(self.text_encoder.get("type") in ("tiny_umt5", "umt5_xxl"), f"{where}.text_encoder.type",
               f"expected 'tiny_umt5' or 'umt5_xxl', got {self.text_encoder.get('type')!r}")
        _check(tuple(self.transformer.get("patch_size", (1, 2, 2)))[0] == 1, f"{where}.transformer.patch_size",
               "the temporal patch must be 1 (one noise level per latent frame)")
        _check(self.num_history_frames > 0, f"{where}.num_history_frames", f"must be positive, got {self.num_history_frames}")
        _check(len(self.image_size) == 2 and min(self.image_size) > 0, f"{where}.image_size", f"got {self.image_size}")
        _check(self.fps > 0 and self.max_text_length > 0 and self.action_hidden_dim > 0, where,
               "fps, max_text_length and action_hidden_dim must be positive")


@dataclass
class TrainWMConfig:
    embodiment: dict[str, Any] = MISSING
    tasks: dict[str, TaskConfig] = field(default_factory=dict)  # their instructions make the tiny vocabulary
    world_model: WorldModelConfig = MISSING
    init_from: Optional[str] = None  # a saved WorldModelPipeline to fine-tune; None builds world_model from scratch
    dataset_root: str = "runs/wm_data/train"
    camera: str = "cam_high"
    num_future_frames: int = 8
    val_episodes_per_task: int = 2
    run_dir: str = "runs/wm"
    finetune: str = "full"  # full | lora (peft on DESIGN.md's target modules; the action encoder always trains)
    lora_rank: int = 32
    lora_alpha: float = 32.0
    # fp32 | bf16 (autocast; the loss and the optimiser stay fp32) | auto: bf16 where native (configs/precision.py)
    precision: str = "auto"
    gradient_checkpointing: bool = False
    ema_decay: float = 0.0  # 0 = no EMA; the final model takes the EMA weights when on
    noise_schedule: str = "history"  # history: a random number of clean leading frames | independent: per frame
    history_noise: float = 0.0  # history frames get sigma ~ U(0, history_noise) (0 = clean, as at sampling)
    # predicted frames' sigmas are drawn up to this level only: set it to the sampler's init_sigma so that no
    # training goes to levels a warm-started sampler never visits (1 = the whole range)
    max_sigma: float = 1.0
    # masked_residual models: a latent position counts as changed when some channel moves more than change_tol
    # (normalised latent units) from the newest history latent; its logit's cross-entropy weighs change_loss_weight
    change_tol: float = STATIC_TOKEN_TOL
    change_loss_weight: float = 0.1
    # residual models: "copy_error" weighs each predicted frame's squared error (and change cross-entropy) by
    # (1 + frame_weight_floor) / (e + frame_weight_floor), e that frame's copying error (mean squared change of its
    # latents from the newest history latent): the gradient of the frame's log error, as per-frame PSNR averages it,
    # so a frame where little moves counts as much as one where the arm sweeps ("none": plain squared error)
    frame_weighting: str = "none"
    frame_weight_floor: float = 0.01
    action_dropout: float = 0.5  # fraction of samples trained without actions (visual-planner mode)
    max_steps: int = 2000
    max_minutes: float = 20.0
    batch_size: int = 16  # global batch, split over processes under torchrun
    lr: float = 3.0e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    log_every: int = 25
    eval_every: int = 250
    checkpoint_every: int = 250
    val_windows: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.finetune in ("full", "lora"), "finetune", f"must be 'full' or 'lora', got '{self.finetune}'")
        _check(self.precision in PRECISIONS, "precision", f"must be one of {PRECISIONS}, got '{self.precision}'")
        _check(self.noise_schedule in ("history", "independent"), "noise_schedule",
               f"must be 'history' or 'independent', got '{self.noise_schedule}'")
        _check(0 <= self.action_dropout <= 1, "action_dropout", f"must be in [0, 1], got {self.action_dropout}")
        _check(0 <= self.ema_decay < 1, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        _check(0 <= self.history_noise < 1, "history_noise", f"must be in [0, 1), got {self.history_noise}")
        _check(0 < self.max_sigma <= 1, "max_sigma", f"must be in (0, 1], got {self.max_sigma}")
        _check(self.change_tol >= 0, "change_tol", f"must be >= 0, got {self.change_tol}")
        _check(self.change_loss_weight >= 0, "change_loss_weight", f"must be >= 0, got {self.change_loss_weight}")
        _check(self.frame_weighting in FRAME_WEIGHTINGS, "frame_weighting",
               f"must be one of {FRAME_WEIGHTINGS}, got '{self.frame_weighting}'")
        _check(self.frame_weight_floor > 0, "frame_weight_floor", f"must be > 0, got {self.frame_weight_floor}")
        prediction = getattr(self.world_model, "prediction", "velocity")  # MISSING until the preset is composed
        _check(self.frame_weighting == "none" or prediction in RESIDUAL_PREDICTIONS, "frame_weighting",
               f"'{self.frame_weighting}' weighs residual predictions, but world_model.prediction is '{prediction}'")
        _check(self.camera in CAMERAS, "camera", f"unknown '{self.camera}'; known {list(CAMERAS)}")
        for name in ("max_steps", "batch_size", "log_every", "eval_every", "checkpoint_every", "val_windows",
                     "num_future_frames", "lora_rank"):
            _check(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        _check(self.lr > 0 and self.max_minutes > 0, "lr/max_minutes", "must be positive")


@dataclass
class EvalWMConfig(SamplingConfig):
    embodiment: dict[str, Any] = MISSING
    tasks: dict[str, TaskConfig] = field(default_factory=dict)  # for the MuJoCo execution of imagined episodes
    checkpoint: str = "runs/wm/model"
    dataset_root: str = "runs/idm_data/test"  # held-out episodes
    output_dir: str = "runs/wm_eval"
    camera: str = "cam_high"
    num_future_frames: int = 8
    num_windows: int = 64  # seeded windows over all held-out episodes
    batch_size: int = 8
    steps: int = 20  # sampling (SamplingConfig): UniPC 20 steps by default
    sampler: str = "unipc"
    num_videos: int = 4  # mp4 grids (ground truth | the methods, in order)
    seed: int = 0
    methods: list[str] = field(default_factory=lambda: list(WM_EVAL_METHODS))  # model is required
    change_threshold: Optional[float] = None  # masked_residual models: overrides the checkpoint's change_threshold
    # noise levels of the denoiser diagnostic (clean-latent error of one model call on the true noisy future)
    diagnostic_sigmas: list[float] = field(default_factory=lambda: [0.02, 0.1, 0.3, 0.6, 0.9, 1.0])
    # executability of IDM-decoded planner rollouts (EVA): needs an IDM; the reward itself needs P_0
    idm_checkpoint: Optional[str] = None
    reward: ExecutabilityRewardConfig = field(default_factory=ExecutabilityRewardConfig)
    # imagined whole episodes, decoded and executed open loop in MuJoCo (0 = skip; needs idm_checkpoint)
    episodes_per_task: int = 0
    hold_steps: int = 25

    def __post_init__(self) -> None:
        self.check_sampling()
        for name in ("num_future_frames", "num_windows", "batch_size"):
            _check(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        _check(self.episodes_per_task >= 0 and self.hold_steps >= 0, "episodes_per_task/hold_steps", "must be >= 0")
        _check(all(0 < s <= 1 for s in self.diagnostic_sigmas), "diagnostic_sigmas",
               f"noise levels must be in (0, 1], got {list(self.diagnostic_sigmas)}")
        _check("model" in self.methods and set(self.methods) <= set(WM_EVAL_METHODS), "methods",
               f"must include 'model' and only {list(WM_EVAL_METHODS)}, got {list(self.methods)}")
        _check(self.episodes_per_task == 0 or self.idm_checkpoint is not None, "episodes_per_task",
               "executing imagined episodes needs idm_checkpoint")


# ============================================================================ post-training
@dataclass
class RewardConfig:
    """Which verifiable reward GRPO optimises (``configs/reward/*.yaml``); see rl_post_train/rewards.py."""

    name: str = "executability"  # executability (EVA; instruction-only rollouts) | perceptual (RLVR-World; actions given)
    executability: ExecutabilityRewardConfig = field(default_factory=ExecutabilityRewardConfig)
    perceptual_metric: str = "l1_lpips"  # l1_lpips | l1 | lpips | mse | mae | psnr | ssim
    perceptual_weight: float = 0.0  # with name=executability: add this much perceptual reward (needs ground truth)
    repetition_weight: float = 0.0  # RLVR-World's repetition penalty
    # pixel motion as a reward of its own (rl_post_train.rewards.motion_reward; needs ground truth), added with
    # this weight. agreement: the overlap of the predicted and recorded frame-to-frame changes (1 = the same
    # changes); displacement: min(1, the prediction's change from the newest history frame / (motion_fraction
    # x the recorded video's)), which a flickering texture games
    motion_weight: float = 0.0
    motion_measure: str = "agreement"
    motion_fraction: float = 0.5
    combine: str = "sum"  # sum: weighted sum of rewards, then advantages | advantages: per-reward advantages, summed
    # with combine=advantages and the executability reward's video gate on: > 0 gives the video gate its own group
    # advantage with this weight, and the executability advantage becomes that of the reward before the video gate
    # (smoothness x motion gate); 0: the gate multiplies the reward (one advantage). The logged and validated reward
    # is the product either way
    video_gate_weight: float = 0.0

    @property
    def mode(self) -> str:
        """Rollout mode: the planner sees the instruction only, the simulator also the recorded actions."""
        return "planner" if self.name == "executability" else "simulator"

    def __post_init__(self) -> None:
        _check(self.name in ("executability", "perceptual"), "reward.name",
               f"must be 'executability' or 'perceptual', got '{self.name}'")
        _check(self.perceptual_metric in PERCEPTUAL_METRICS, "reward.perceptual_metric",
               f"unknown '{self.perceptual_metric}'; known {list(PERCEPTUAL_METRICS)}")
        _check(self.combine in ("sum", "advantages"), "reward.combine", f"must be 'sum' or 'advantages', got '{self.combine}'")
        for name in ("perceptual_weight", "repetition_weight", "motion_weight", "video_gate_weight"):
            _check(getattr(self, name) >= 0, f"reward.{name}", f"must be >= 0, got {getattr(self, name)}")
        _check(self.motion_fraction > 0, "reward.motion_fraction", f"must be positive, got {self.motion_fraction}")
        _check(self.motion_measure in MOTION_MEASURES, "reward.motion_measure",
               f"must be one of {MOTION_MEASURES}, got '{self.motion_measure}'")
        if self.video_gate_weight > 0:
            _check(self.name == "executability" and self.combine == "advantages"
                   and self.executability.video_motion_fraction > 0, "reward.video_gate_weight",
                   f"{self.video_gate_weight} separates the executability reward's video gate into its own advantage, "
                   f"which needs reward.name=executability (got '{self.name}'), reward.combine=advantages (got "
                   f"'{self.combine}') and reward.executability.video_motion_fraction > 0 "
                   f"(got {self.executability.video_motion_fraction})")


@dataclass
class GRPOConfig:
    embodiment: dict[str, Any] = MISSING
    reward: RewardConfig = field(default_factory=RewardConfig)
    checkpoint: str = "runs/wm/model"  # the SFT world model; LoRA adapters are trained on its transformer
    idm_checkpoint: str = "runs/idm/model"  # decoder for the executability reward
    dataset_root: str = "runs/idm_data/train"  # prompts: history windows + instructions (+ actions, ground truth)
    camera: str = "cam_high"
    run_dir: str = "runs/grpo"
    num_future_frames: int = 8
    steps: int = 10  # denoising steps of the training rollouts (Flow-GRPO: 10)
    flow_shift: float = 3.0
    noise_level: float = 0.7  # a of the SDE noise scale
    group_size: int = 8  # G rollouts per prompt (EVA: 8)
    prompts_per_step: int = 2  # prompts per iteration; their G rollouts each form the global batch
    updates_per_step: int = 2  # optimiser steps per iteration (the batch split into this many mini-batches)
    micro_batch: int = 8  # samples per forward/backward; accumulation = mini-batch per process / micro_batch
    train_timesteps: str = "all"  # all | fraction | early | window (rl_post_train.grpo.choose_train_steps)
    train_fraction: float = 0.5
    early_steps: int = 4
    sde_window: list[int] = field(default_factory=lambda: [0, 4])
    clip_range: float = 1e-3
    adv_clip: float = 5.0
    kl_beta: float = 0.01
    # log the PPO and KL terms' gradient norms and their cosine (grad_norm/policy, grad_norm/kl): one more
    # backward of the PPO term per trained step, so off by default
    log_grad_split: bool = False
    lora_rank: int = 32
    lora_alpha: float = 32.0
    lr: float = 3e-4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_steps: int = 200
    max_minutes: float = 30.0
    log_every: int = 1
    checkpoint_every: int = 5
    video_every: int = 10  # mp4 of a group's rollouts every N iterations (0 = never)
    # checkpoint selection on validation rollouts (EVA appendix, "Reward Hacking"; rl_post_train.train.Selection):
    # every val_every iterations (0 = off: the model is the last iteration's) score ODE rollouts of val_windows
    # fixed windows of the last val_episodes_per_task episodes of each task, held out of the prompts; the model
    # is the best-rewarded checkpoint whose LPIPS is at most (1 + val_lpips_tolerance) x the start's and whose
    # motion agreement is at least (1 - val_agreement_tolerance) x the start's; with val_smoothness_tolerance set
    # (executability reward only; null = off), also whose mean smoothness (1 + P/P_0)^-gamma, the reward before its
    # motion gates, is at least (1 - val_smoothness_tolerance) x the start's: the gates may not buy reward with jerk
    val_every: int = 0
    val_episodes_per_task: int = 2
    val_windows: int = 16
    val_lpips_tolerance: float = 0.05
    val_agreement_tolerance: float = 0.1
    val_smoothness_tolerance: Optional[float] = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check(self.val_every >= 0, "val_every", f"must be >= 0 (0 = no selection), got {self.val_every}")
        _check(self.val_episodes_per_task >= 1 and self.val_windows >= 1, "val_episodes_per_task/val_windows",
               f"must be >= 1, got {self.val_episodes_per_task} / {self.val_windows}")
        _check(self.val_lpips_tolerance >= 0 and 0 <= self.val_agreement_tolerance <= 1,
               "val_lpips_tolerance/val_agreement_tolerance",
               f"expected >= 0 and in [0, 1], got {self.val_lpips_tolerance} / {self.val_agreement_tolerance}")
        if self.val_smoothness_tolerance is not None:
            _check(0 <= self.val_smoothness_tolerance <= 1, "val_smoothness_tolerance",
                   f"expected null (off) or in [0, 1], got {self.val_smoothness_tolerance}")
            _check(self.reward.name == "executability", "val_smoothness_tolerance",
                   f"gates on the executability reward's smoothness, but reward.name is '{self.reward.name}'")
        _check(self.train_timesteps in ("all", "fraction", "early", "window"), "train_timesteps",
               f"must be all, fraction, early or window, got '{self.train_timesteps}'")
        _check(0 < self.train_fraction <= 1, "train_fraction", f"must be in (0, 1], got {self.train_fraction}")
        _check(0 < self.early_steps <= self.steps, "early_steps", f"must be in [1, steps={self.steps}], got {self.early_steps}")
        _check(len(self.sde_window) == 2 and 0 <= self.sde_window[0] < self.sde_window[1] <= self.steps,
               "sde_window", f"expected [start, end) inside [0, steps={self.steps}], got {list(self.sde_window)}")
        _check(self.group_size >= 2, "group_size", f"needs at least 2 rollouts per prompt, got {self.group_size}")
        _check(self.noise_level > 0, "noise_level", f"must be positive (the policy needs noise), got {self.noise_level}")
        _check(self.camera in CAMERAS, "camera", f"unknown '{self.camera}'; known {list(CAMERAS)}")
        for name in ("steps", "prompts_per_step", "updates_per_step", "micro_batch", "max_steps", "log_every",
                     "checkpoint_every", "lora_rank", "num_future_frames"):
            _check(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        _check(self.clip_range > 0 and self.adv_clip > 0 and self.lr > 0 and self.max_minutes > 0,
               "clip_range/adv_clip/lr/max_minutes", "must be positive")
        _check(self.kl_beta >= 0, "kl_beta", f"must be >= 0, got {self.kl_beta}")

    def batch_arithmetic(self, world_size: int) -> dict[str, int]:
        """Samples per iteration, per process, per mini-batch and the accumulation; refused unless all divide."""
        total = self.prompts_per_step * self.group_size
        if self.prompts_per_step % world_size:
            raise ValueError(f"batch arithmetic: prompts_per_step={self.prompts_per_step} does not divide over "
                             f"{world_size} processes (each process owns whole groups of group_size={self.group_size})")
        per_rank = total // world_size
        if per_rank % self.updates_per_step:
            raise ValueError(f"batch arithmetic: {per_rank} samples per process (prompts_per_step={self.prompts_per_step}"
                             f" x group_size={self.group_size} / {world_size} processes) do not split into "
                             f"updates_per_step={self.updates_per_step} mini-batches")
        per_update = per_rank // self.updates_per_step
        if per_update % self.micro_batch:
            raise ValueError(f"batch arithmetic: a mini-batch of {per_update} samples per process does not split into "
                             f"micro_batch={self.micro_batch} (try a divisor of {per_update})")
        return {"samples_per_step": total, "samples_per_process": per_rank, "samples_per_update": per_update * world_size,
                "micro_batch": self.micro_batch, "accumulation": per_update // self.micro_batch}


@dataclass
class CalibrateRewardConfig:
    embodiment: dict[str, Any] = MISSING
    reward: RewardConfig = field(default_factory=RewardConfig)
    checkpoint: str = "runs/wm/model"  # the pre-trained (SFT) world model
    idm_checkpoint: str = "runs/idm/model"
    dataset_root: str = "runs/idm_data/train"
    camera: str = "cam_high"
    output: str = "runs/grpo/executability_calibration.json"
    num_prompts: int = 64
    num_future_frames: int = 8
    steps: int = 10
    flow_shift: float = 3.0
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_prompts", "num_future_frames", "steps", "batch_size"):
            _check(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")


@dataclass
class GRPOExperimentConfig:
    """eva-grpo-experiment: calibrate, GRPO per reward, evaluate before/after, report."""

    embodiment: dict[str, Any] = MISSING
    checkpoint: str = "runs/wm/model"
    idm_checkpoint: str = "runs/idm/model"
    train_dataset: str = "runs/idm_data/train"
    test_dataset: str = "runs/idm_data/test"
    output_dir: str = "runs/grpo_experiment"
    rewards: list[str] = field(default_factory=lambda: ["executability", "perceptual"])
    episodes_per_task: int = 50  # imagined episodes executed in MuJoCo per task, before and after
    # executability reward settings (ExecutabilityRewardConfig fields, e.g. motion_reference=recorded), the same
    # in the calibration, the GRPO run and both evaluations
    executability_overrides: list[str] = field(default_factory=list)
    calibrate_overrides: list[str] = field(default_factory=list)  # extra overrides of each stage
    grpo_overrides: list[str] = field(default_factory=list)
    eval_overrides: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = {f.name for f in fields(ExecutabilityRewardConfig)}
        bad = [o for o in self.executability_overrides if o.split("=", 1)[0] not in names or "=" not in o]
        _check(not bad, "executability_overrides", f"{bad}: expected <field>=<value> with a field of {sorted(names)}")
        bad = [r for r in self.rewards if r not in ("executability", "perceptual")]
        _check(not bad and len(self.rewards) > 0, "rewards", f"expected executability and/or perceptual, got {list(self.rewards)}")
        _check(self.episodes_per_task >= 0, "episodes_per_task", f"must be >= 0, got {self.episodes_per_task}")



@dataclass
class GRPOCompareConfig:
    """eva-grpo-compare: eva-grpo-experiment runs side by side, seeds of one setting pooled."""

    # output_dir of each eva-grpo-experiment run; the default is eva-grpo-experiment's own
    experiments: list[str] = field(default_factory=lambda: ["runs/grpo_experiment"])
    reward: str = "executability"  # whose GRPO run to read: eval_<reward>/
    output: str = "runs/grpo_compare"  # compare.md and compare.png
    min_reward_gain: float = 0.20  # target: relative gain of the held-out executability reward
    max_lpips_rise: float = 0.05  # target: largest relative rise of LPIPS vs ground truth, either mode

    def __post_init__(self) -> None:
        _check(len(self.experiments) > 0, "experiments",
               "expected a list of eva-grpo-experiment output directories, e.g. 'experiments=[runs/a,runs/b]'")
        _check(self.reward in ("executability", "perceptual"), "reward",
               f"must be executability or perceptual, got '{self.reward}'")
        _check(self.max_lpips_rise >= 0, "max_lpips_rise", f"must be >= 0, got {self.max_lpips_rise}")

# ============================================================================ planner
@dataclass
class SafetyConfig:
    """Settings of real_robot.safety.SafetyFilter, the last guard between the planner and the arms."""

    velocity_scale: float = 1.0  # fraction of the embodiment's velocity limits, in (0, 1]
    acceleration_scale: float = 1.0  # fraction of the embodiment's acceleration limits, in (0, 1]
    max_frame_age_s: float = 0.5  # hold when any camera frame is older than this
    max_state_age_s: float = 0.1  # hold when the joint state is older than this
    position_margin: float = 0.0  # rad kept away from the arm joints' position limits

    def __post_init__(self) -> None:
        for name in ("velocity_scale", "acceleration_scale"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"config field 'safety.{name}': must be in (0, 1], got {value}")
        for name in ("max_frame_age_s", "max_state_age_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0.0):
                raise ValueError(f"config field 'safety.{name}': must be positive and finite, got {value}")
        if not (math.isfinite(self.position_margin) and self.position_margin >= 0.0):
            raise ValueError(f"config field 'safety.position_margin': must be >= 0 and finite, got {self.position_margin}")


@dataclass
class PlannerConfig(SamplingConfig):
    """The receding-horizon planner (EVA section 5); see real_robot/planner.py. Sampling: ``SamplingConfig``."""

    world_model: str = "runs/wm/model"  # a saved WorldModelPipeline (LoRA adapters included when present)
    idm: str = "runs/idm/model"
    camera: str = "cam_high"  # the camera the world model and the IDM see
    num_future_frames: int = 8  # imagined frames per plan (at the world model's frame rate)
    replan_every: int = 0  # control steps executed before replanning; 0 = the whole imagined chunk (EVA)
    seed: int = 0  # plan i of an episode uses seed + i
    device: str = "cpu"  # torch device of both models, e.g. cuda:0
    # plan in a background thread while the current chunk keeps executing (the ROS node: commands at the control
    # rate during planning); false: plan inside step(), for simulations that wait for the planner
    asynchronous: bool = False
    safety: SafetyConfig = field(default_factory=SafetyConfig)  # the filter every target goes through

    def __post_init__(self) -> None:
        _check(self.camera in CAMERAS, "planner.camera", f"unknown '{self.camera}'; known {list(CAMERAS)}")
        self.check_sampling("planner.")
        _check(self.num_future_frames > 0, "planner.num_future_frames", f"must be positive, got {self.num_future_frames}")
        _check(self.replan_every >= 0, "planner.replan_every", f"must be >= 0, got {self.replan_every}")
        _check(self.device == "cpu" or self.device.startswith("cuda"), "planner.device",
               f"expected 'cpu' or 'cuda[:N]', got '{self.device}'")


# ============================================================================ Real2Sim
@dataclass
class JudgeModelConfig:
    """Architecture of ``sim.judge.SuccessJudge``."""

    camera: str = "cam_high"
    fps: int = 10  # frame rate of the frames it judges (the world model's)
    channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    num_keypoints: int = 32
    hidden: int = 256

    def __post_init__(self) -> None:
        _check(self.camera in CAMERAS, "judge.camera", f"unknown '{self.camera}'; known {list(CAMERAS)}")
        _check(self.fps > 0, "judge.fps", f"must be positive, got {self.fps}")
        _check(len(self.channels) >= 2 and min(self.channels) > 0, "judge.channels", f"need >= 2 widths, got {list(self.channels)}")
        _check(self.num_keypoints > 0 and self.hidden > 0, "judge.num_keypoints/hidden", "must be positive")


def _check_decision(threshold: float, consecutive: int) -> None:
    _check(0 < threshold < 1, "threshold", f"must be in (0, 1), got {threshold}")
    _check(consecutive >= 1, "consecutive", f"must be >= 1, got {consecutive}")


@dataclass
class TrainJudgeConfig:
    """eva-train-judge: the success judge of Real2Sim campaigns (sim/train_judge.py)."""

    embodiment: dict[str, Any] = MISSING
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    judge: JudgeModelConfig = field(default_factory=JudgeModelConfig)
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.01, 0.02, 0.04, 0.08])  # noisy expert: both outcomes
    noise_correlation: float = 0.9
    episodes_per_level: int = 6  # per task and noise level, training split
    val_episodes_per_level: int = 3  # held out (the next RoboTwin seed block)
    seed: int = 3  # training seeds from 100000 * (1 + seed), held out from 100000 * (2 + seed)
    run_dir: str = "runs/judge"
    max_steps: int = 3000
    max_minutes: float = 4.0
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    augment: bool = True  # blur and pixel noise, for imagined frames
    threshold: float = 0.5  # episode decision used in the held-out report
    consecutive: int = 2
    workers: int = 2

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "tasks", "no task selected")
        _check(self.judge.camera in self.render.cameras, "judge.camera",
               f"'{self.judge.camera}' is not rendered; render.cameras = {list(self.render.cameras)}")
        _check(len(self.noise_levels) > 0 and min(self.noise_levels) >= 0, "noise_levels",
               f"need >= 1 non-negative level, got {list(self.noise_levels)}")
        _check(0 <= self.noise_correlation < 1, "noise_correlation", f"must be in [0, 1), got {self.noise_correlation}")
        for name in ("episodes_per_level", "val_episodes_per_level", "max_steps", "batch_size", "workers"):
            _check(getattr(self, name) > 0, name, f"must be positive, got {getattr(self, name)}")
        _check(self.lr > 0 and self.max_minutes > 0, "lr/max_minutes", "must be positive")
        _check_decision(self.threshold, self.consecutive)


@dataclass
class ImaginationConfig(SamplingConfig):
    """How the neural simulator samples (sim/neural_env.py); sampling fields: ``SamplingConfig``."""

    chunk_frames: int = 8  # imagined frames per world-model call
    batch_size: int = 16  # episodes imagined together
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.check_sampling("imagination.")
        _check(self.chunk_frames > 0 and self.batch_size > 0, "imagination.chunk_frames/batch_size", "must be positive")


@dataclass
class EvalRosConfig:
    """eva-eval-ros: the planner in closed loop through ROS 2 (planner_node against sim_robot_node, two processes
    over loopback DDS) on the seeds of eva-eval's protocol (real_robot/ros_eval.py)."""

    embodiment: dict[str, Any] = MISSING
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    policy: PolicyConfig = field(default_factory=lambda: PolicyConfig(kind="planner"))
    eval: EvalConfig = field(default_factory=EvalConfig)
    install: str = "ros2_ws/install"  # colcon install base of ros2_ws; built there when the package is missing
    params_file: Optional[str] = None  # the nodes' params file; default: the installed config/sim.yaml
    reference: Optional[str] = None  # eval_info.json of an in-process eva-eval: its seeds, and a comparison
    episode_timeout_s: float = 600.0  # wall-clock seconds an episode (node start-up included) may take
    output_dir: str = "runs/eval_ros"

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "tasks", "no task selected")
        _check(self.policy.kind == "planner", "policy.kind", f"eva-eval-ros runs the planner node, got '{self.policy.kind}'")
        _check(self.policy.planner.camera in self.render.cameras, "render.cameras",
               f"the planner camera '{self.policy.planner.camera}' is not rendered: {list(self.render.cameras)}")
        _check(self.episode_timeout_s > 0, "episode_timeout_s", f"must be positive, got {self.episode_timeout_s}")


@dataclass
class CampaignConfig:
    """eva-campaign: policies x tasks x episodes in MuJoCo and in each world model (sim/campaign.py)."""

    embodiment: dict[str, Any] = MISSING
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    policies: list[PolicyConfig] = field(default_factory=list)
    world_models: list[str] = field(default_factory=lambda: ["sft:runs/wm/model"])  # "label:checkpoint"
    judge: str = "runs/judge/model"
    threshold: float = 0.5  # judged success: `consecutive` frames with P(success) >= threshold
    consecutive: int = 2
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig)
    episodes_per_task: int = 20
    seed: int = 2  # RoboTwin seed block 100000 * (1 + seed): held out from collection (0, 1) and the judge (3, 4)
    only_expert_solvable: bool = True
    output_dir: str = "runs/campaign"
    workers: int = 2

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "tasks", "no task selected")
        _check(len(self.policies) >= MIN_RANKED_POLICIES, "policies",
               f"a ranking correlation needs at least 3 policies, got {len(self.policies)}")
        labels = [p.name or p.kind for p in self.policies]
        _check(len(set(labels)) == len(labels), "policies", f"labels must be unique (set policies[i].name), got {labels}")
        _check(len(self.world_models) > 0, "world_models", "needs at least one 'label:checkpoint'")
        for entry in self.world_models:
            label, _, path = entry.partition(":")
            _check(bool(label) and bool(path) and label != "mujoco", "world_models",
                   f"expected 'label:checkpoint' with a label other than 'mujoco', got '{entry}'")
        labels = [e.partition(":")[0] for e in self.world_models]
        _check(len(set(labels)) == len(labels), "world_models", f"labels must be unique, got {labels}")
        _check(self.episodes_per_task > 0 and self.workers > 0, "episodes_per_task/workers", "must be positive")
        _check_decision(self.threshold, self.consecutive)

    @property
    def world_model_paths(self) -> dict[str, str]:
        """label -> checkpoint, in the configured order."""
        return dict(e.partition(":")[::2] for e in self.world_models)


MPC_CONTROLLERS = ("base", "random_shooting", "cem", "mppi")


@dataclass
class MPCConfig:
    """eva-mpc: model-predictive control with the action-conditioned world model (sim/mpc.py)."""

    embodiment: dict[str, Any] = MISSING
    tasks: dict[str, TaskConfig] = field(default_factory=dict)
    render: RenderConfig = field(default_factory=RenderConfig)
    checkpoint: str = "runs/wm/model"  # the action-conditioned world model
    judge: str = "runs/judge/model"  # cost=judge only
    base_policy: PolicyConfig = field(default_factory=PolicyConfig)  # proposes the chunk MPC refines
    controllers: list[str] = field(default_factory=lambda: list(MPC_CONTROLLERS))
    cost: str = "goal"  # goal: distance to a goal image; judge: -max P(success) over the imagined chunk
    goal: str = "subgoal"  # subgoal: the expert demonstration's frame at the end of the horizon; final: its last
    goal_metric: str = "latent"  # latent: MSE of the world model's latents; lpips
    candidates: int = 16  # per world-model call (one batch, the history encoded once)
    iterations: int = 3  # CEM iterations; random shooting draws candidates x iterations at once (same budget)
    elites: int = 4
    noise_std: float = 0.1  # rad, at every imagined frame (linear in between); grippers scaled by 1/pi
    min_std: float = 0.01
    temperature: float = 0.1  # MPPI: softmin temperature as a fraction of the round's cost range
    imagination: ImaginationConfig = field(default_factory=ImaginationConfig)
    episodes_per_task: int = 10
    seed: int = 2  # RoboTwin seed block (held out from collection)
    output_dir: str = "runs/mpc"

    def __post_init__(self) -> None:
        _check(len(self.tasks) > 0, "tasks", "no task selected")
        bad = [c for c in self.controllers if c not in MPC_CONTROLLERS]
        _check(not bad and len(self.controllers) > 0, "controllers", f"expected some of {list(MPC_CONTROLLERS)}, got {list(self.controllers)}")
        _check(self.cost in ("goal", "judge"), "cost", f"expected goal or judge, got '{self.cost}'")
        _check(self.goal in ("subgoal", "final"), "goal", f"expected subgoal or final, got '{self.goal}'")
        _check(self.goal_metric in ("latent", "lpips"), "goal_metric", f"expected latent or lpips, got '{self.goal_metric}'")
        _check(self.candidates >= 2 and self.iterations >= 1, "candidates/iterations", "need >= 2 candidates and >= 1 iteration")
        _check(1 <= self.elites < self.candidates, "elites", f"must be in [1, candidates), got {self.elites}")
        _check(self.noise_std > 0 and 0 < self.min_std <= self.noise_std, "noise_std/min_std", "need 0 < min_std <= noise_std")
        _check(self.temperature > 0, "temperature", f"must be positive, got {self.temperature}")
        _check(self.base_policy.kind in ("expert", "noisy_expert", "replay", "import"), "base_policy.kind",
               f"'{self.base_policy.kind}' cannot propose chunks; use expert, noisy_expert, replay or import")
        _check(self.episodes_per_task > 0, "episodes_per_task", f"must be positive, got {self.episodes_per_task}")


# Primary config (configs/<name>.yaml) -> the schema its app validates against.
APP_SCHEMAS: dict[str, type] = {
    "collect": CollectConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
    "train_idm": TrainIDMConfig,
    "eval_idm": EvalIDMConfig,
    "train_wm": TrainWMConfig,
    "eval_wm": EvalWMConfig,
    "grpo": GRPOConfig,
    "calibrate_reward": CalibrateRewardConfig,
    "grpo_experiment": GRPOExperimentConfig,
    "grpo_compare": GRPOCompareConfig,
    "train_judge": TrainJudgeConfig,
    "campaign": CampaignConfig,
    "mpc": MPCConfig,
    "eval_ros": EvalRosConfig,
}
