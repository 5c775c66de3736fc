"""Shared by the ROS 2 workspace tests: the colcon-built ``planner`` package (built once per session) and
the environment its console-script nodes run with (loopback-only DDS, what ``install/setup.bash`` adds).
Needs the ``ros`` extra (colcon); skipped without it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from real_robot.ros_env import loopback_env

REPO = Path(__file__).resolve().parents[2]
COLCON = Path(sys.prefix) / "bin" / "colcon"


@pytest.fixture(scope="session")
def install(tmp_path_factory) -> Path:
    if not COLCON.exists():
        pytest.skip("colcon is not installed (the ros extra)")
    root = tmp_path_factory.mktemp("colcon")
    env = loopback_env(base=os.environ)
    env["PATH"] = f"{COLCON.parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [str(COLCON), "--log-base", str(root / "log"), "build", "--base-paths", str(REPO / "ros2_ws" / "src"),
         "--build-base", str(root / "build"), "--install-base", str(root / "install")],
        cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return root / "install"


def node_env(install: Path, domain_id: int) -> dict[str, str]:
    """What sourcing install/setup.bash would add, on top of the loopback-only settings."""
    env = loopback_env(domain_id, base=os.environ)
    prefix = install / "planner"
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(REPO), env.get("PYTHONPATH", "")) if p)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env["AMENT_PREFIX_PATH"]])
    env["MUJOCO_GL"] = env.get("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


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
