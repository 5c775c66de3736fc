"""``planner_node``: the EVA planner core (world model + IDM behind the safety filter) on ROS 2.

Thin adapter around :class:`real_robot.planner.Planner`; everything that decides a command lives there.

Topics (names from the embodiment file, CobotMagic by default):
- subscribes the planner camera's ``ros_topic`` (``sensor_msgs/Image``, rgb8 or bgr8, sensor-data QoS,
  depth 1) and the follower states ``ros.state_topics`` (``/puppet/joint_left|right``, ``sensor_msgs/JointState``,
  names ``ros.joint_state_names``, ``position[6]`` gripper in metres);
- publishes ``ros.command_topics`` (``/master/joint_left|right``) once per control tick, only when the
  safety filter returns a position (nothing before the first joint state); with ``asynchronous: true`` (the
  shipped params files) plans run in a background thread, so the tick keeps its rate while one is computed;
- ``~/estop`` (``std_msgs/Bool``): true latches the e-stop (a controlled stop, then hold); false is ignored;
- ``~/reset`` (``std_msgs/Empty``): clears the e-stop latch;
- ``~/start_episode`` (``std_msgs/String``, JSON ``{"instruction": ..., "stamp": ...}``, reliable, transient local):
  a new episode: the planner is reset (history, chunk, plans in flight) with the instruction, inputs stamped
  before ``stamp`` are dropped as the last episode's, and the start is echoed on ``~/episode`` (same QoS);
- ``~/diagnostics`` (``std_msgs/String``, JSON) once per wall-clock second: loop timing, planning latency,
  holds, rejected messages.

Inputs are stamped at capture (message header stamps); a message that fails validation is logged (topic and
expected value) and not fed, so the filter holds on stale input. Time: the node clock, i.e. wall time on the
robot and ``/clock`` with ``use_sim_time:=true`` against ``sim_robot_node``; the control timer runs on the
same clock. The control loop (inputs + tick) is one mutually exclusive callback group; e-stop, reset and
diagnostics run in another, so an e-stop is latched even while a plan is being computed.

Refuses to start without a Fast DDS profile (see :func:`real_robot.ros_env.check_loopback_env`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter, deque

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Empty, String

from configs.constants import ARMS
from configs.embodiment import load_embodiment
from configs.schema import PlannerConfig, SafetyConfig
from planner.conversions import (COMMAND_QOS, EPISODE_QOS, SENSOR_QOS, InvalidMessage, arm_from_joint_state, image_to_array,
                                 joint_states_from_vector, seconds_to_stamp, stamp_to_seconds)
from planner.node_runner import run_node
from real_robot.planner import Planner


def _planner_parameters() -> dict:
    """Parameter name -> default: everything the node reads with declare_parameter."""
    planner, safety = PlannerConfig(), SafetyConfig()
    params = {
        "embodiment": "agilex_piper",
        "instruction": "",
        "control_rate_hz": 0.0,  # 0: the embodiment's
        "warmup": True,
    }
    for f in dataclasses.fields(PlannerConfig):
        if f.name != "safety":
            params[f.name] = getattr(planner, f.name)
    for f in dataclasses.fields(SafetyConfig):
        params[f"safety.{f.name}"] = float(getattr(safety, f.name))
    return params


class PlannerNode(Node):
    def __init__(self):
        super().__init__("planner")
        values = {name: self.declare_parameter(name, default).value
                  for name, default in _planner_parameters().items()}
        embodiment = load_embodiment(values["embodiment"])
        if values["control_rate_hz"] > 0:
            embodiment = dataclasses.replace(embodiment, control_rate_hz=float(values["control_rate_hz"]))
        self.embodiment = embodiment
        safety = SafetyConfig(**{f.name: values[f"safety.{f.name}"] for f in dataclasses.fields(SafetyConfig)})
        cfg = PlannerConfig(**{f.name: values[f.name] for f in dataclasses.fields(PlannerConfig)
                               if f.name != "safety"}, safety=safety)
        self.planner = Planner.from_config(cfg, embodiment)
        self.planner.reset(values["instruction"])
        if values["warmup"]:
            self.planner.warmup()
        self.camera = cfg.camera
        self.image_shape = self.planner.history.shape[:2]
        self.camera_topic = embodiment.cameras[cfg.camera].ros_topic

        self.arm_state: dict[str, tuple[np.ndarray, float]] = {}
        self.rejected: Counter[str] = Counter()
        self.ticks = 0
        self.published = 0
        self.tick_starts: deque[float] = deque(maxlen=500)
        self.tick_durations: deque[float] = deque(maxlen=500)
        self.last_reasons: tuple[str, ...] = ()
        self.not_before = float("-inf")  # inputs stamped earlier belong to the last episode
        self.episodes = 0

        loop = MutuallyExclusiveCallbackGroup()
        safety_group = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, self.camera_topic, self.on_image, SENSOR_QOS, callback_group=loop)
        for arm in ARMS:
            topic = embodiment.ros["state_topics"][arm]
            self.create_subscription(JointState, topic, lambda msg, a=arm, t=topic: self.on_state(a, t, msg),
                                     SENSOR_QOS, callback_group=loop)
        self.command_pubs = {arm: self.create_publisher(JointState, embodiment.ros["command_topics"][arm],
                                                        COMMAND_QOS) for arm in ARMS}
        self.create_subscription(String, "~/start_episode", self.on_start_episode, EPISODE_QOS, callback_group=loop)
        self.episode_pub = self.create_publisher(String, "~/episode", EPISODE_QOS)
        self.create_subscription(Bool, "~/estop", self.on_estop, 10, callback_group=safety_group)
        self.create_subscription(Empty, "~/reset", self.on_reset, 10, callback_group=safety_group)
        self.diagnostics_pub = self.create_publisher(String, "~/diagnostics", 10)
        self.create_timer(embodiment.dt, self.on_tick, callback_group=loop)
        self.create_timer(1.0, self.on_diagnostics, callback_group=safety_group,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f"planner on {embodiment.name} at {embodiment.control_rate_hz} Hz: camera {self.camera_topic} "
            f"({self.image_shape[0]}x{self.image_shape[1]}), states {list(embodiment.ros['state_topics'].values())}, "
            f"commands {list(embodiment.ros['command_topics'].values())}")

    def reject(self, topic: str, err: Exception) -> None:
        self.rejected[topic] += 1
        self.get_logger().warning(f"rejected message on {topic}: {err}; not fed to the planner",
                                  throttle_duration_sec=1.0)

    def on_start_episode(self, msg: String) -> None:
        try:
            data = json.loads(msg.data)
            instruction, stamp = data["instruction"], float(data["stamp"])
            if not isinstance(instruction, str):
                raise TypeError(f"instruction must be a string, got {type(instruction).__name__}")
        except (ValueError, KeyError, TypeError) as err:
            self.reject("~/start_episode", ValueError(f"expected JSON {{'instruction': str, 'stamp': seconds}} ({err})"))
            return
        self.planner.reset(instruction)
        self.arm_state.clear()
        self.not_before = stamp
        self.episodes += 1
        self.get_logger().info(f"episode {self.episodes} from t={stamp:.2f} s: '{instruction}'")
        self.episode_pub.publish(String(data=json.dumps({"instruction": instruction, "stamp": stamp})))

    def on_image(self, msg: Image) -> None:
        if stamp_to_seconds(msg.header.stamp) < self.not_before:
            return
        try:
            frame = image_to_array(msg, self.image_shape)
        except InvalidMessage as err:
            self.reject(self.camera_topic, err)
            return
        try:
            self.planner.observe({self.camera: frame}, stamp_to_seconds(msg.header.stamp))
        except ValueError as err:
            self.reject(self.camera_topic, err)

    def on_state(self, arm: str, topic: str, msg: JointState) -> None:
        if stamp_to_seconds(msg.header.stamp) < self.not_before:
            return
        try:
            self.arm_state[arm] = (arm_from_joint_state(msg, self.embodiment), stamp_to_seconds(msg.header.stamp))
        except InvalidMessage as err:
            self.reject(topic, err)

    def on_estop(self, msg: Bool) -> None:
        if msg.data:
            self.planner.estop()
            self.get_logger().warning("e-stop latched (publish std_msgs/Empty on ~/reset to clear)")
        else:
            self.get_logger().info("e-stop false ignored: the latch is cleared only by ~/reset")

    def on_reset(self, _msg: Empty) -> None:
        self.planner.safety.reset()
        self.get_logger().warning("e-stop cleared")

    def on_tick(self) -> None:
        start = time.perf_counter()
        self.tick_starts.append(start)
        self.ticks += 1
        if set(self.arm_state) != set(ARMS):
            return  # no joint state yet: nothing to command
        now = self.get_clock().now().nanoseconds * 1e-9
        state = np.concatenate([self.arm_state[arm][0] for arm in ARMS])
        state_stamp = min(self.arm_state[arm][1] for arm in ARMS)  # the older arm decides staleness
        command = self.planner.step(state, now, state_stamp=state_stamp)
        self.last_reasons = command.reasons
        if command.position is not None:
            stamp = seconds_to_stamp(now)
            for arm, msg in joint_states_from_vector(command.position, self.embodiment, stamp).items():
                self.command_pubs[arm].publish(msg)
            self.published += 1
        self.tick_durations.append(time.perf_counter() - start)

    def on_diagnostics(self) -> None:
        periods = np.diff(np.array(self.tick_starts)) if len(self.tick_starts) > 1 else np.zeros(0)
        durations = np.array(self.tick_durations)

        def stats(values: np.ndarray) -> dict:
            if not len(values):
                return {"count": 0}
            return {"count": int(len(values)), "mean": float(values.mean()), "p95": float(np.percentile(values, 95)),
                    "max": float(values.max())}

        report = {
            "ticks": self.ticks, "published": self.published, "episodes": self.episodes, "estopped": self.planner.safety.estopped,
            "control_period_s": self.embodiment.dt, "tick_period_s": stats(periods),
            "tick_duration_s": stats(durations), "planning_s": self.planner.latency_summary(),
            "holds": dict(self.planner.safety.stats), "hold_reasons": list(self.last_reasons),
            "rejected": dict(self.rejected),
        }
        self.diagnostics_pub.publish(String(data=json.dumps(report)))

    def close(self) -> None:
        self.planner.close()


def main(args: list[str] | None = None) -> None:
    run_node("planner_node", PlannerNode, args, make_executor=lambda: MultiThreadedExecutor(num_threads=2))


if __name__ == "__main__":
    main()
