"""Shared by the ROS 2 workspace tests: the colcon-built ``planner`` package (built once per session) and
the environment its console-script nodes run with (loopback-only DDS, what ``install/setup.bash`` adds).
Needs the ``ros`` extra (colcon); skipped without it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from real_robot.ros_workspace import COLCON, build_workspace


@pytest.fixture(scope="session")
def install(tmp_path_factory) -> Path:
    if not COLCON.exists():
        pytest.skip("colcon is not installed (the ros extra)")
    return build_workspace(tmp_path_factory.mktemp("colcon"), timeout_s=120)


def udp_sockets(pids: list[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every UDP socket the processes hold (``ss``); skips when ``ss`` is missing."""
    try:
        out = subprocess.run(["ss", "-H", "-uanp"], capture_output=True, text=True, timeout=10, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError):
        pytest.skip("ss is not available to list the sockets")
    found = []
    for line in out.splitlines():
        fields = line.split()
        for pid in pids:
            if f"pid={pid}," in line:
                found.append((pid, fields[3]))
    return found
