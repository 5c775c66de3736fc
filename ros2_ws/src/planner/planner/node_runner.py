"""The one ``main`` of every node: loopback check, rclpy set-up, spin, clean shutdown."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import Executor, ExternalShutdownException
from rclpy.node import Node

from real_robot.ros_env import check_loopback_env


def run_node(name: str, make_node: Callable[[], Node], args: list[str] | None = None,
             make_executor: Callable[[], Executor] | None = None) -> None:
    """Refuse to start without the loopback-only DDS profile (exit 2), then spin ``make_node()`` (in
    ``make_executor()`` when given) until Ctrl-C or shutdown; ``node.close()`` runs first when it exists."""
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    try:
        check_loopback_env()
    except RuntimeError as err:
        print(f"{name}: {err}", file=sys.stderr)
        sys.exit(2)
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        if make_executor is None:
            rclpy.spin(node)
        else:
            executor = make_executor()
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            if hasattr(node, "close"):
                node.close()
            node.destroy_node()
        rclpy.try_shutdown()
