"""Embodiment files: loading, limits, gripper normalisation, and errors that name source and field."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from configs.constants import ACTION_DIM, ARMS, CAMERAS, GRIPPER_INDICES, LEFT_ARM, RIGHT_ARM
from configs.embodiment import EMBODIMENT_DIR, Embodiment, known_embodiments, load_embodiment

NAMES = ["agilex_piper", "aloha_viperx"]


def raw(name: str) -> dict:
    return yaml.safe_load((EMBODIMENT_DIR / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name", NAMES)
def test_embodiment_loads(name):
    emb = load_embodiment(name)
    assert emb.name == name
    assert emb.source.endswith(f"{name}.yaml")
    assert len(emb.joint_names) == ACTION_DIM == 14
    assert len(set(emb.joint_names)) == ACTION_DIM
    for v in (emb.position_lower, emb.position_upper, emb.velocity_limit, emb.acceleration_limit, emb.home):
        assert v.shape == (ACTION_DIM,) and v.dtype == np.float64
    assert np.all(emb.position_lower < emb.position_upper)
    assert np.all(emb.velocity_limit > 0) and np.all(emb.acceleration_limit > 0)
    assert emb.within_position_limits(emb.home)
    assert set(emb.cameras) == set(CAMERAS)
    for arm in ARMS:
        assert emb.ros["state_topics"][arm] and emb.ros["command_topics"][arm]
    assert emb.dt == pytest.approx(1.0 / emb.control_rate_hz)
    # grippers are normalised 0 = closed .. 1 = open in the action vector
    for i in GRIPPER_INDICES:
        assert emb.position_lower[i] == 0.0 and emb.position_upper[i] == 1.0
        assert "gripper" in emb.joint_names[i]


def test_load_by_path_equals_load_by_name():
    by_name = load_embodiment("aloha_viperx")
    by_path = load_embodiment(EMBODIMENT_DIR / "aloha_viperx.yaml")
    assert by_name == by_path  # source is excluded from equality
    assert by_name != load_embodiment("agilex_piper")
    d = raw("aloha_viperx")
    d["home"][0] = 0.1
    assert Embodiment.from_dict(d) != by_name


def test_arms_are_mirrored_in_the_14d_layout():
    for name in NAMES:
        emb = load_embodiment(name)
        np.testing.assert_array_equal(emb.position_lower[LEFT_ARM], emb.position_lower[RIGHT_ARM])
        np.testing.assert_array_equal(emb.position_upper[LEFT_ARM], emb.position_upper[RIGHT_ARM])
        assert all(n.startswith("left_") for n in emb.joint_names[:7])
        assert all(n.startswith("right_") for n in emb.joint_names[7:])


def test_piper_limits_match_the_design():
    """DESIGN.md section 3: Piper j1 +-2.618, j2 0..3.14, j3 -2.967..0, j4 +-1.832, j5 +-1.22, j6 +-3.14."""
    emb = load_embodiment("agilex_piper")
    lower = [-2.618, 0.0, -2.967, -1.832, -1.22, -3.14]
    upper = [2.618, 3.14, 0.0, 1.832, 1.22, 3.14]
    for arm in (LEFT_ARM, RIGHT_ARM):
        np.testing.assert_allclose(emb.position_lower[arm], lower)
        np.testing.assert_allclose(emb.position_upper[arm], upper)
    assert emb.gripper_closed_m == 0.0 and emb.gripper_open_m == pytest.approx(0.08)
    assert emb.cameras["cam_high"].ros_topic == "/camera_f/color/image_raw"
    assert emb.ros["state_topics"] == {"left": "/puppet/joint_left", "right": "/puppet/joint_right"}
    assert emb.ros["command_topics"] == {"left": "/master/joint_left", "right": "/master/joint_right"}
    assert emb.sim is None


def test_viperx_has_a_simulator_model():
    emb = load_embodiment("aloha_viperx")
    assert emb.sim is not None
    assert all(emb.cameras[c].sim for c in CAMERAS)


@pytest.mark.parametrize("name", NAMES)
def test_gripper_normalisation_round_trip(name):
    emb = load_embodiment(name)
    assert emb.gripper_to_metres(0.0) == pytest.approx(emb.gripper_closed_m)
    assert emb.gripper_to_metres(1.0) == pytest.approx(emb.gripper_open_m)
    x = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(emb.gripper_from_metres(emb.gripper_to_metres(x)), x, atol=1e-12)
    m = np.linspace(emb.gripper_closed_m, emb.gripper_open_m, 7)
    np.testing.assert_allclose(emb.gripper_to_metres(emb.gripper_from_metres(m)), m, atol=1e-12)


def test_within_position_limits_batched():
    emb = load_embodiment("aloha_viperx")
    a = np.stack([emb.home, emb.home, emb.home])
    a[1, 2] = emb.position_upper[2] + 0.1
    a[2, 6] = -0.5  # gripper below closed
    np.testing.assert_array_equal(emb.within_position_limits(a), [True, False, False])


def test_unknown_embodiment_lists_known_ones():
    with pytest.raises(ValueError) as err:
        load_embodiment("franka_panda")
    msg = str(err.value)
    assert "franka_panda" in msg
    for name in known_embodiments():
        assert name in msg
    assert known_embodiments() == NAMES


def _set(d, key, value):
    d[key] = value


def _cut(d, key, n):
    d[key] = d[key][:n]


def _swap_limit(d, i):
    d["position_lower"][i] = d["position_upper"][i]


MALFORMED = {
    "short position_lower": (lambda d: _cut(d, "position_lower", 13), "position_lower", "14"),
    "long velocity_limit": (lambda d: _set(d, "velocity_limit", d["velocity_limit"] + [1.0]), "velocity_limit", "14"),
    "13 joint names": (lambda d: _cut(d, "joint_names", 13), "joint_names", "14"),
    "lower == upper": (lambda d: _swap_limit(d, 3), "position_lower", "[3]"),
    "lower > upper": (lambda d: _set(d, "position_lower", [v + 10 for v in d["position_upper"]]), "position_lower", ""),
    "missing camera role": (lambda d: d["cameras"].pop("cam_left_wrist"), "cameras", "cam_left_wrist"),
    "extra camera role": (lambda d: _set(d["cameras"], "cam_top", d["cameras"]["cam_high"]), "cameras", "cam_top"),
    "zero velocity limit": (lambda d: d["velocity_limit"].__setitem__(0, 0.0), "velocity_limit", "positive"),
    "negative acceleration": (lambda d: d["acceleration_limit"].__setitem__(5, -1.0), "acceleration_limit", ""),
    "nan limit": (lambda d: d["position_upper"].__setitem__(1, float("nan")), "position_upper", "non-finite"),
    "home outside limits": (lambda d: d["home"].__setitem__(1, 5.0), "home", "outside"),
    "zero control rate": (lambda d: _set(d, "control_rate_hz", 0), "control_rate_hz", "positive"),
    "missing key": (lambda d: d.pop("acceleration_limit"), "acceleration_limit", "missing"),
    "missing ros arm": (lambda d: d["ros"]["command_topics"].pop("right"), "ros.command_topics", "right"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_dict_names_source_and_field(case):
    mutate, field, detail = MALFORMED[case]
    d = copy.deepcopy(raw("aloha_viperx"))
    mutate(d)
    with pytest.raises(ValueError) as err:
        Embodiment.from_dict(d, source="my_robot.yaml")
    msg = str(err.value)
    assert msg.startswith("my_robot.yaml:"), msg
    assert f"field '{field}'" in msg, msg
    assert detail in msg, msg


def test_malformed_file_names_its_path(tmp_path):
    d = raw("agilex_piper")
    d["position_upper"] = d["position_upper"][:10]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(d))
    with pytest.raises(ValueError) as err:
        load_embodiment(path)
    assert str(path) in str(err.value) and "position_upper" in str(err.value)


def test_non_mapping_file_is_rejected(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        load_embodiment(path)
