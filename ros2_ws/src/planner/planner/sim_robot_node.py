"""``sim_robot_node``: a MuJoCo task behind the robot's topics, so ``planner_node`` runs unchanged against it.

- publishes the cameras ``render_cameras`` on their ``ros_topic`` (``sensor_msgs/Image`` rgb8, every
  ``camera_every`` control ticks), the follower states ``ros.state_topics`` (``sensor_msgs/JointState``,
  ``joint0..joint6``, gripper in metres) every tick, ``/clock`` every tick, and the task's success on
  ``~/success`` (``std_msgs/Bool``);
- subscribes ``ros.command_topics``; each tick applies the latest command of each arm (the last one, or the
  start pose, when none came) and steps the physics one control period.

Timing: a wall-clock timer at the control rate drives the simulation, and every message is stamped with
sim time (control steps x dt), which ``/clock`` also carries. Against the robot the planner is not lock-
stepped either: while it computes a plan, the world moves on and its inputs age; a wall-clock simulator
keeps that behaviour (and exercises the safety filter's stale-input holds) while sim time keeps the stamps
exact. When the machine is too slow for real time, ticks stretch and sim time simply runs slower than
wall time; the planner follows it through ``use_sim_time:=true``. A lock-step design (the sim waiting for
each command) would make runs reproducible but would hide latency, the very thing this node is for.

Only embodiments with a simulation model can be used (``aloha_viperx``).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported (by sim.tasks)
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np  # noqa: E402
from rclpy.clock import Clock, ClockType  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rosgraph_msgs.msg import Clock as ClockMsg  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

import configs  # noqa: E402
from configs.constants import ARMS  # noqa: E402
from configs.embodiment import load_embodiment  # noqa: E402
from configs.schema import RenderConfig  # noqa: E402
from planner.conversions import (ARM_SLICES, SENSOR_QOS, InvalidMessage, arm_from_joint_state,  # noqa: E402
                                 array_to_image, joint_states_from_vector, seconds_to_stamp)
from planner.node_runner import run_node  # noqa: E402


class SimRobotNode(Node):
    def __init__(self):
        super().__init__("sim_robot")
        from sim.tasks import make_task

        name = self.declare_parameter("embodiment", "aloha_viperx").value
        task = self.declare_parameter("task", "lift_bar").value
        seed = self.declare_parameter("task_seed", 100000).value
        cameras = list(self.declare_parameter("render_cameras", ["cam_high"]).value)
        height = self.declare_parameter("image_height", 128).value
        width = self.declare_parameter("image_width", 128).value
        self.camera_every = max(1, int(self.declare_parameter("camera_every", 5).value))
        self.embodiment = load_embodiment(name)
        self.env = make_task(configs.load_task_config(task), self.embodiment,
                             RenderConfig(height=height, width=width, cameras=cameras))
        self.env.setup_demo(seed=seed)
        self.target = self.env.get_qpos()  # hold the start pose until a command comes
        self.steps = 0

        self.clock_pub = self.create_publisher(ClockMsg, "/clock", SENSOR_QOS)
        self.state_pubs = {arm: self.create_publisher(JointState, self.embodiment.ros["state_topics"][arm], SENSOR_QOS)
                           for arm in ARMS}
        self.image_pubs = {cam: self.create_publisher(Image, self.embodiment.cameras[cam].ros_topic, SENSOR_QOS)
                           for cam in cameras}
        self.success_pub = self.create_publisher(Bool, "~/success", 10)
        for arm in ARMS:
            topic = self.embodiment.ros["command_topics"][arm]
            self.create_subscription(JointState, topic, lambda msg, a=arm, t=topic: self.on_command(a, t, msg), 10)
        # Wall clock, also with use_sim_time (this node is the source of /clock).
        self.create_timer(self.embodiment.dt, self.on_tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(f"sim robot: task {task} seed {seed} on {name} at {self.embodiment.control_rate_hz} Hz, "
                               f"cameras {cameras} {height}x{width}; instruction '{self.env.get_instruction()}'")

    def on_command(self, arm: str, topic: str, msg: JointState) -> None:
        try:
            command = arm_from_joint_state(msg, self.embodiment)
        except InvalidMessage as err:
            self.get_logger().warning(f"rejected command on {topic}: {err}; holding", throttle_duration_sec=1.0)
            return
        sl = ARM_SLICES[arm]
        self.target[sl] = np.clip(command, self.embodiment.position_lower[sl], self.embodiment.position_upper[sl])

    def on_tick(self) -> None:
        self.env.take_action(self.target)
        self.steps += 1
        stamp = seconds_to_stamp(self.steps * self.embodiment.dt)
        self.clock_pub.publish(ClockMsg(clock=stamp))
        for arm, msg in joint_states_from_vector(self.env.get_qpos(), self.embodiment, stamp).items():
            self.state_pubs[arm].publish(msg)
        if self.steps % self.camera_every == 0:
            for cam, pub in self.image_pubs.items():
                pub.publish(array_to_image(self.env.render(cam), stamp, frame_id=cam))
            self.success_pub.publish(Bool(data=bool(self.env.check_success())))

    def close(self) -> None:
        self.env.close_env()


def main(args: list[str] | None = None) -> None:
    run_node("sim_robot_node", SimRobotNode, args)


if __name__ == "__main__":
    main()
