"""The colcon-built ``ros2_ws`` as separate processes: build it, give its nodes their environment, stop them.

Shared by ``eva-eval-ros`` and the ROS 2 tests. No ``rclpy`` here. Every environment made here starts from
:func:`real_robot.ros_env.loopback_env`, so the nodes' DDS traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from real_robot.ros_env import loopback_env

REPO = Path(__file__).resolve().parents[1]
WORKSPACE_SRC = REPO / "ros2_ws" / "src"
PACKAGE = "planner"
COLCON = Path(sys.prefix) / "bin" / "colcon"


def build_workspace(root: Path | str, timeout_s: float = 300.0) -> Path:
    """``colcon build`` of ``ros2_ws/src`` with build, install and log folders under ``root``; returns the install
    base. Raises RuntimeError with colcon's output when it fails, FileNotFoundError without colcon (the
    ``ros`` extra)."""
    if not COLCON.exists():
        raise FileNotFoundError(f"{COLCON} is missing: install the 'ros' extra (make env)")
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = loopback_env(base=os.environ)
    env["PATH"] = f"{COLCON.parent}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [str(COLCON), "--log-base", str(root / "log"), "build", "--base-paths", str(WORKSPACE_SRC),
         "--build-base", str(root / "build"), "--install-base", str(root / "install")],
        cwd=root, env=env, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"colcon build of {WORKSPACE_SRC} failed:\n{result.stdout}\n{result.stderr}")
    return root / "install"


def node_executable(install: Path | str, node: str) -> Path:
    path = Path(install) / PACKAGE / "lib" / PACKAGE / node
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no '{node}' in the install base {install} (colcon build ros2_ws first)")
    return path


def installed_params(install: Path | str, name: str) -> Path:
    """A params file installed with the package (``config/<name>``)."""
    path = Path(install) / PACKAGE / "share" / PACKAGE / "config" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the package installs no params file '{name}'")
    return path


def workspace_env(install: Path | str, domain_id: int | None = None) -> dict[str, str]:
    """The loopback-only environment plus what sourcing ``install/setup.bash`` adds for the package (its
    site-packages and this repository on PYTHONPATH, its prefix on AMENT_PREFIX_PATH)."""
    env = loopback_env(domain_id, base=os.environ)
    prefix = Path(install).resolve() / PACKAGE
    site = prefix / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(REPO), env.get("PYTHONPATH", "")) if p)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(prefix), env["AMENT_PREFIX_PATH"]])
    env.setdefault("MUJOCO_GL", "egl")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def stop_process(proc: subprocess.Popen, timeout_s: float = 5.0) -> int:
    """SIGINT (the nodes close cleanly on it), then SIGKILL after ``timeout_s``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout_s)
    return proc.returncode
