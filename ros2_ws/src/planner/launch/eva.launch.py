"""EVA planner on ROS 2: ``ros2 launch planner eva.launch.py [use_sim:=true] [params_file:=...]``.

- ``params_file``: the nodes' parameters (``/**: ros__parameters:``); default ``config/planner.yaml``
  (CobotMagic), or ``config/sim.yaml`` with ``use_sim:=true``.
- ``use_sim``: also start ``sim_robot_node`` (MuJoCo task behind the robot's topics, ``/clock`` for
  ``use_sim_time``).
- ``loopback_only`` (default true with ``use_sim``, false otherwise): keep all DDS traffic on 127.0.0.1 with
  the project's Fast DDS profile (real_robot/ros_env.py). On the robot the operator's DDS settings apply;
  the nodes refuse to start without a Fast DDS profile either way.
- ``record`` (default false): also start ``recorder_node``, which writes the cameras, follower states and
  commands to ``record_output`` (default ``recordings/eva_<date>_<time>.mcap``, never overwritten; convert it
  with ``eva-mcap-to-lerobot``); ``record_cameras`` (default all of the embodiment's).
"""

import time

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, GroupAction, SetEnvironmentVariable, UnsetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from real_robot.ros_env import UNSET_VARS, loopback_env


def generate_launch_description():
    params_file = LaunchConfiguration("params_file")
    use_sim = LaunchConfiguration("use_sim")
    loopback_only = LaunchConfiguration("loopback_only")
    record = LaunchConfiguration("record")
    default_params = PathJoinSubstitution([
        FindPackageShare("planner"), "config",
        PythonExpression(["'sim.yaml' if '", use_sim, "'.lower() == 'true' else 'planner.yaml'"]),
    ])
    env = loopback_env(base={})  # one random domain id for every node of this launch
    loopback = GroupAction(
        [UnsetEnvironmentVariable(name) for name in UNSET_VARS]
        + [SetEnvironmentVariable(name, value) for name, value in sorted(env.items())],
        condition=IfCondition(loopback_only), scoped=False)
    return LaunchDescription([
        DeclareLaunchArgument("use_sim", default_value="false", description="start sim_robot_node too"),
        DeclareLaunchArgument("params_file", default_value=default_params,
                              description="YAML with /**: ros__parameters: for both nodes"),
        DeclareLaunchArgument("loopback_only", default_value=use_sim,
                              description="apply the loopback-only Fast DDS settings (tests, simulation)"),
        DeclareLaunchArgument("record", default_value="false", description="start recorder_node too"),
        DeclareLaunchArgument("record_output", default_value=time.strftime("recordings/eva_%Y%m%d_%H%M%S.mcap"),
                              description="the recording's .mcap path (never overwritten)"),
        DeclareLaunchArgument("record_cameras", default_value="[cam_high, cam_left_wrist, cam_right_wrist]",
                              description="cameras to record"),
        loopback,
        Node(package="planner", executable="sim_robot_node", name="sim_robot", output="screen",
             parameters=[params_file], condition=IfCondition(use_sim)),
        Node(package="planner", executable="planner_node", name="planner", output="screen",
             parameters=[params_file]),
        Node(package="planner", executable="recorder_node", name="recorder", output="screen",
             parameters=[params_file, {"output": LaunchConfiguration("record_output"),
                                       "cameras": LaunchConfiguration("record_cameras")}],
             condition=IfCondition(record)),
    ])
