"""``recorder_node`` over DDS (loopback only): the installed node records what this process publishes on the
robot's topics, closes the MCAP cleanly on SIGINT, and the recording converts to a LeRobot episode.

Every DDS participant here (the node process and this test process) runs with
``real_robot.ros_env.loopback_env`` and a random domain id. Needs the ``ros`` extra; skipped without it.
"""

from __future__ import annotations

import os
import random
import subprocess
import time

import numpy as np
import pytest

from real_robot.ros_env import loopback_env
from real_robot.ros_workspace import stop_process, workspace_env
from tests.ros2.conftest import udp_sockets

EMBODIMENT = "agilex_piper"
CAMERA = "cam_high"
SIZE = 16


def test_recorder_node_records_the_published_topics(install, tmp_path, monkeypatch):
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("mcap")
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image, JointState

    from configs.constants import ARMS
    from configs.embodiment import load_embodiment
    from real_robot.recording import IMAGE_TYPE, JOINT_STATE_TYPE, mcap_to_lerobot
    from sim.dataset import LeRobotDataset

    embodiment = load_embodiment(EMBODIMENT)
    domain_id = random.randint(1, 200)
    output = tmp_path / "rec.mcap"
    cmd = [str(install / "planner" / "lib" / "planner" / "recorder_node"), "--ros-args",
           "-p", f"embodiment:={EMBODIMENT}", "-p", f"output:={output}", "-p", f"cameras:=[{CAMERA}]"]
    # This process joins the same domain, loopback only, before rclpy.init().
    for name in ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in loopback_env(domain_id).items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)

    joint_topics = [embodiment.ros[key][arm] for key in ("state_topics", "command_topics") for arm in ARMS]
    camera_topic = embodiment.cameras[CAMERA].ros_topic
    sent: dict[str, dict[int, object]] = {t: {} for t in [*joint_topics, camera_topic]}
    log = open(tmp_path / "recorder.log", "w")
    proc = subprocess.Popen(cmd, env=workspace_env(install, domain_id), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    context = rclpy.Context()
    try:
        rclpy.init(context=context)
        node = rclpy.create_node("recorder_test", context=context)
        pubs = {t: node.create_publisher(JointState, t, 10) for t in joint_topics}
        pubs[camera_topic] = node.create_publisher(Image, camera_topic, 10)

        def alive() -> None:
            assert proc.poll() is None, f"recorder_node exited with {proc.returncode}:\n{log_text(tmp_path)}"

        deadline = time.monotonic() + 20  # node start-up and discovery
        while not all(p.get_subscription_count() for p in pubs.values()) and time.monotonic() < deadline:
            alive()
            time.sleep(0.1)
        assert all(p.get_subscription_count() for p in pubs.values()), "no subscriber:\n" + log_text(tmp_path)
        sockets = udp_sockets([os.getpid(), proc.pid])
        assert sockets and all(addr.startswith("127.0.0.1:") for _, addr in sockets), sockets

        start = time.time_ns()
        for i in range(75):  # 1.5 s at 50 Hz, an image every other tick
            stamp = start + i * 20_000_000
            for k, topic in enumerate(joint_topics):
                msg = JointState(name=list(embodiment.ros["joint_state_names"]),
                                 position=[0.01 * i + k] * 6 + [0.04])
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                pubs[topic].publish(msg)
                sent[topic][stamp] = msg
            if i % 2 == 0:
                msg = Image(height=SIZE, width=SIZE, encoding="rgb8", step=3 * SIZE,
                            data=np.full((SIZE, SIZE, 3), i, dtype=np.uint8).tobytes())
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
                pubs[camera_topic].publish(msg)
                sent[camera_topic][stamp] = msg
            alive()
            time.sleep(0.02)
        time.sleep(0.3)  # the last messages arrive
        alive()
    finally:
        stop_process(proc)
        log.close()
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 0, log_text(tmp_path)
    assert output.is_file() and not output.with_name("rec.mcap.part").exists(), log_text(tmp_path)

    received: dict[str, list] = {t: [] for t in sent}
    with open(output, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        types = {c.topic: summary.schemas[c.schema_id].name for c in summary.channels.values()}
        assert types == {**{t: JOINT_STATE_TYPE for t in joint_topics}, camera_topic: IMAGE_TYPE}
        for _, channel, message in reader.iter_messages():
            assert message.log_time >= message.publish_time >= start
            received[channel.topic].append(message)
    for topic, messages in received.items():
        assert len(messages) >= len(sent[topic]) // 2, f"{topic}: {len(messages)} of {len(sent[topic])} recorded"
        msg_type = Image if topic == camera_topic else JointState
        for message in messages:  # publish time = the header stamp; the bytes are the message sent
            assert deserialize_message(message.data, msg_type) == sent[topic][message.publish_time]

    root = tmp_path / "dataset"
    mcap_to_lerobot(output, root, instruction="record", embodiment=EMBODIMENT, cameras=[CAMERA])
    assert LeRobotDataset(root).episodes[0]["length"] > 10


def log_text(tmp_path) -> str:
    return (tmp_path / "recorder.log").read_text()[-4000:]
