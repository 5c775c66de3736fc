"""MuJoCo tasks: RoboTwin-shaped API, determinism per seed, expert success, IK accuracy."""

from __future__ import annotations

import numpy as np
import pytest

import configs
from configs.constants import ACTION_DIM, CAMERAS, LEFT_ARM, LEFT_GRIPPER, RIGHT_ARM, RIGHT_GRIPPER
from configs.embodiment import load_embodiment
from configs.schema import RenderConfig, TaskConfig
from sim.ik import ArmIK, rotation_error
from sim.tasks import TASKS, make_task

TASK_NAMES = configs.known_tasks()
EXPERT_SEEDS = range(100_000, 100_005)
N_ACTIONS = 20


@pytest.fixture(scope="module")
def envs(embodiment, small_render):
    out = {name: make_task(configs.load_task_config(name), embodiment, small_render) for name in TASK_NAMES}
    yield out
    for env in out.values():
        env.close_env()


def test_registry_matches_task_configs():
    assert sorted(TASKS) == TASK_NAMES
    for name, cls in TASKS.items():
        assert cls.name == name


def run_prefix(env, seed: int, n: int = N_ACTIONS):
    """Reset with ``seed``, record object poses and instruction, execute the expert's first n actions."""
    env.setup_demo(seed=seed)
    poses = {obj: env.object_pos(obj) for obj in env.cfg.randomization}
    instruction = env.get_instruction()
    actions = env.expert_actions()[:n]
    for a in actions:
        env.take_action(a)
    return poses, instruction, env.data.qpos.copy(), actions


@pytest.mark.parametrize("task", TASK_NAMES)
def test_same_seed_is_deterministic(task, envs, embodiment, small_render):
    env = envs[task]
    poses_a, instr_a, qpos_a, actions_a = run_prefix(env, 100_000)
    run_prefix(env, 100_001)  # a different episode in between must leave no trace
    poses_b, instr_b, qpos_b, actions_b = run_prefix(env, 100_000)
    assert env.take_action_cnt == N_ACTIONS
    assert instr_a == instr_b
    for obj in poses_a:
        np.testing.assert_array_equal(poses_a[obj], poses_b[obj])
    np.testing.assert_array_equal(actions_a, actions_b)
    np.testing.assert_array_equal(qpos_a, qpos_b)
    # a fresh instance (new model, new MjData) gives the same episode
    fresh = make_task(configs.load_task_config(task), embodiment, small_render)
    poses_c, instr_c, qpos_c, _ = run_prefix(fresh, 100_000)
    fresh.close_env()
    assert instr_c == instr_a
    for obj in poses_a:
        np.testing.assert_array_equal(poses_a[obj], poses_c[obj])
    np.testing.assert_array_equal(qpos_a, qpos_c)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_different_seeds_move_the_objects(task, envs):
    env = envs[task]
    seen = []
    for seed in (100_000, 100_001, 100_002):
        env.setup_demo(seed=seed)
        seen.append(np.concatenate([env.object_pos(obj) for obj in env.cfg.randomization]))
    assert not np.allclose(seen[0], seen[1]) and not np.allclose(seen[1], seen[2])


@pytest.mark.parametrize("task", TASK_NAMES)
def test_objects_start_inside_their_randomisation_range(task, envs):
    env = envs[task]
    for seed in range(100_000, 100_010):
        env.setup_demo(seed=seed)
        for obj, (x0, x1, y0, y1) in env.cfg.randomization.items():
            x, y, z = env.object_pos(obj)
            assert x0 <= x <= x1 and y0 <= y <= y1 and z > 0, (obj, seed)


@pytest.mark.parametrize("task", TASK_NAMES)
def test_instruction_split(task, envs, embodiment, small_render):
    cfg = configs.load_task_config(task)

    def instructions(env, seeds):
        out = set()
        for s in seeds:
            env.setup_demo(seed=s)
            out.add(env.get_instruction())
        return out

    train = instructions(envs[task], range(100_000, 100_012))
    assert train <= set(cfg.instructions) and len(train) > 1
    env = make_task(cfg, embodiment, small_render, instruction_split="eval")
    assert instructions(env, range(100_000, 100_006)) <= set(cfg.eval_instructions)
    with pytest.raises(ValueError, match="instruction_split"):
        make_task(cfg, embodiment, small_render, instruction_split="test")


@pytest.mark.parametrize("task", TASK_NAMES)
def test_expert_solves_sample_of_seeds(task, envs, embodiment):
    env = envs[task]
    for seed in EXPERT_SEEDS:
        env.setup_demo(seed=seed)
        assert not env.check_success(), f"{task} seed {seed}: solved before any action"
        np.testing.assert_allclose(env.get_qpos(), embodiment.home, atol=1e-9)
        actions = env.play_once()
        assert actions.shape[1] == ACTION_DIM
        assert env.take_action_cnt == len(actions) <= env.cfg.step_limit
        assert np.all(embodiment.within_position_limits(actions))
        assert env.check_success(), f"{task}: expert failed on seed {seed}"


@pytest.mark.parametrize("task", TASK_NAMES)
def test_idle_robot_does_not_succeed(task, envs, embodiment):
    env = envs[task]
    env.setup_demo(seed=100_000)
    for _ in range(50):
        env.take_action(embodiment.home)
    assert not env.check_success()


def test_get_obs_structure(embodiment):
    render = RenderConfig(height=48, width=64, cameras=list(CAMERAS))
    env = make_task(configs.load_task_config("transfer_cube"), embodiment, render)
    env.setup_demo(seed=100_000)
    obs = env.get_obs()
    assert set(obs) == {"observation", "joint_action"}
    assert set(obs["observation"]) == set(CAMERAS)
    images = []
    for cam in CAMERAS:
        rgb = obs["observation"][cam]["rgb"]
        assert isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8
        assert rgb.shape == (48, 64, 3)
        assert rgb.std() > 1.0, f"{cam} renders a flat image"
        images.append(rgb.astype(np.int16))
    assert np.abs(images[0] - images[1]).mean() > 1.0, "two cameras render the same view"
    ja = obs["joint_action"]
    assert set(ja) == {"left_arm", "left_gripper", "right_arm", "right_gripper", "vector"}
    vec = ja["vector"]
    assert vec.shape == (ACTION_DIM,)
    np.testing.assert_array_equal(ja["left_arm"], vec[LEFT_ARM])
    np.testing.assert_array_equal(ja["right_arm"], vec[RIGHT_ARM])
    assert isinstance(ja["left_gripper"], float) and ja["left_gripper"] == vec[LEFT_GRIPPER]
    assert isinstance(ja["right_gripper"], float) and ja["right_gripper"] == vec[RIGHT_GRIPPER]
    np.testing.assert_allclose(vec, embodiment.home, atol=1e-9)  # starts at home, grippers open (1.0)
    # frames change when the robot moves
    for a in env.expert_actions()[:40]:
        env.take_action(a)
    moved = env.get_obs()
    assert not np.allclose(moved["joint_action"]["vector"], vec)
    assert np.abs(moved["observation"]["cam_high"]["rgb"].astype(np.int16) - images[0]).mean() > 0.1
    env.close_env()


def test_take_action_tracks_the_target(envs, embodiment):
    env = envs["lift_bar"]
    env.setup_demo(seed=100_000)
    target = embodiment.home.copy()
    target[LEFT_ARM] += [0.2, -0.1, 0.1, 0.0, 0.1, 0.0]
    target[RIGHT_GRIPPER] = 0.0
    for _ in range(60):
        env.take_action(target)
    q = env.get_qpos()
    np.testing.assert_allclose(q[LEFT_ARM], target[LEFT_ARM], atol=0.05)
    assert q[RIGHT_GRIPPER] < 0.1
    np.testing.assert_allclose(q[RIGHT_ARM], embodiment.home[RIGHT_ARM], atol=0.05)


@pytest.mark.parametrize(
    "action,action_type,match",
    [
        (np.zeros(13), "qpos", "shape"),
        (np.zeros((2, ACTION_DIM)), "qpos", "shape"),
        (np.zeros(15), "qpos", "shape"),
        (np.where(np.arange(ACTION_DIM) == 3, np.nan, 0.0), "qpos", r"non-finite.*\[3\]"),
        (np.full(ACTION_DIM, np.inf), "qpos", "non-finite"),
        (np.zeros(ACTION_DIM), "ee", "action_type"),
        (np.zeros(ACTION_DIM), "delta_qpos", "action_type"),
    ],
)
def test_take_action_rejects_bad_input(envs, action, action_type, match):
    env = envs["transfer_cube"]
    env.setup_demo(seed=100_000)
    before = env.data.qpos.copy()
    with pytest.raises(ValueError, match=match):
        env.take_action(action, action_type=action_type)
    assert env.take_action_cnt == 0
    np.testing.assert_array_equal(env.data.qpos, before)


def test_make_task_unknown_name_lists_known(embodiment):
    cfg = TaskConfig(name="stack_blocks", instructions=["stack"], eval_instructions=["pile"])
    with pytest.raises(ValueError) as err:
        make_task(cfg, embodiment)
    assert "stack_blocks" in str(err.value)
    for name in TASK_NAMES:
        assert name in str(err.value)


def test_make_task_needs_a_simulated_embodiment():
    with pytest.raises(ValueError, match="agilex_piper"):
        make_task(configs.load_task_config("lift_bar"), load_embodiment("agilex_piper"))


# ---------------------------------------------------------------------- IK
@pytest.mark.parametrize("arm", ["left", "right"])
def test_ik_reaches_reachable_pose(envs, embodiment, arm):
    env = envs["transfer_cube"]
    env.setup_demo(seed=100_000)
    sl = LEFT_ARM if arm == "left" else RIGHT_ARM
    idx = env.arms[arm]
    ik = ArmIK(env.model, idx.qpos, idx.dof, idx.tcp_site, embodiment.position_lower[sl],
               embodiment.position_upper[sl])
    before = env.data.qpos.copy()
    rng = np.random.default_rng(0)
    q_home = embodiment.home[sl]
    for _ in range(5):
        q_goal = q_home + rng.uniform(-0.3, 0.3, 6)
        target_pos, target_rot = ik.forward(q_goal)
        q, err = ik.solve(target_pos, target_rot, q_home)
        pos, rot = ik.forward(q)
        assert err < 2e-3
        assert np.linalg.norm(pos - target_pos) == pytest.approx(err)
        assert np.linalg.norm(rotation_error(rot, target_rot)) < 1e-2
        assert np.all(q >= embodiment.position_lower[sl]) and np.all(q <= embodiment.position_upper[sl])
    np.testing.assert_array_equal(env.data.qpos, before)  # the solver works on its own MjData


def test_ik_reports_unreachable_target(envs, embodiment):
    env = envs["transfer_cube"]
    idx = env.arms["left"]
    ik = ArmIK(env.model, idx.qpos, idx.dof, idx.tcp_site, embodiment.position_lower[LEFT_ARM],
               embodiment.position_upper[LEFT_ARM])
    pos, rot = ik.forward(embodiment.home[LEFT_ARM])
    _, err = ik.solve(pos + [0.0, 0.0, 3.0], rot, embodiment.home[LEFT_ARM])  # 3 m above: out of reach
    assert err > 1.0


def test_rotation_error():
    from scipy.spatial.transform import Rotation

    r = Rotation.from_euler("xyz", [0.3, -0.2, 0.5]).as_matrix()
    np.testing.assert_allclose(rotation_error(r, r), 0.0, atol=1e-7)
    for axis_angle in ([0.0, 0.0, 0.4], [0.2, -0.1, 0.3], [0.0, np.pi - 1e-9, 0.0]):
        delta = Rotation.from_rotvec(axis_angle).as_matrix()
        err = rotation_error(r, delta @ r)
        assert np.linalg.norm(err) == pytest.approx(np.linalg.norm(axis_angle), abs=1e-6)
        assert abs(np.dot(err, axis_angle)) == pytest.approx(np.linalg.norm(axis_angle) ** 2, abs=1e-5)


@pytest.mark.parametrize("task", ["transfer_cube", "insertion", "lift_bar"])
def test_expert_respects_velocity_limits_and_keeps_forearm_roll(task, embodiment):
    """Expert joint targets move no faster than the embodiment's velocity limits (the executability
    reward's limits) and never swing the forearm roll (the wrist-singularity failure mode)."""
    env = make_task(configs.load_task_config(task), embodiment, RenderConfig(height=32, width=32, cameras=["cam_high"]))
    for seed in (100000, 100001, 100002):
        env.setup_demo(seed=seed)
        plan = env.expert_actions()
        speed = np.abs(np.diff(plan, axis=0)) / embodiment.dt
        assert np.all(speed <= embodiment.velocity_limit), (seed, speed.max(0))
        np.testing.assert_allclose(plan[:, [3, 10]], 0.0, atol=1e-12)
    env.close_env()


def test_torch_compilers_load_after_a_frame_is_rendered():
    """Mesa's llvmpipe and triton each bring an LLVM: importing diffusers (which loads triton through
    torch._dynamo) after the first GL context used to segfault; the renderer now loads triton first."""
    import subprocess
    import sys

    script = ("import configs; from configs.embodiment import load_embodiment; from configs.schema import RenderConfig;"
              "from sim.tasks import make_task;"
              "env = make_task(configs.load_task_config('lift_bar'), load_embodiment('aloha_viperx'),"
              " RenderConfig(height=32, width=32, cameras=['cam_high'])); env.setup_demo(seed=1); env.render('cam_high');"
              "import diffusers; print('ok')")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]
