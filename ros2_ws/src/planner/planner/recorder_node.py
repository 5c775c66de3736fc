"""``recorder_node``: the robot's topics into an MCAP file, for ``eva-mcap-to-lerobot``.

Thin adapter around :class:`real_robot.recording.McapRecorder`. Subscribes with ``raw=True`` (the
serialized CDR bytes are written as received, nothing is deserialized) to
- the ``ros_topic`` of each camera in ``cameras`` (default: every camera of the embodiment;
  ``sensor_msgs/Image``, sensor-data QoS, depth 1, as ``planner_node``);
- the follower states ``ros.state_topics`` and the leader arms ``ros.command_topics``
  (``sensor_msgs/JointState``, best effort with a deeper queue: 200 Hz joint states must not be dropped
  while an image is being written).

Each message is written with the node clock's receive time as log time and its header stamp (capture
time) as publish time. Parameters: ``embodiment`` (name or YAML path), ``output`` (the ``.mcap`` path;
refuses to overwrite an existing file), ``cameras``. The file grows as ``<output>.part`` and is renamed to
``output`` when the node shuts down (SIGINT, SIGTERM, rclpy shutdown); a ``.part`` file is a recording
that did not finish. Message counts are logged every 5 s.

Refuses to start without a Fast DDS profile (see :func:`real_robot.ros_env.check_loopback_env`).
"""

from __future__ import annotations

from pathlib import Path

from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState

from configs.constants import ARMS, CAMERAS
from configs.embodiment import load_embodiment
from planner.conversions import SENSOR_QOS
from planner.node_runner import run_node
from real_robot.recording import IMAGE_TYPE, JOINT_STATE_TYPE, McapRecorder, cdr_header_stamp_ns

# Best effort (matches reliable and best-effort publishers) with room for bursts of joint states.
JOINT_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)


class RecorderNode(Node):
    def __init__(self):
        super().__init__("recorder")
        embodiment = load_embodiment(self.declare_parameter("embodiment", "agilex_piper").value)
        output = self.declare_parameter("output", "").value
        cameras = list(self.declare_parameter("cameras", list(CAMERAS)).value)
        if not output:
            raise ValueError("parameter 'output' is empty: give the .mcap path to record to (-p output:=...)")
        unknown = [c for c in cameras if c not in embodiment.cameras]
        if unknown:
            raise ValueError(f"parameter 'cameras': unknown {unknown}; {embodiment.name} has "
                             f"{list(embodiment.cameras)}")
        topics = {embodiment.cameras[cam].ros_topic: (Image, IMAGE_TYPE, SENSOR_QOS) for cam in cameras}
        for arm in ARMS:
            for key in ("state_topics", "command_topics"):
                topics[embodiment.ros[key][arm]] = (JointState, JOINT_STATE_TYPE, JOINT_QOS)

        self.recorder = McapRecorder(Path(output), topics={t: type_name for t, (_, type_name, _) in topics.items()})
        for topic, (msg_type, _, qos) in topics.items():
            self.create_subscription(msg_type, topic, lambda data, t=topic: self.on_message(t, data), qos, raw=True)
        self.create_timer(5.0, self.on_status, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"recording {sorted(topics)} of {embodiment.name} to {self.recorder.part_path}")

    def on_message(self, topic: str, data: bytes) -> None:
        received = self.get_clock().now().nanoseconds
        try:
            stamp = cdr_header_stamp_ns(data)
        except ValueError as err:
            self.get_logger().warning(f"{topic}: no header stamp ({err}); publish time = receive time",
                                      throttle_duration_sec=1.0)
            stamp = received
        self.recorder.write(topic, data, received, max(stamp, 0))

    def on_status(self) -> None:
        counts = self.recorder.counts
        self.get_logger().info("messages: " + ", ".join(f"{t} {counts[t]}" for t in sorted(self.recorder.topics)))

    def close(self) -> None:
        self.recorder.close()  # logs the path and the message counts


def main(args: list[str] | None = None) -> None:
    run_node("recorder_node", RecorderNode, args)


if __name__ == "__main__":
    main()
