"""The ROS 2 workspace: the launch file matches the package, colcon builds and installs it, and the
installed ``sim_robot_node`` + ``planner_node`` close the loop over DDS (loopback only) with tiny checkpoints.
The colcon build (``install``) and the nodes' environment (``real_robot.ros_workspace``) are in ``conftest.py``.

Every DDS participant here (the two node processes and this test process) runs with
``real_robot.ros_env.loopback_env`` and a random domain id. Needs the ``ros`` extra (rclpy wheels, colcon);
skipped without it.
"""

from __future__ import annotations

import ast
import configparser
import json
import os
import random
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from configs.schema import SafetyConfig
from real_robot.ros_env import loopback_env
from real_robot.ros_eval import log_tail
from real_robot.ros_workspace import REPO, stop_process, workspace_env
from real_robot.safety import SafetyFilter
from tests.ros2.conftest import udp_sockets

PACKAGE = REPO / "ros2_ws" / "src" / "planner"
LAUNCH = PACKAGE / "launch" / "eva.launch.py"
SIZE = 64
FUTURE = 4


def entry_points() -> set[str]:
    """Console-script names declared in the package's setup.py (read with ast, not executed)."""
    tree = ast.parse((PACKAGE / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return {ast.literal_eval(item).split("=")[0].strip() for item in value.elts}
    raise AssertionError("setup.py declares no console_scripts")


# ------------------------------------------------------------------------------------ static
def test_launch_file_matches_the_package():
    tree = ast.parse(LAUNCH.read_text())
    executables, packages, strings = [], set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "executable":
            executables.append(ast.literal_eval(node.value))
        if isinstance(node, ast.keyword) and node.arg == "package":
            packages.add(ast.literal_eval(node.value))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            strings.append(node.value)
    assert sorted(executables) == ["planner_node", "recorder_node", "sim_robot_node"]
    assert set(executables) <= entry_points()
    assert packages == {"planner"}
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    arguments = [ast.literal_eval(n.args[0]) for n in ast.walk(tree) if isinstance(n, ast.Call)
                 and getattr(n.func, "id", None) == "DeclareLaunchArgument"]
    assert {"params_file", "use_sim", "record", "record_output"} <= set(arguments)
    referenced = {s.strip("'\"") for s in strings for s in s.split() if s.strip("'\"").endswith((".yaml", ".xml"))}
    assert referenced == {"sim.yaml", "planner.yaml"}
    for name in referenced:
        assert (PACKAGE / "config" / name).is_file(), name


def test_package_layout_and_params_files():
    assert (PACKAGE / "resource" / "planner").is_file() and (PACKAGE / "planner" / "__init__.py").is_file()
    assert "<build_type>ament_python</build_type>" in (PACKAGE / "package.xml").read_text()
    cfg = configparser.ConfigParser()
    cfg.read(PACKAGE / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/planner"
    assert cfg["install"]["install_scripts"] == "$base/lib/planner"
    for name in ("planner.yaml", "sim.yaml"):
        params = yaml.safe_load((PACKAGE / "config" / name).read_text())["/**"]["ros__parameters"]
        assert params["embodiment"] == ("aloha_viperx" if name == "sim.yaml" else "agilex_piper")
        assert isinstance(params["flow_shift"], float) and isinstance(params["steps"], int)


# ------------------------------------------------------------------------------------ colcon
def test_colcon_builds_and_installs_the_package(install):
    prefix = install / "planner"
    for rel in ("lib/planner/planner_node", "lib/planner/sim_robot_node", "share/planner/launch/eva.launch.py",
                "share/planner/config/planner.yaml", "share/planner/config/sim.yaml", "share/planner/package.xml",
                "share/ament_index/resource_index/packages/planner"):
        assert (prefix / rel).is_file(), rel
    assert os.access(prefix / "lib/planner/planner_node", os.X_OK)


# ------------------------------------------------------------------------------------ integration
@pytest.fixture(scope="module")
def checkpoints(tiny_world_model, tmp_path_factory):
    from tests.conftest import tiny_idm

    root = tmp_path_factory.mktemp("ros_planner")
    wm = tiny_world_model
    return wm, tiny_idm(root / "idm", size=SIZE)


def test_planner_against_the_sim_robot_over_loopback(install, checkpoints, embodiment, tmp_path, monkeypatch):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool, String

    wm, idm = checkpoints
    domain_id = random.randint(1, 200)
    env = workspace_env(install, domain_id)
    lib, params = install / "planner" / "lib" / "planner", install / "planner" / "share" / "planner" / "config" / "sim.yaml"
    commands = {
        "sim_robot": [str(lib / "sim_robot_node"), "--ros-args", "--params-file", str(params),
                      "-p", f"image_height:={SIZE}", "-p", f"image_width:={SIZE}"],
        "planner": [str(lib / "planner_node"), "--ros-args", "--params-file", str(params),
                    "-p", f"world_model:={wm}", "-p", f"idm:={idm}", "-p", f"num_future_frames:={FUTURE}",
                    "-p", "steps:=2"],
    }
    # This process joins the same domain, loopback only, before rclpy.init().
    for name in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in loopback_env(domain_id).items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)

    procs, logs = {}, {}
    context = rclpy.Context()
    try:
        for name, cmd in commands.items():
            logs[name] = open(tmp_path / f"{name}.log", "w")
            procs[name] = subprocess.Popen(cmd, env=env, stdout=logs[name], stderr=subprocess.STDOUT,
                                           start_new_session=True)
        rclpy.init(context=context)
        node = rclpy.create_node("ros_workspace_test", context=context)
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        received = {"left": [], "right": []}
        diagnostics = []
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        for arm in received:
            node.create_subscription(JointState, embodiment.ros["command_topics"][arm],
                                     lambda msg, a=arm: received[a].append(msg), qos)
        node.create_subscription(String, "/planner/diagnostics", lambda msg: diagnostics.append(json.loads(msg.data)),
                                 10)
        estop = node.create_publisher(Bool, "/planner/estop", 10)

        def spin_for(seconds: float) -> None:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                for name, proc in procs.items():
                    assert proc.poll() is None, (f"{name} exited with {proc.returncode}:\n"
                                                 + log_tail(tmp_path / f"{name}.log", 40))
                executor.spin_once(timeout_sec=0.05)

        deadline = time.monotonic() + 60  # node start-up: torch, MuJoCo, planner warm-up
        while not (received["left"] and received["right"]) and time.monotonic() < deadline:
            spin_for(0.5)
        assert received["left"] and received["right"], "no commands:\n" + "\n".join(
            log_tail(tmp_path / f"{n}.log", 40) for n in procs)
        def moved() -> bool:
            positions = np.stack([m.position for m in received["left"] + received["right"]])
            return np.ptp(positions, axis=0).max() > 1e-4

        # Sim time may run slower than wall time: wait for a finished plan and moving commands, not seconds.
        deadline = time.monotonic() + 60
        while not (diagnostics and diagnostics[-1]["planning_s"]["total"]["count"] >= 1 and moved()) \
                and time.monotonic() < deadline:
            spin_for(0.5)
        check_commands(received, embodiment)
        assert diagnostics and diagnostics[-1]["published"] > 0
        assert diagnostics[-1]["planning_s"]["total"]["count"] >= 1  # the world model and the IDM ran
        assert moved(), "the commands never moved: the e-stop check would be vacuous"
        print("diagnostics before the e-stop:", json.dumps(diagnostics[-1]))
        sockets = udp_sockets([os.getpid()] + [proc.pid for proc in procs.values()])
        assert sockets and all(addr.startswith("127.0.0.1:") for _, addr in sockets), sockets

        for _ in range(3):
            estop.publish(Bool(data=True))
            spin_for(0.1)
        deadline = time.monotonic() + 15  # a plan in flight when the e-stop arrived finishes first
        while not diagnostics[-1]["estopped"] and time.monotonic() < deadline:
            spin_for(0.2)
        assert diagnostics[-1]["estopped"], "the e-stop was not latched"
        # Braking is counted in control ticks, one command each: at most v_max / (a_max * dt) of them at the
        # installed params' scales, however slowly a loaded machine runs the ticks in sim time (a 0.5 s sim-time
        # allowance failed when ticks came every 0.06-0.16 s). After those, every command must be the same hold.
        installed = SafetyFilter(embodiment, SafetyConfig(
            **yaml.safe_load(params.read_text())["/**"]["ros__parameters"]["safety"]))
        brake_ticks = int(np.ceil(np.max(installed.max_velocity / installed.max_velocity_step))) + 2
        seen = {arm: len(msgs) for arm, msgs in received.items()}  # all sent after the latch began

        def held(arm: str) -> list[np.ndarray]:
            return [np.array(m.position) for m in received[arm][seen[arm] + brake_ticks:]]

        deadline = time.monotonic() + 60
        while min(len(held(arm)) for arm in received) < 25 and time.monotonic() < deadline:
            spin_for(0.2)
        for arm in received:
            after = held(arm)
            assert len(after) >= 25, f"{len(after)} commands on {arm} in 60 s after the e-stop"
            np.testing.assert_array_equal(np.ptp(np.stack(after), axis=0), 0.0)
        check_commands(received, embodiment)
        spin_for(1.2)
        assert diagnostics[-1]["estopped"] is True and diagnostics[-1]["holds"].get("estop", 0) > 0
    finally:
        for proc in procs.values():
            stop_process(proc)
        for log in logs.values():
            log.close()
        rclpy.try_shutdown(context=context)


def check_commands(received: dict, embodiment) -> None:
    """Names and counts per arm, position limits, and at most one tick of the velocity limit per message."""
    from configs.constants import JOINTS_PER_ARM

    names = list(embodiment.ros["joint_state_names"])
    for offset, arm in ((0, "left"), (JOINTS_PER_ARM + 1, "right")):
        sl = slice(offset, offset + JOINTS_PER_ARM + 1)
        rows = []
        for msg in received[arm]:
            assert list(msg.name) == names and len(msg.position) == len(names)
            q = np.array(msg.position, dtype=np.float64)
            q[JOINTS_PER_ARM] = embodiment.gripper_from_metres(q[JOINTS_PER_ARM])
            rows.append(q)
        q = np.stack(rows)
        assert np.all(np.isfinite(q))
        assert np.all(q >= embodiment.position_lower[sl] - 1e-6) and np.all(q <= embodiment.position_upper[sl] + 1e-6)
        if len(q) > 1:
            step = np.abs(np.diff(q, axis=0))
            assert np.all(step <= embodiment.velocity_limit[sl] / embodiment.control_rate_hz + 1e-6), step.max(axis=0)


# ------------------------------------------------------------------------------------ node guards
@pytest.mark.parametrize("node", ["planner_node", "recorder_node"])
@pytest.mark.parametrize("profile", [None, "/nonexistent/fastdds.xml"])
def test_nodes_refuse_to_start_without_the_dds_profile(install, tmp_path, node, profile):
    env = workspace_env(install, random.randint(1, 200))
    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        if profile is None:
            env.pop(name)
        else:
            env[name] = profile
    result = subprocess.run([str(install / "planner" / "lib" / "planner" / node), "--ros-args",
                             "-p", f"output:={tmp_path / 'rec.mcap'}"], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "FASTDDS_DEFAULT_PROFILES_FILE" in result.stderr and "refusing to start" in result.stderr
    assert not list(tmp_path.glob("rec.mcap*"))  # the recorder wrote nothing


def test_messages_are_validated_before_they_reach_the_planner(install, embodiment, monkeypatch):
    pytest.importorskip("rclpy")
    site = install / "planner" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    monkeypatch.syspath_prepend(str(site))
    from builtin_interfaces.msg import Time

    from planner.conversions import (InvalidMessage, arm_from_joint_state, array_to_image, image_to_array,
                                     joint_states_from_vector, seconds_to_stamp, stamp_to_seconds)

    assert stamp_to_seconds(seconds_to_stamp(12.34)) == pytest.approx(12.34)
    frame = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
    msg = array_to_image(frame, Time())
    np.testing.assert_array_equal(image_to_array(msg, (SIZE, SIZE)), frame)
    msg.encoding = "bgr8"
    np.testing.assert_array_equal(image_to_array(msg, (SIZE, SIZE)), frame[:, :, ::-1])
    msg.encoding = "mono8"
    with pytest.raises(InvalidMessage, match="expected 'rgb8'"):
        image_to_array(msg, (SIZE, SIZE))
    with pytest.raises(InvalidMessage, match="expected 32x32"):
        image_to_array(array_to_image(frame, Time()), (32, 32))

    states = joint_states_from_vector(embodiment.home, embodiment, Time())
    assert list(states["left"].name) == [f"joint{i}" for i in range(7)]
    assert states["left"].position[6] == pytest.approx(embodiment.gripper_open_m)  # home: gripper open, metres
    np.testing.assert_allclose(arm_from_joint_state(states["right"], embodiment), embodiment.home[7:])
    bad = joint_states_from_vector(embodiment.home, embodiment, Time())["left"]
    bad.name = [f"j{i}" for i in range(7)]
    with pytest.raises(InvalidMessage, match="expected .*joint0"):
        arm_from_joint_state(bad, embodiment)
    short = joint_states_from_vector(embodiment.home, embodiment, Time())["left"]
    short.position = short.position[:6]
    with pytest.raises(InvalidMessage, match="6 positions, expected 7"):
        arm_from_joint_state(short, embodiment)
