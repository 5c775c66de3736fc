"""Thin rclpy adapters around the EVA planner core (``real_robot.planner``) and the MuJoCo tasks."""
