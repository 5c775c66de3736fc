"""Messages <-> the planner core's arrays, with the checks the robot side needs.

Per arm, the CobotMagic JointState layout: names ``ros.joint_state_names`` of the embodiment
(``joint0..joint6``), ``position[0:6]`` joints in radians, ``position[6]`` gripper opening in metres.
The core's 14-D vector holds the gripper normalised (0 = closed, 1 = open).
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState

from configs.constants import ARMS, JOINTS_PER_ARM
from configs.embodiment import Embodiment

ARM_SLICES = {"left": slice(0, JOINTS_PER_ARM + 1), "right": slice(JOINTS_PER_ARM + 1, 2 * (JOINTS_PER_ARM + 1))}

# Sensor-data QoS with depth 1: a slow planner must act on the newest input, not a queue of stale ones.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)


class InvalidMessage(ValueError):
    """A message that must not reach the planner; the text names what was expected."""


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def arm_from_joint_state(msg: JointState, embodiment: Embodiment) -> np.ndarray:
    """(7,) arm state [6 joints rad, gripper normalised] of one arm's JointState; raises InvalidMessage."""
    names = list(embodiment.ros["joint_state_names"])
    if list(msg.name) != names:
        raise InvalidMessage(f"joint names {list(msg.name)}, expected {names}")
    position = np.asarray(msg.position, dtype=np.float64)
    if position.shape != (len(names),):
        raise InvalidMessage(f"{position.size} positions, expected {len(names)}")
    if not np.all(np.isfinite(position)):
        raise InvalidMessage(f"non-finite positions at indices {np.nonzero(~np.isfinite(position))[0].tolist()}")
    arm = position.copy()
    arm[JOINTS_PER_ARM] = float(embodiment.gripper_from_metres(position[JOINTS_PER_ARM]))
    return arm


def joint_state_from_arm(arm: np.ndarray, embodiment: Embodiment, stamp: Time) -> JointState:
    """JointState of one arm from its (7,) slice of the 14-D vector (gripper normalised -> metres)."""
    position = np.asarray(arm, dtype=np.float64).copy()
    position[JOINTS_PER_ARM] = float(embodiment.gripper_to_metres(position[JOINTS_PER_ARM]))
    msg = JointState()
    msg.header.stamp = stamp
    msg.name = list(embodiment.ros["joint_state_names"])
    msg.position = position.tolist()
    return msg


def joint_states_from_vector(vector: np.ndarray, embodiment: Embodiment, stamp: Time) -> dict[str, JointState]:
    return {arm: joint_state_from_arm(vector[ARM_SLICES[arm]], embodiment, stamp) for arm in ARMS}


def image_to_array(msg: Image, shape: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 RGB of an ``rgb8`` or ``bgr8`` Image of size ``shape`` (h, w); raises InvalidMessage."""
    h, w = shape
    if msg.encoding not in ("rgb8", "bgr8"):
        raise InvalidMessage(f"encoding '{msg.encoding}', expected 'rgb8' (or 'bgr8')")
    if (msg.height, msg.width) != (h, w):
        raise InvalidMessage(f"size {msg.height}x{msg.width}, expected {h}x{w} (the world model's image size)")
    if msg.step < 3 * w or len(msg.data) < msg.step * h:
        raise InvalidMessage(f"step {msg.step} and {len(msg.data)} bytes do not hold {h} rows of {3 * w} bytes")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8, count=msg.step * h).reshape(h, msg.step)
    frame = rows[:, :3 * w].reshape(h, w, 3)
    if msg.encoding == "bgr8":
        frame = frame[:, :, ::-1]
    return np.ascontiguousarray(frame)


def array_to_image(frame: np.ndarray, stamp: Time, frame_id: str = "") -> Image:
    frame = np.ascontiguousarray(frame, dtype=np.uint8)
    msg = Image()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(frame.shape[0]), int(frame.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = 3 * msg.width
    msg.data = frame.tobytes()
    return msg
