"""MCAP recordings (real_robot/recording.py): the ros2msg schema text, McapRecorder's file handling, and the
conversion of a recording into a LeRobot episode on the control-rate grid. No DDS: messages are serialized
with rclpy in this process. Needs the ``ros`` extra (rclpy wheels, mcap); skipped without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mcap")

from configs.constants import ACTION_KEY, CAMERAS, STATE_KEY  # noqa: E402
from configs.embodiment import load_embodiment  # noqa: E402
from real_robot.recording import (IMAGE_TYPE, JOINT_STATE_TYPE, SCHEMA_SEPARATOR, McapRecorder,  # noqa: E402
                                  cdr_header_stamp_ns, main, mcap_to_lerobot, ros2msg_schema)

EMBODIMENT = "agilex_piper"
SIZE = 32
T0 = 1_000_000_000  # 1 s, in ns
MS = 1_000_000


# ------------------------------------------------------------------------------------ schema
def write_msg(share: Path, type_name: str, text: str) -> None:
    package, name = type_name.split("/")
    path = share / package / "msg" / f"{name}.msg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_schema_text_lists_each_dependency_once_depth_first(tmp_path):
    share = tmp_path / "share"
    write_msg(share, "a/A", "# root\nb/B first\nC second  # same package\nb/B[] again\nint32 X=3\n")
    write_msg(share, "a/C", "b/B inner\nb/D[<=2] bounded\n")
    write_msg(share, "b/B", "string<=8 name\nuint8[4] raw\n")
    write_msg(share, "b/D", "float64 value\n")
    sep = SCHEMA_SEPARATOR
    assert len(sep) == 80 and set(sep) == {"="}
    expected = ("# root\nb/B first\nC second  # same package\nb/B[] again\nint32 X=3\n"
                f"\n{sep}\nMSG: a/C\nb/B inner\nb/D[<=2] bounded\n"
                f"\n{sep}\nMSG: b/B\nstring<=8 name\nuint8[4] raw\n"
                f"\n{sep}\nMSG: b/D\nfloat64 value\n")
    assert ros2msg_schema("a/msg/A", [share]) == expected
    assert ros2msg_schema("a/A", [share]) == expected


def test_missing_message_type_names_the_type_and_the_searched_directories(tmp_path):
    share = tmp_path / "share"
    write_msg(share, "a/A", "b/Missing field\n")
    with pytest.raises(FileNotFoundError, match=r"b/msg/Missing.*" + str(share)):
        ros2msg_schema("a/msg/A", [share])
    with pytest.raises(ValueError, match="expected 'package/msg/Name'"):
        ros2msg_schema("Image", [share])


def test_image_schema_holds_header_and_time():
    if not (Path(sys.prefix) / "share" / "sensor_msgs" / "msg" / "Image.msg").is_file():
        pytest.skip("sensor_msgs is not installed (the ros extra)")
    text = ros2msg_schema(IMAGE_TYPE)
    sections = text.split(f"\n{SCHEMA_SEPARATOR}\n")
    assert sections[0] == (Path(sys.prefix) / "share" / "sensor_msgs" / "msg" / "Image.msg").read_text()
    assert [s.splitlines()[0] for s in sections[1:]] == ["MSG: std_msgs/Header", "MSG: builtin_interfaces/Time"]
    assert "builtin_interfaces/Time stamp" in sections[1] and "int32 sec" in sections[2]
    assert "uint32 nanosec" in sections[2]


# ------------------------------------------------------------------------------------ recordings
def joint_state(stamp_ns: int, position: np.ndarray):
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.name = [f"joint{i}" for i in range(7)]
    msg.position = [float(x) for x in position]
    return msg


def image(stamp_ns: int, rgb: tuple[int, int, int], encoding: str):
    from sensor_msgs.msg import Image

    frame = np.empty((SIZE, SIZE, 3), dtype=np.uint8)
    frame[:] = rgb if encoding == "rgb8" else rgb[::-1]
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    msg.height = msg.width = SIZE
    msg.encoding = encoding
    msg.step = 3 * SIZE
    msg.data = frame.tobytes()
    return msg


def arm_position(stream: int, i: int) -> np.ndarray:
    """Message i of a joint stream: joints distinct per stream and message, gripper in metres (0..0.08)."""
    return np.array([0.01 * i + 0.1 * stream + 0.001 * j for j in range(6)] + [0.08 * (i % 5) / 4])


def camera_color(cam: int, i: int) -> tuple[int, int, int]:
    return (20 + 6 * i, 40 + 70 * cam, 230 - 5 * i)


# (period ms, first stamp ms after T0, number of messages); the last camera starts last, a state stops first
JOINT_STREAMS = {("state_topics", "left"): (5, 0, 240), ("state_topics", "right"): (5, 1, 230),
                 ("command_topics", "left"): (10, 2, 120), ("command_topics", "right"): (10, 3, 120)}
CAMERA_STREAM = (40, 30, 30)  # every camera, 25 Hz


def receive_time(topic: str, stamp: int) -> int:
    """Joint states arrive 2 ms after their stamp, images 6 ms."""
    return stamp + (6 if topic.startswith("/camera") else 2) * MS


def record(path: Path, embodiment, skip_topic: str | None = None) -> list[tuple[str, int, object]]:
    """Write a recording (topics of the embodiment, in receive order); returns (topic, stamp, msg)."""
    from rclpy.serialization import serialize_message

    messages = []
    for s, ((kind, arm), (period, first, n)) in enumerate(JOINT_STREAMS.items()):
        topic = embodiment.ros[kind][arm]
        for i in range(n):
            stamp = T0 + (first + period * i) * MS
            messages.append((topic, stamp, joint_state(stamp, arm_position(s, i))))
    for c, cam in enumerate(CAMERAS):
        period, first, n = CAMERA_STREAM
        first += 3 * c  # the last camera starts at 36 ms
        for i in range(n):
            stamp = T0 + (first + period * i) * MS
            messages.append((embodiment.cameras[cam].ros_topic, stamp,
                             image(stamp, camera_color(c, i), "bgr8" if cam == "cam_left_wrist" else "rgb8")))
    messages.sort(key=lambda m: receive_time(*m[:2]))
    topics = {embodiment.ros[kind][arm]: JOINT_STATE_TYPE for kind, arm in JOINT_STREAMS}
    topics.update({embodiment.cameras[cam].ros_topic: IMAGE_TYPE for cam in CAMERAS})
    topics.pop(skip_topic, None)
    with McapRecorder(path, topics=topics) as rec:
        for topic, stamp, msg in messages:
            if topic == skip_topic:
                continue
            data = serialize_message(msg)
            assert cdr_header_stamp_ns(data) == stamp
            rec.write(topic, data, log_time_ns=receive_time(topic, stamp), publish_time_ns=stamp)
    return messages


def latest_index(period: int, first: int, n: int, tick_ms: np.ndarray) -> np.ndarray:
    index = np.floor((tick_ms - first) / period).astype(int)
    assert np.all(index >= 0) and np.all(index < n)
    return index


def test_recording_converts_to_a_lerobot_episode_on_the_control_grid(tmp_path):
    pytest.importorskip("rclpy")
    from mcap.reader import make_reader

    from sim.dataset import LeRobotDataset

    embodiment = load_embodiment(EMBODIMENT)
    path = tmp_path / "episode.mcap"
    messages = record(path, embodiment)
    assert path.is_file() and not (tmp_path / "episode.mcap.part").exists()
    with open(path, "rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        assert reader.get_header().profile == "ros2"
        assert {c.topic for c in summary.channels.values()} == {m[0] for m in messages}
        assert {s.name: s.encoding for s in summary.schemas.values()} == {JOINT_STATE_TYPE: "ros2msg",
                                                                          IMAGE_TYPE: "ros2msg"}
        assert {c.message_encoding for c in summary.channels.values()} == {"cdr"}
        assert summary.statistics.message_count == len(messages)

    root = tmp_path / "dataset"
    episode = mcap_to_lerobot(path, root, instruction="lift the bar", embodiment=EMBODIMENT)
    assert episode == 0
    ds = LeRobotDataset(root, expected_fps=50, expected_embodiment=EMBODIMENT)
    assert ds.instruction(0) == "lift the bar" and ds.cameras == list(CAMERAS)
    table = ds.episode_table(0)

    # The grid: from the last stream's first message (the last camera, 36 ms) to the earliest last message
    # (the right follower state, 1 + 5 * 229 = 1146 ms), every 20 ms.
    tick_ms = np.arange(36, 1146 + 1, 20)
    assert len(table[STATE_KEY]) == len(tick_ms) == ds.episodes[0]["length"]
    expected = {}
    for s, ((kind, arm), stream) in enumerate(JOINT_STREAMS.items()):
        rows = np.stack([arm_position(s, i) for i in latest_index(*stream, tick_ms)])
        rows[:, 6] = embodiment.gripper_from_metres(rows[:, 6])
        expected[kind, arm] = rows
    state = np.concatenate([expected["state_topics", "left"], expected["state_topics", "right"]], axis=1)
    action = np.concatenate([expected["command_topics", "left"], expected["command_topics", "right"]], axis=1)
    np.testing.assert_allclose(table[STATE_KEY], state, rtol=0, atol=1e-6)
    np.testing.assert_allclose(table[ACTION_KEY], action, rtol=0, atol=1e-6)

    for c, cam in enumerate(CAMERAS):
        period, first, n = CAMERA_STREAM
        index = latest_index(period, first + 3 * c, n, tick_ms)
        colors = ds.episode_video(0, cam).reshape(len(tick_ms), -1, 3).mean(axis=1)
        # h264 moves a solid colour by a few levels; consecutive messages differ by about 8
        candidates = np.array([camera_color(c, i) for i in range(n)], dtype=np.float64)
        decoded = np.linalg.norm(colors[:, None] - candidates[None], axis=-1).argmin(axis=1)
        np.testing.assert_array_equal(decoded, index, err_msg=cam)
        np.testing.assert_allclose(colors, candidates[index], atol=4.0, err_msg=cam)

    # A second recording appends an episode and keeps the first one's instruction.
    second = tmp_path / "second.mcap"
    record(second, embodiment)
    assert mcap_to_lerobot(second, root, instruction="open the box", embodiment=EMBODIMENT,
                           cameras=list(CAMERAS)) == 1
    ds = LeRobotDataset(root)
    assert [ds.instruction(0), ds.instruction(1)] == ["lift the bar", "open the box"]


def test_receive_clock_shifts_the_grid(tmp_path):
    pytest.importorskip("rclpy")
    from sim.dataset import LeRobotDataset

    embodiment = load_embodiment(EMBODIMENT)
    path = tmp_path / "episode.mcap"
    record(path, embodiment)
    mcap_to_lerobot(path, tmp_path / "dataset", instruction="lift", embodiment=EMBODIMENT, clock="log")
    # Receive times: joint states 2 ms after their stamps, images 6 ms.
    tick_ms = np.arange(36 + 6, 1146 + 2 + 1, 20)
    table = LeRobotDataset(tmp_path / "dataset").episode_table(0)
    assert len(table[STATE_KEY]) == len(tick_ms)
    index = latest_index(5, 0 + 2, 240, tick_ms)
    np.testing.assert_allclose(table[STATE_KEY][:, 0], [arm_position(0, i)[0] for i in index], atol=1e-6)


def test_unclosed_recorder_leaves_no_final_file(tmp_path):
    path = tmp_path / "rec.mcap"
    rec = McapRecorder(path, topics={"/puppet/joint_left": JOINT_STATE_TYPE})
    rec.write("/puppet/joint_left", b"\x00\x01\x00\x00" + bytes(8), log_time_ns=1, publish_time_ns=1)
    assert rec.part_path.exists() and not path.exists()
    with pytest.raises(KeyError, match="/camera_f/color/image_raw is not registered"):
        rec.write("/camera_f/color/image_raw", b"", 1, 1)

    failed = tmp_path / "failed.mcap"
    with pytest.raises(RuntimeError, match="boom"):
        with McapRecorder(failed, topics={"/puppet/joint_left": JOINT_STATE_TYPE}):
            raise RuntimeError("boom")
    assert not failed.exists() and (tmp_path / "failed.mcap.part").exists()

    assert rec.close() == path
    assert path.exists() and not rec.part_path.exists()
    with pytest.raises(FileExistsError, match="rec.mcap exists"):
        McapRecorder(path)
    with pytest.raises(FileNotFoundError, match="nosuch_msgs/msg/Thing"):
        McapRecorder(tmp_path / "bad.mcap", topics={"/x": "nosuch_msgs/msg/Thing"})
    assert not list(tmp_path.glob("bad.mcap*"))


def test_recording_without_a_required_topic_is_refused(tmp_path, capsys):
    pytest.importorskip("rclpy")
    embodiment = load_embodiment(EMBODIMENT)
    path = tmp_path / "no_command.mcap"
    record(path, embodiment, skip_topic="/master/joint_right")
    with pytest.raises(ValueError, match=r"no messages on topic /master/joint_right \(ros.command_topics.right"):
        mcap_to_lerobot(path, tmp_path / "dataset", instruction="lift", embodiment=EMBODIMENT)
    with pytest.raises(SystemExit) as exit_info:  # the console script: exit status 2 and the same message
        main([str(path), "--root", str(tmp_path / "dataset"), "--instruction", "lift"])
    assert exit_info.value.code == 2 and "/master/joint_right" in capsys.readouterr().err
    assert not (tmp_path / "dataset").exists()
    # Only the cameras asked for are required.
    path = tmp_path / "no_wrist.mcap"
    record(path, embodiment, skip_topic=embodiment.cameras["cam_right_wrist"].ros_topic)
    with pytest.raises(ValueError, match="/camera_r/color/image_raw"):
        mcap_to_lerobot(path, tmp_path / "dataset", instruction="lift", embodiment=EMBODIMENT)
    mcap_to_lerobot(path, tmp_path / "dataset", instruction="lift", embodiment=EMBODIMENT,
                    cameras=["cam_high", "cam_left_wrist"])
