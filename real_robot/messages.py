"""ROS 2 messages -> the planner core's arrays, without importing ROS (library code).

The functions read the fields of ``sensor_msgs/JointState`` and ``sensor_msgs/Image`` messages
(any object with those attributes: rclpy messages in the nodes, deserialized recordings in
:mod:`real_robot.recording`). Building messages needs rclpy and lives in the ROS package
(``ros2_ws/src/planner/planner/conversions.py``).

Per arm, the CobotMagic JointState layout: names ``ros.joint_state_names`` of the embodiment
(``joint0..joint6``), ``position[0:6]`` joints in radians, ``position[6]`` gripper opening in metres.
The core's 14-D vector holds the gripper normalised (0 = closed, 1 = open).
"""

from __future__ import annotations

import numpy as np

from configs.constants import JOINTS_PER_ARM
from configs.embodiment import Embodiment

ARM_SLICES = {"left": slice(0, JOINTS_PER_ARM + 1), "right": slice(JOINTS_PER_ARM + 1, 2 * (JOINTS_PER_ARM + 1))}


class InvalidMessage(ValueError):
    """A message that must not reach the planner; the text names what was expected."""


def arm_from_joint_state(msg, embodiment: Embodiment) -> np.ndarray:
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


def image_to_array(msg, shape: tuple[int, int]) -> np.ndarray:
    """HxWx3 uint8 RGB of an ``rgb8`` or ``bgr8`` Image of size ``shape`` (h, w); raises InvalidMessage."""
    h, w = shape
    if msg.encoding not in ("rgb8", "bgr8"):
        raise InvalidMessage(f"encoding '{msg.encoding}', expected 'rgb8' (or 'bgr8')")
    if (msg.height, msg.width) != (h, w):
        raise InvalidMessage(f"size {msg.height}x{msg.width}, expected {h}x{w}")
    if msg.step < 3 * w or len(msg.data) < msg.step * h:
        raise InvalidMessage(f"step {msg.step} and {len(msg.data)} bytes do not hold {h} rows of {3 * w} bytes")
    rows = np.frombuffer(bytes(msg.data), dtype=np.uint8, count=msg.step * h).reshape(h, msg.step)
    frame = rows[:, :3 * w].reshape(h, w, 3)
    if msg.encoding == "bgr8":
        frame = frame[:, :, ::-1]
    return np.ascontiguousarray(frame)
