"""Every Hydra config composes and validates; bad values fail with the field's name."""

from __future__ import annotations

import dataclasses

import pytest
import yaml
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError

import configs
from configs.constants import ACTION_DIM, CAMERAS, robotwin_start_seed
from configs.embodiment import Embodiment, known_embodiments
from configs.schema import (
    APP_SCHEMAS,
    CollectConfig,
    DatasetConfig,
    EvalConfig,
    EvaluateConfig,
    PolicyConfig,
    RenderConfig,
    TaskConfig,
    validate,
)

CONFIG_DIR = configs.CONFIG_DIR
SCHEMAS = APP_SCHEMAS
PRIMARY = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
TASKS = configs.known_tasks()
EMBODIMENTS = known_embodiments()
EXPECTED_TASKS = ["insertion", "lift_bar", "transfer_cube"]


def compose_valid(name: str, overrides: list[str] | None = None):
    return validate(configs.compose(name, overrides), SCHEMAS[name])


def test_config_inventory():
    """The lists parametrising the tests below are not empty by accident."""
    assert PRIMARY == sorted(SCHEMAS), f"a primary config without a schema test: {PRIMARY}"
    assert {"tiny", "demo"} <= set(EXPERIMENTS)
    assert TASKS == EXPECTED_TASKS
    assert EMBODIMENTS == ["agilex_piper", "aloha_viperx"]


@pytest.mark.parametrize("name", PRIMARY)
def test_primary_config_composes_and_validates(name):
    cfg = compose_valid(name)
    assert isinstance(cfg, SCHEMAS[name])
    if name in ("collect", "evaluate"):
        assert sorted(cfg.tasks) == EXPECTED_TASKS
        for key, task in cfg.tasks.items():
            assert isinstance(task, TaskConfig) and task.name == key
        assert isinstance(cfg.render, RenderConfig) and cfg.render.cameras == list(CAMERAS)
        emb = Embodiment.from_dict(cfg.embodiment, source="composed")
        assert emb.name == "aloha_viperx" and len(emb.joint_names) == ACTION_DIM
    if name == "collect":
        assert isinstance(cfg.dataset, DatasetConfig) and cfg.dataset.episodes_per_task > 0
    if name == "evaluate":
        assert isinstance(cfg.eval, EvalConfig) and isinstance(cfg.policy, PolicyConfig)
        assert cfg.policy.kind == "expert"


@pytest.mark.parametrize("name", PRIMARY)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_preset_composes(name, experiment):
    raw = OmegaConf.load(CONFIG_DIR / "experiment" / f"{experiment}.yaml")
    cfg = compose_valid(name, [f"experiment={experiment}"])
    # the preset's values for this stage arrive in the typed config
    if name == "collect" and "dataset" in raw:
        assert cfg.dataset.episodes_per_task == raw.dataset.episodes_per_task
    if name == "evaluate" and "eval" in raw:
        assert cfg.eval.episodes_per_task == raw.eval.episodes_per_task
        if "save_video" in raw.eval:
            assert cfg.eval.save_video == raw.eval.save_video


def test_tiny_preset_is_small():
    assert compose_valid("collect", ["experiment=tiny"]).dataset.episodes_per_task <= 2
    assert compose_valid("evaluate", ["experiment=tiny"]).eval.episodes_per_task <= 2


@pytest.mark.parametrize("group,option", [("render", "top_only"), ("policy", "noisy_expert")])
def test_group_options_compose(group, option):
    name = "evaluate"
    cfg = compose_valid(name, [f"{group}={option}"])
    raw = yaml.safe_load((CONFIG_DIR / group / f"{option}.yaml").read_text())
    section = dataclasses.asdict(getattr(cfg, group))
    for key, value in raw.items():
        assert section[key] == value


def test_three_camera_idm_preset_composes_into_train_idm():
    cfg = compose_valid("train_idm", ["idm=three_cameras"])
    raw = yaml.safe_load((CONFIG_DIR / "idm" / "three_cameras.yaml").read_text())
    assert dataclasses.asdict(cfg.idm) == raw  # every field of the preset, nothing left at a default


def test_replay_and_import_policies_need_their_argument():
    with pytest.raises(ValueError, match="policy.dataset_root"):
        compose_valid("evaluate", ["policy=replay"])
    cfg = compose_valid("evaluate", ["policy=replay", "policy.dataset_root=/data/x"])
    assert cfg.policy.kind == "replay" and cfg.policy.dataset_root == "/data/x"
    with pytest.raises(ValueError, match="policy.target"):
        compose_valid("evaluate", ["policy=import"])
    cfg = compose_valid("evaluate", ["policy=import", "policy.target=pkg.mod:Cls"])
    assert cfg.policy.target == "pkg.mod:Cls"


def test_task_selection_override():
    cfg = compose_valid("collect", ["task=[lift_bar]"])
    assert list(cfg.tasks) == ["lift_bar"]


@pytest.mark.parametrize("task", TASKS)
def test_task_yaml_loads_and_validates(task):
    cfg = configs.load_task_config(task)
    assert isinstance(cfg, TaskConfig)
    assert cfg.name == task
    assert cfg.step_limit > 0
    assert cfg.instructions and cfg.eval_instructions
    assert not set(cfg.instructions) & set(cfg.eval_instructions)
    assert cfg.randomization, "every task randomises at least one object"
    for obj, (x0, x1, y0, y1) in cfg.randomization.items():
        assert x0 <= x1 and y0 <= y1, obj


@pytest.mark.parametrize("name", EMBODIMENTS)
def test_embodiment_yaml_composes_into_primary_config(name):
    cfg = compose_valid("collect", [f"embodiment={name}"])
    emb = Embodiment.from_dict(cfg.embodiment, source=f"embodiment={name}")
    assert emb.name == name


# ---------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    "name,override,field",
    [
        ("collect", "tasks.insertion.step_limit=-1", "tasks.insertion.step_limit"),
        ("evaluate", "tasks.lift_bar.step_limit=0", "tasks.lift_bar.step_limit"),
        ("collect", "tasks.lift_bar.eval_instructions=[lift the green bar with both arms]", "tasks.lift_bar.eval_instructions"),
        ("collect", "tasks.transfer_cube.instructions=[]", "tasks.transfer_cube.instructions"),
        ("collect", "tasks.transfer_cube.randomization.cube=[0.2,0.0,0.4,0.6]", "tasks.transfer_cube.randomization.cube"),
        ("collect", "render.cameras=[cam_top]", "render.cameras"),
        ("evaluate", "render.cameras=[]", "render.cameras"),
        ("collect", "render.height=0", "render.height"),
        ("collect", "dataset.video_codec=h265", "dataset.video_codec"),
        ("collect", "dataset.video_crf=99", "dataset.video_crf"),
        ("collect", "dataset.episodes_per_task=0", "dataset.episodes_per_task"),
        ("collect", "dataset.max_seed_tries=0", "dataset.max_seed_tries"),
        ("collect", "workers=0", "workers"),
        ("evaluate", "eval.save_video=sometimes", "eval.save_video"),
        ("evaluate", "eval.episodes_per_task=-3", "eval.episodes_per_task"),
        ("evaluate", "policy.kind=oracle", "policy.kind"),
        ("evaluate", ["policy=noisy_expert", "policy.noise_correlation=1.0"], "policy.noise_correlation"),
        ("evaluate", ["policy=noisy_expert", "policy.noise_level=-0.1"], "policy.noise_level"),
        ("train_idm", "idm.patch_sizes=[4,8]", "idm.patch_sizes"),  # one camera, two patch sizes
        ("train_idm", "idm.patch_sizes=[6]", "idm.patch_sizes"),  # 128 is not divisible by 6
        ("train_idm", "precision=fp16", "precision"),
        ("train_wm", "precision=half", "precision"),
        ("evaluate", ["policy=planner", "policy.planner.noise_scale=-1"], "planner.noise_scale"),
        # the sampling fields every sampling config shares (SamplingConfig)
        ("evaluate", ["policy=planner", "policy.planner.init_sigma=0"], "planner.init_sigma"),
        ("mpc", "imagination.init_sigma=1.5", "imagination.init_sigma"),
        ("campaign", "imagination.sampler=ddim", "imagination.sampler"),
        ("eval_wm", "flow_shift=0", "flow_shift"),
        ("grpo", "reward.motion_weight=-1", "reward.motion_weight"),
        ("grpo", "reward.motion_fraction=0", "reward.motion_fraction"),
        ("grpo", "reward.motion_measure=speed", "reward.motion_measure"),
        ("grpo", "val_smoothness_tolerance=1.5", "val_smoothness_tolerance"),
        ("grpo", ["reward=perceptual", "val_smoothness_tolerance=0"], "val_smoothness_tolerance"),
        ("grpo", "reward.video_gate_weight=-1", "reward.video_gate_weight"),
        # a separate video-gate advantage needs per-reward advantages and the gate on
        ("grpo", ["reward.executability.video_motion_fraction=0.5", "reward.video_gate_weight=1"],
         "reward.video_gate_weight"),
        ("grpo", ["reward.combine=advantages", "reward.video_gate_weight=1"], "reward.video_gate_weight"),
    ],
)
def test_bad_value_names_the_field(name, override, field):
    overrides = [override] if isinstance(override, str) else override
    with pytest.raises(ValueError) as err:
        compose_valid(name, overrides)
    assert f"config field '{field}" in str(err.value)


def test_wrongly_typed_value_names_the_field():
    with pytest.raises(ValueError, match="dataset.episodes_per_task"):
        compose_valid("collect", ["dataset.episodes_per_task=many"])


def test_unknown_key_is_an_error():
    with pytest.raises(ConfigKeyError, match="bogus"):
        compose_valid("collect", ["+bogus=1"])
    with pytest.raises(ConfigCompositionException):
        configs.compose("collect", ["dataset.no_such_field=1"])


def test_stage_sections_of_other_apps_are_dropped_but_not_elsewhere():
    """An experiment preset sets eval.* and dataset.*; each app ignores the other's section."""
    cfg = configs.compose("collect", ["+eval.episodes_per_task=3"])
    assert isinstance(validate(cfg, CollectConfig), CollectConfig)
    cfg = configs.compose("evaluate", ["+render.bogus=1"])
    with pytest.raises(ConfigKeyError, match="bogus"):
        validate(cfg, EvaluateConfig)


def test_validate_accepts_plain_dict():
    task = validate({"name": "t", "instructions": ["a"], "eval_instructions": ["b"]}, TaskConfig)
    assert task.step_limit == 400 and task.instructions == ["a"]
    with pytest.raises(ValueError, match=r"tasks\.t\.eval_instructions"):
        validate({"name": "t", "instructions": ["a"], "eval_instructions": ["a"]}, TaskConfig)


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError) as err:
        configs.load_task_config("stack_blocks")
    msg = str(err.value)
    assert "stack_blocks" in msg
    for task in EXPECTED_TASKS:
        assert task in msg


def test_robotwin_seed_protocol():
    assert robotwin_start_seed(0) == 100_000
    assert robotwin_start_seed(2) == 300_000


def test_unknown_group_option_on_the_command_line():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException) as err:
        configs.compose("collect", ["embodiment=franka_panda"])
    for name in EMBODIMENTS:  # Hydra lists the available embodiments
        assert name in str(err.value)
    with pytest.raises(MissingConfigException, match="task/stack_blocks"):
        configs.compose("collect", ["task=[stack_blocks]"])
