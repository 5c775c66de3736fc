"""Loopback-only ROS 2 (Fast DDS) environment: the one helper every test, script and launch path uses.

No ``rclpy`` here (library code). DDS discovers peers by multicast on every interface by default;
traffic to any non-loopback address is forbidden on our machines (DESIGN.md section 5). The settings
below were measured to keep all traffic on 127.0.0.1:

- ``ROS_LOCALHOST_ONLY`` and ``ROS_STATIC_PEERS`` unset (``ROS_LOCALHOST_ONLY=1`` and
  ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` make rmw_fastrtps add its own unrestricted UDP transport);
- ``ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT`` (the default ``SUBNET`` adds multicast);
- ``ROS_DOMAIN_ID`` random per test, so concurrent tests do not see each other;
- ``RMW_IMPLEMENTATION=rmw_fastrtps_cpp``;
- ``FASTDDS_DEFAULT_PROFILES_FILE`` and ``FASTRTPS_DEFAULT_PROFILES_FILE`` at :data:`LOOPBACK_PROFILE`
  (UDPv4 on 127.0.0.1 only, builtin transports off, no multicast). Without the profile Fast DDS falls
  back to multicast on all interfaces, so everything here refuses to go on when it is missing.

``AMENT_PREFIX_PATH`` gets ``sys.prefix`` (the virtual environment holding the ROS 2 wheels) so that
``ament_index_python`` finds the message packages.

On the robot the operator's own DDS settings apply instead; this helper is for tests and simulation.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping
from pathlib import Path

LOOPBACK_PROFILE = Path(__file__).resolve().parent / "fastdds_loopback_only.xml"

PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
UNSET_VARS = ("ROS_LOCALHOST_ONLY", "ROS_STATIC_PEERS")
DOMAIN_ID_RANGE = (1, 200)  # inclusive; 0 (the default domain) is left to anything else on the machine


def _require_profile(profile: Path) -> Path:
    if not profile.is_file():
        raise FileNotFoundError(f"Fast DDS loopback profile {profile} is missing; without it Fast DDS falls back to "
                                f"multicast on all interfaces, so no ROS 2 process may start")
    return profile


def loopback_env(domain_id: int | None = None, base: Mapping[str, str] | None = None,
                 profile: Path | str = LOOPBACK_PROFILE) -> dict[str, str]:
    """A copy of ``base`` (default ``os.environ``) with the loopback-only ROS 2 settings applied.

    ``domain_id`` defaults to a random id in :data:`DOMAIN_ID_RANGE`. Raises FileNotFoundError when
    ``profile`` does not exist.
    """
    profile = _require_profile(Path(profile).resolve())
    if domain_id is None:
        domain_id = random.randint(*DOMAIN_ID_RANGE)
    if not 0 <= int(domain_id) <= 232:  # Fast DDS' port mapping allows 0..232
        raise ValueError(f"ROS_DOMAIN_ID must be in 0..232, got {domain_id}")
    env = dict(os.environ if base is None else base)
    for name in UNSET_VARS:
        env.pop(name, None)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SYSTEM_DEFAULT"
    env["ROS_DOMAIN_ID"] = str(int(domain_id))
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    for name in PROFILE_VARS:
        env[name] = str(profile)
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes:
        prefixes.append(sys.prefix)
    env["AMENT_PREFIX_PATH"] = os.pathsep.join(prefixes)
    return env


def apply_loopback_env(domain_id: int | None = None, profile: Path | str = LOOPBACK_PROFILE) -> dict[str, str]:
    """Apply :func:`loopback_env` to ``os.environ`` (call before ``rclpy.init()``); returns the environment."""
    env = loopback_env(domain_id, profile=profile)
    for name in UNSET_VARS:
        os.environ.pop(name, None)
    os.environ.update(env)
    return env


def check_loopback_env(env: Mapping[str, str] | None = None) -> Path:
    """Refuse to start a ROS 2 process unless a Fast DDS profile is configured and the settings that
    open unrestricted sockets are off. Returns the profile path; raises RuntimeError otherwise."""
    env = os.environ if env is None else env
    value = env.get("FASTDDS_DEFAULT_PROFILES_FILE")
    if not value:
        raise RuntimeError("FASTDDS_DEFAULT_PROFILES_FILE is not set: refusing to start a DDS participant that would "
                           "discover by multicast on all interfaces. Apply real_robot.ros_env.apply_loopback_env() "
                           "(tests, simulation) or the operator's DDS profile (robot) first")
    if not Path(value).is_file():
        raise RuntimeError(f"FASTDDS_DEFAULT_PROFILES_FILE={value} does not exist: refusing to start (Fast DDS would "
                           f"fall back to multicast on all interfaces)")
    if env.get("ROS_LOCALHOST_ONLY", "0") not in ("", "0"):
        raise RuntimeError("ROS_LOCALHOST_ONLY is set: with the profile it makes rmw_fastrtps add an unrestricted UDP "
                           "transport; unset it")
    discovery = env.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "")
    if discovery != "SYSTEM_DEFAULT":  # unset means SUBNET (multicast) in Jazzy; LOCALHOST adds a UDP transport
        raise RuntimeError(f"ROS_AUTOMATIC_DISCOVERY_RANGE={discovery or '<unset, i.e. SUBNET>'} opens sockets beyond "
                           f"the profile; set SYSTEM_DEFAULT")
    if env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        raise RuntimeError(f"RMW_IMPLEMENTATION={env['RMW_IMPLEMENTATION']}: the loopback profile applies to Fast DDS "
                           f"(rmw_fastrtps_cpp) only")
    return Path(value)
