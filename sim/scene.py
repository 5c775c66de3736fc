"""Build the MuJoCo model of a bimanual task from the ViperX MJCF that gym-aloha ships.

The arms, table, lights, cameras and actuators come from gym-aloha's
``bimanual_viperx_transfer_cube.xml`` (we delete its cube); each task adds its
own objects through ``mujoco.MjSpec``. Rendering defaults are changed for CPU
speed: no shadow map, no multisampling (DESIGN.md section 5).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from configs.constants import ARMS
from configs.embodiment import Embodiment

# Grasp point in the gripper_link frame: between the finger pads, 2.4 cm behind the tips
# (finger pads span x = 0.064 .. 0.154 m in that frame, measured on the MJCF meshes).
TCP_OFFSET = (0.13, 0.0, 0.0)
FINGERTIP_REACH = 0.024
TABLE_HALF = (0.6096, 0.381, 0.015)  # table top: x -0.61..0.61, y 0.219..0.981 (body at y 0.6), top at z 0  # tips stick out this far past the TCP along the approach axis


def load_triton_before_gl() -> None:
    """Import triton, when it is installed, before the first GL context of the process.

    Mesa's software renderer (llvmpipe, behind EGL and OSMesa here) and triton (a dependency of the torch
    wheels, loaded by ``torch._dynamo`` when diffusers is imported) each carry their own LLVM. Loading triton
    after a GL context exists segfaults the process; in the other order both work. Costs 0.2 s once."""
    if importlib.util.find_spec("triton") is not None:
        importlib.import_module("triton")


HEAD_CAMERA = "eva_head"
HEAD_CAMERA_POS = (0.0, 0.05, 0.6)
HEAD_CAMERA_TARGET = (0.0, 0.55, 0.05)
HEAD_CAMERA_FOVY = 58.0


def _look_at_xyaxes(pos, target) -> list[float]:
    """MuJoCo camera ``xyaxes`` looking from ``pos`` at ``target`` with image x along world +x."""
    d = np.asarray(target, float) - np.asarray(pos, float)
    z = -d / np.linalg.norm(d)
    x = np.array([1.0, 0.0, 0.0])
    y = np.cross(z, x)
    return [*x, *(y / np.linalg.norm(y))]


def gym_aloha_assets() -> Path:
    try:
        import gym_aloha
    except ImportError as e:  # pragma: no cover - dependency of the [sim] extra
        raise ImportError("the MuJoCo tasks need the ViperX assets of 'gym-aloha': pip install -e '.[sim]'") from e
    return Path(gym_aloha.__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class ArmIndex:
    """Addresses of one arm in the compiled model."""

    qpos: np.ndarray  # 6 arm joint qpos addresses
    dof: np.ndarray  # 6 arm joint dof addresses
    finger_qpos: int  # qpos address of the first finger slide joint
    ctrl: np.ndarray  # 6 arm actuator indices
    finger_ctrl: tuple[int, int]  # the two finger actuators (second mirrors the first)
    tcp_site: int
    gripper_body: int
    finger_geoms: tuple[int, int]


def base_spec(shadows: bool = False, multisample: bool = False) -> mujoco.MjSpec:
    spec = mujoco.MjSpec.from_file(str(gym_aloha_assets() / "bimanual_viperx_transfer_cube.xml"))
    spec.delete(spec.body("box"))
    for key in list(spec.keys):
        spec.delete(key)
    # The table is a mesh; mesh-box contacts give two points along an edge and a long object
    # rolls. A box of the table top's exact extent (measured on the mesh) takes the contacts.
    table = spec.geom("table")
    table.name = "table_visual"
    table.contype = table.conaffinity = 0
    spec.body("table").add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=list(TABLE_HALF),
                                pos=[0.0, 0.0, -TABLE_HALF[2]], group=3, rgba=[0, 0, 0, 0])
    # A head camera framed on the workspace (gym-aloha's "top" sees the whole table from
    # 0.8 m, where a 4 cm cube is a few pixels at 128 x 128).
    spec.worldbody.add_camera(name=HEAD_CAMERA, pos=list(HEAD_CAMERA_POS), fovy=HEAD_CAMERA_FOVY,
                              xyaxes=_look_at_xyaxes(HEAD_CAMERA_POS, HEAD_CAMERA_TARGET))
    if not shadows:
        spec.visual.quality.shadowsize = 0
    if not multisample:
        spec.visual.quality.offsamples = 0
    return spec


def add_tcp_sites(spec: mujoco.MjSpec, embodiment: Embodiment) -> None:
    sim = embodiment.sim
    for arm in ARMS:
        body = spec.body(sim["mjcf_arm_prefix"][arm] + sim["mjcf_gripper_body"])
        body.add_site(name=f"{arm}_tcp", pos=list(TCP_OFFSET), size=[0.005, 0, 0], rgba=[0, 1, 0, 0])


def arm_indices(model: mujoco.MjModel, embodiment: Embodiment) -> dict[str, ArmIndex]:
    sim = embodiment.sim
    if sim is None:
        raise ValueError(f"embodiment '{embodiment.name}' ({embodiment.source}) has no 'sim' section")
    actuator_of_joint = {int(model.actuator_trnid[i, 0]): i for i in range(model.nu)}
    out = {}
    for arm in ARMS:
        prefix = sim["mjcf_arm_prefix"][arm]
        joints = [model.joint(prefix + j).id for j in sim["mjcf_joints"]]
        fingers = [model.joint(prefix + f).id for f in sim["mjcf_fingers"]]
        finger_geoms = tuple(
            model.geom(f"{prefix}10_{side}_gripper_finger").id for side in ("left", "right")
        )
        out[arm] = ArmIndex(
            qpos=np.array([model.jnt_qposadr[j] for j in joints]),
            dof=np.array([model.jnt_dofadr[j] for j in joints]),
            finger_qpos=int(model.jnt_qposadr[fingers[0]]),
            ctrl=np.array([actuator_of_joint[j] for j in joints]),
            finger_ctrl=(actuator_of_joint[fingers[0]], actuator_of_joint[fingers[1]]),
            tcp_site=model.site(f"{arm}_tcp").id,
            gripper_body=model.body(prefix + sim["mjcf_gripper_body"]).id,
            finger_geoms=finger_geoms,
        )
    return out


# gym-aloha gives its 50 g objects a diagonal inertia of 0.002 kg m^2, far above a solid
# box's; with its stiff contact parameters that is what keeps light objects from jittering.
OBJECT_MIN_INERTIA = 0.002


def set_box_inertia(body: mujoco.MjsBody, half_size, mass: float) -> None:
    """Explicit inertia (the ViperX MJCF computes inertia only from geom groups 4-5)."""
    a, b, c = (2 * h for h in half_size)
    solid = np.array([b * b + c * c, a * a + c * c, a * a + b * b]) * mass / 12
    body.explicitinertial = True
    body.ipos = [0.0, 0.0, 0.0]  # centre of mass at the body origin (not inherited from pos)
    body.iquat = [1.0, 0.0, 0.0, 0.0]
    body.mass = mass
    body.inertia = np.maximum(solid, OBJECT_MIN_INERTIA).tolist()


def add_free_box(
    spec: mujoco.MjSpec, name: str, half_size: tuple[float, float, float], rgba: tuple[float, ...], mass: float = 0.05
) -> mujoco.MjsBody:
    """A free-floating box with the contact parameters gym-aloha uses for its objects."""
    body = spec.worldbody.add_body(name=name, pos=[0, 0.5, half_size[2]])
    set_box_inertia(body, half_size, mass)
    body.add_freejoint(name=f"{name}_joint")
    body.add_geom(
        name=name,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=list(half_size),
        rgba=list(rgba),
        condim=4,
        friction=[1.0, 0.005, 0.0001],
    )
    return body
