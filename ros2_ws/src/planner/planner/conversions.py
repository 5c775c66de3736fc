"""Messages <-> the planner core's arrays, with the checks the robot side needs.

Reading messages (``arm_from_joint_state``, ``image_to_array``) needs no ROS: it lives in
:mod:`real_robot.messages` (recordings are converted with it too) and is re-exported here. Building
messages and the QoS profiles need rclpy and live here.

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
from real_robot.messages import ARM_SLICES, InvalidMessage, arm_from_joint_state, image_to_array  # noqa: F401

# Sensor-data QoS with depth 1: a slow planner must act on the newest input, not a queue of stale ones.
SENSOR_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
COMMAND_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.VOLATILE)
# Episode start and its acknowledgement: the last one reaches a node that joins late (a planner still loading).
EPISODE_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


def stamp_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def seconds_to_stamp(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


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
