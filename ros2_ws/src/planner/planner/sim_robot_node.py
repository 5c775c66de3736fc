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

Episodes (``task_seeds`` set; ``eva-eval-ros`` drives it): the seeds run one after the other, each until the
task succeeds or ``episode_steps`` control steps (0: the task's step limit), as ``eva-eval`` does in process.
At each start the node resets the task to the seed, stops the physics and ``/clock`` (so the planner, on sim
time, is paused too) and publishes the episode on ``start_topic`` (``std_msgs/String``, JSON: task, seed,
instruction, ``stamp`` = sim time of the start; reliable, transient local). It resumes when the planner echoes
that stamp on ``ack_topic``, so a planner still starting up or finishing the last episode loses nothing.
Commands stamped before the start belong to the last episode and are ignored. Each finished episode is
published on ``~/episode_result`` and appended (synced) to ``results_file``; seeds already there with the same
``settings`` string are skipped, so a killed run resumes. After the last seed the node exits (code 0).

Only embodiments with a simulation model can be used (``aloha_viperx``).
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported (by sim.tasks)
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from rclpy.clock import Clock, ClockType  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rosgraph_msgs.msg import Clock as ClockMsg  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Bool, String  # noqa: E402

import configs  # noqa: E402
from configs.constants import ARMS, EPISODE_KEY  # noqa: E402
from configs.embodiment import load_embodiment  # noqa: E402
from configs.schema import RenderConfig  # noqa: E402
from planner.conversions import (ARM_SLICES, EPISODE_QOS, SENSOR_QOS, InvalidMessage,  # noqa: E402
                                 arm_from_joint_state, array_to_image, joint_states_from_vector, seconds_to_stamp,
                                 stamp_to_seconds)
from planner.node_runner import run_node  # noqa: E402
from sim.records import RecordLog  # noqa: E402


class SimRobotNode(Node):
    def __init__(self):
        super().__init__("sim_robot")
        from sim.tasks import make_task

        name = self.declare_parameter("embodiment", "aloha_viperx").value
        self.task = self.declare_parameter("task", "lift_bar").value
        seed = self.declare_parameter("task_seed", 100000).value
        seeds = list(self.declare_parameter("task_seeds", Parameter.Type.INTEGER_ARRAY).value or [])
        split = self.declare_parameter("instruction_split", "train").value
        episode_steps = self.declare_parameter("episode_steps", 0).value
        results_file = self.declare_parameter("results_file", "").value
        self.settings = self.declare_parameter("settings", "").value
        start_topic = self.declare_parameter("start_topic", "/planner/start_episode").value
        ack_topic = self.declare_parameter("ack_topic", "/planner/episode").value
        cameras = list(self.declare_parameter("render_cameras", ["cam_high"]).value)
        height = self.declare_parameter("image_height", 128).value
        width = self.declare_parameter("image_width", 128).value
        shadows = self.declare_parameter("render_shadows", False).value
        multisample = self.declare_parameter("render_multisample", False).value
        self.camera_every = max(1, int(self.declare_parameter("camera_every", 5).value))
        self.embodiment = load_embodiment(name)
        render = RenderConfig(height=height, width=width, cameras=cameras, shadows=shadows, multisample=multisample)
        self.env = make_task(configs.load_task_config(self.task), self.embodiment, render, split)
        self.episode_limit = int(episode_steps) or self.env.step_lim
        self.steps = 0  # control steps since start: sim time = steps * dt
        self.episode_start_step = 0
        self.awaiting_ack: float | None = None  # sim time of an episode start the planner has not echoed yet
        self.records = None
        if seeds:
            if not results_file:
                raise ValueError("task_seeds needs results_file (where each episode's outcome is appended)")
            self.records = RecordLog(Path(results_file), EPISODE_KEY)
            self.pending = [s for s in seeds if not self.records.done(self.task, s, settings=self.settings)]
            if len(self.pending) < len(seeds):
                self.get_logger().info(f"{len(seeds) - len(self.pending)} of {len(seeds)} seeds already in "
                                       f"{results_file}")
        else:
            self.env.setup_demo(seed=seed)
        self.target = self.env.get_qpos()  # hold the start pose until a command comes

        self.clock_pub = self.create_publisher(ClockMsg, "/clock", SENSOR_QOS)
        self.state_pubs = {arm: self.create_publisher(JointState, self.embodiment.ros["state_topics"][arm], SENSOR_QOS)
                           for arm in ARMS}
        self.image_pubs = {cam: self.create_publisher(Image, self.embodiment.cameras[cam].ros_topic, SENSOR_QOS)
                           for cam in cameras}
        self.success_pub = self.create_publisher(Bool, "~/success", 10)
        for arm in ARMS:
            topic = self.embodiment.ros["command_topics"][arm]
            self.create_subscription(JointState, topic, lambda msg, a=arm, t=topic: self.on_command(a, t, msg), 10)
        if self.records is not None:
            self.start_pub = self.create_publisher(String, start_topic, EPISODE_QOS)
            self.result_pub = self.create_publisher(String, "~/episode_result", 100)
            self.create_subscription(String, ack_topic, self.on_ack, EPISODE_QOS)
        # Wall clock, also with use_sim_time (this node is the source of /clock).
        self.create_timer(self.embodiment.dt, self.on_tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        mode = f"{len(seeds)} episodes of at most {self.episode_limit} steps" if seeds else f"seed {seed}"
        self.get_logger().info(f"sim robot: task {self.task}, {mode}, on {name} at {self.embodiment.control_rate_hz} "
                               f"Hz, cameras {cameras} {height}x{width}")
        if self.records is not None:
            self.start_episode()
        else:
            self.get_logger().info(f"instruction '{self.env.get_instruction()}'")

    @property
    def sim_time(self) -> float:
        return self.steps * self.embodiment.dt

    def start_episode(self) -> None:
        """Reset to the next seed and pause until the planner has taken the episode; exit after the last."""
        if not self.pending:
            self.get_logger().info(f"all episodes of {self.task} done")
            raise SystemExit(0)
        self.seed = self.pending.pop(0)
        self.env.setup_demo(seed=self.seed)
        self.target = self.env.get_qpos()
        self.episode_start_step = self.steps
        self.awaiting_ack = self.sim_time
        self.start_pub.publish(String(data=json.dumps({
            "task": self.task, "seed": self.seed, "instruction": self.env.get_instruction(),
            "stamp": self.awaiting_ack})))

    def on_ack(self, msg: String) -> None:
        try:
            stamp = float(json.loads(msg.data)["stamp"])
        except (ValueError, KeyError, TypeError) as err:
            self.get_logger().warning(f"ignored a malformed episode acknowledgement ({err}): {msg.data!r}")
            return
        if self.awaiting_ack is not None and abs(stamp - self.awaiting_ack) < 1e-6:
            self.awaiting_ack = None
            self.episode_wall = time.monotonic()
            self.publish_observation(cameras=True)  # the episode's first frame and state
            self.get_logger().info(f"{self.task} seed {self.seed}: started; '{self.env.get_instruction()}'")

    def finish_episode(self, success: bool) -> None:
        steps = self.steps - self.episode_start_step
        record = {"task": self.task, "seed": self.seed, "instruction": self.env.get_instruction(),
                  "success": success, "steps": steps, "sim_s": steps * self.embodiment.dt,
                  "wall_s": time.monotonic() - self.episode_wall, "settings": self.settings,
                  "failure_reason": None if success else f"step limit {self.episode_limit} reached"}
        self.records.add(record)
        self.result_pub.publish(String(data=json.dumps(record)))
        self.get_logger().info(f"{self.task} seed {self.seed}: {'success' if success else 'failure'} after {steps} "
                               f"steps ({record['wall_s']:.1f} s wall)")
        self.start_episode()

    def on_command(self, arm: str, topic: str, msg: JointState) -> None:
        if stamp_to_seconds(msg.header.stamp) < self.episode_start_step * self.embodiment.dt:
            return  # commanded during the last episode
        try:
            command = arm_from_joint_state(msg, self.embodiment)
        except InvalidMessage as err:
            self.get_logger().warning(f"rejected command on {topic}: {err}; holding", throttle_duration_sec=1.0)
            return
        sl = ARM_SLICES[arm]
        self.target[sl] = np.clip(command, self.embodiment.position_lower[sl], self.embodiment.position_upper[sl])

    def publish_observation(self, cameras: bool) -> None:
        stamp = seconds_to_stamp(self.sim_time)
        self.clock_pub.publish(ClockMsg(clock=stamp))
        for arm, msg in joint_states_from_vector(self.env.get_qpos(), self.embodiment, stamp).items():
            self.state_pubs[arm].publish(msg)
        if cameras:
            for cam, pub in self.image_pubs.items():
                pub.publish(array_to_image(self.env.render(cam), stamp, frame_id=cam))

    def on_tick(self) -> None:
        if self.awaiting_ack is not None:
            return  # physics and /clock stopped until the planner has taken the new episode
        self.env.take_action(self.target)
        self.steps += 1
        camera_tick = (self.steps - self.episode_start_step) % self.camera_every == 0
        self.publish_observation(cameras=camera_tick)
        success = bool(self.env.check_success()) if (camera_tick or self.records is not None) else False
        if camera_tick:
            self.success_pub.publish(Bool(data=success))
        if self.records is not None and (success or self.steps - self.episode_start_step >= self.episode_limit):
            self.finish_episode(success)

    def close(self) -> None:
        if self.records is not None:
            self.records.close()
        self.env.close_env()


def main(args: list[str] | None = None) -> None:
    run_node("sim_robot_node", SimRobotNode, args)


if __name__ == "__main__":
    main()
