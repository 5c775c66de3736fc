"""The loopback-only ROS 2 environment helper: variables set and unset, refusal without the profile."""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET

import pytest

from real_robot import ros_env
from real_robot.ros_env import (LOOPBACK_PROFILE, PROFILE_VARS, apply_loopback_env, check_loopback_env,
                                loopback_env)

DIRTY = {"ROS_LOCALHOST_ONLY": "1", "ROS_STATIC_PEERS": "10.0.0.1", "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
         "ROS_DOMAIN_ID": "0", "RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp", "AMENT_PREFIX_PATH": "/opt/other",
         "KEEP_ME": "yes"}


def test_loopback_env_sets_and_unsets_the_measured_settings():
    env = loopback_env(17, base=DIRTY)
    assert "ROS_LOCALHOST_ONLY" not in env and "ROS_STATIC_PEERS" not in env
    assert env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "SYSTEM_DEFAULT"
    assert env["ROS_DOMAIN_ID"] == "17"
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    for name in PROFILE_VARS:
        assert env[name] == str(LOOPBACK_PROFILE)
    assert env["AMENT_PREFIX_PATH"].split(os.pathsep) == ["/opt/other", sys.prefix]
    assert env["KEEP_ME"] == "yes"
    assert DIRTY["ROS_LOCALHOST_ONLY"] == "1"  # the base is not modified
    check_loopback_env(env)


def test_random_domain_ids_stay_in_range():
    ids = {int(loopback_env(base={})["ROS_DOMAIN_ID"]) for _ in range(50)}
    assert all(1 <= i <= 200 for i in ids) and len(ids) > 1
    with pytest.raises(ValueError, match="ROS_DOMAIN_ID"):
        loopback_env(500, base={})


def test_the_profile_keeps_everything_on_loopback():
    ns = {"d": "http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles"}
    root = ET.parse(LOOPBACK_PROFILE).getroot()
    addresses = [a.text for a in root.iter(f"{{{ns['d']}}}address")]
    assert addresses and set(addresses) == {"127.0.0.1"}
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.find(".//d:useBuiltinTransports", ns).text == "false"
    assert participant.find(".//d:avoid_builtin_multicast", ns).text == "true"


def test_refuses_without_the_profile(tmp_path, monkeypatch):
    missing = tmp_path / "nope.xml"
    with pytest.raises(FileNotFoundError, match="multicast"):
        loopback_env(3, base={}, profile=missing)
    monkeypatch.setattr(ros_env, "LOOPBACK_PROFILE", missing)
    with pytest.raises(FileNotFoundError):
        ros_env.loopback_env(3, base={}, profile=ros_env.LOOPBACK_PROFILE)
    before = dict(os.environ)
    with pytest.raises(FileNotFoundError):
        apply_loopback_env(3, profile=missing)
    assert dict(os.environ) == before  # nothing applied


def test_apply_updates_os_environ(monkeypatch):
    for name, value in DIRTY.items():
        monkeypatch.setenv(name, value)
    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="not set"):
        check_loopback_env()
    apply_loopback_env(42)
    assert "ROS_LOCALHOST_ONLY" not in os.environ and "ROS_STATIC_PEERS" not in os.environ
    assert os.environ["ROS_DOMAIN_ID"] == "42" and os.environ["KEEP_ME"] == "yes"
    assert check_loopback_env() == LOOPBACK_PROFILE


@pytest.mark.parametrize("change,match", [
    ({"FASTDDS_DEFAULT_PROFILES_FILE": "/nonexistent/profile.xml"}, "does not exist"),
    ({"ROS_LOCALHOST_ONLY": "1"}, "ROS_LOCALHOST_ONLY"),
    ({"ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}, "LOCALHOST"),
    ({"ROS_AUTOMATIC_DISCOVERY_RANGE": None}, "SUBNET"),
    ({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, "rmw_fastrtps_cpp"),
])
def test_check_refuses_unsafe_settings(change, match):
    env = loopback_env(5, base={})
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    with pytest.raises(RuntimeError, match=match):
        check_loopback_env(env)
