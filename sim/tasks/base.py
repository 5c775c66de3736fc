"""RoboTwin-shaped bimanual task on the MuJoCo ViperX model.

API (as in RoboTwin): ``setup_demo(seed=...)``, ``play_once()`` (scripted expert),
``check_success()``, ``get_obs()``, ``take_action(action, action_type="qpos")``,
``get_instruction()``, ``close_env()``. Physics runs at the MJCF timestep (500 Hz);
each action is held for ``1 / control_rate_hz`` (50 Hz: 10 physics steps), as in gym-aloha.
"""

from __future__ import annotations

import atexit
import logging
import weakref
from dataclasses import dataclass
from typing import ClassVar

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from configs.constants import ACTION_DIM, LEFT_ARM, LEFT_GRIPPER, RIGHT_ARM, RIGHT_GRIPPER
from configs.embodiment import Embodiment
from configs.schema import RenderConfig, TaskConfig
from sim.ik import ArmIK
from sim.scene import FINGERTIP_REACH, ArmIndex, add_tcp_sites, arm_indices, base_spec, load_triton_before_gl

log = logging.getLogger(__name__)

ARM_SLICES = {"left": LEFT_ARM, "right": RIGHT_ARM}
GRIPPER_INDEX = {"left": LEFT_GRIPPER, "right": RIGHT_GRIPPER}
TABLE_GEOM = "table"
# The experts keep the forearm roll at its home value and solve IK with the other five joints.
# With all six, every top-down grasp passes the wrist singularity (forearm roll and wrist
# rotate aligned) and the solver swings both by up to pi in opposite directions, which is
# neither executable at the joints' speed limits nor learnable from images. Five joints reach
# any top-down grasp (waist + wrist rotate set the yaw); orientation is weighted below position.
IK_LOCKED_JOINTS = (3,)  # forearm_roll
IK_ROT_WEIGHT = 0.2


def top_down(arm: str, yaw: float = 0.0) -> np.ndarray:
    """Gripper orientation with the fingers pointing down and closing along world y.

    Gripper frame: x = approach axis, y = finger closing axis. ``yaw`` turns it about
    world z. The right arm's base is rotated by pi about z, so its frame is mirrored.
    """
    x = np.array([0.0, 0.0, -1.0])
    z = np.array([1.0, 0.0, 0.0]) if arm == "left" else np.array([-1.0, 0.0, 0.0])
    y = np.cross(z, x)
    return Rotation.from_euler("z", yaw).as_matrix() @ np.column_stack([x, y, z])


def tilted(arm: str, pitch_deg: float) -> np.ndarray:
    """Top-down orientation raised by ``pitch_deg`` towards horizontal (about world y)."""
    sign = 1.0 if arm == "left" else -1.0
    return Rotation.from_euler("y", -sign * np.deg2rad(pitch_deg)).as_matrix() @ top_down(arm)


@dataclass
class Waypoint:
    """Target of one arm at time ``t`` (s): TCP position (m), gripper rotation, gripper opening (0..1)."""

    t: float
    pos: np.ndarray
    rot: np.ndarray
    grip: float


def min_jerk(s: np.ndarray) -> np.ndarray:
    """Minimum-jerk time scaling: zero velocity and acceleration at both ends."""
    return 10 * s**3 - 15 * s**4 + 6 * s**5


class BimanualTask:
    """Base class. A task adds its objects, randomises them, plans expert waypoints and checks success."""

    name: ClassVar[str] = ""

    def __init__(self, cfg: TaskConfig, embodiment: Embodiment, render: RenderConfig | None = None,
                 instruction_split: str = "train"):
        if embodiment.sim is None:
            raise ValueError(f"embodiment '{embodiment.name}' has no simulation model ({embodiment.source})")
        if instruction_split not in ("train", "eval"):
            raise ValueError(f"instruction_split must be 'train' or 'eval', got '{instruction_split}'")
        self.cfg = cfg
        self.embodiment = embodiment
        self.render_cfg = render or RenderConfig()
        self.instruction_split = instruction_split
        spec = base_spec(shadows=self.render_cfg.shadows, multisample=self.render_cfg.multisample)
        add_tcp_sites(spec, embodiment)
        self.build_objects(spec)
        self.model = spec.compile()
        self.data = mujoco.MjData(self.model)
        self.arms: dict[str, ArmIndex] = arm_indices(self.model, embodiment)
        self.n_substeps = int(round(embodiment.dt / self.model.opt.timestep))
        if not np.isclose(self.n_substeps * self.model.opt.timestep, embodiment.dt):
            raise ValueError(f"control period {embodiment.dt} s is not a multiple of the physics step "
                             f"{self.model.opt.timestep} s")
        self.camera_ids = {}
        for cam in self.render_cfg.cameras:
            sim_name = embodiment.cameras[cam].sim
            if sim_name is None:
                raise ValueError(f"embodiment '{embodiment.name}' maps camera '{cam}' to no simulator camera")
            self.camera_ids[cam] = self.model.camera(sim_name).id
        self._renderer: mujoco.Renderer | None = None
        self._table_geom = self.model.geom(TABLE_GEOM).id
        self._iks = {
            arm: ArmIK(self.model, idx.qpos, idx.dof, idx.tcp_site,
                       embodiment.position_lower[ARM_SLICES[arm]], embodiment.position_upper[ARM_SLICES[arm]],
                       locked=IK_LOCKED_JOINTS, rot_weight=IK_ROT_WEIGHT)
            for arm, idx in self.arms.items()
        }
        self.seed: int | None = None
        self.rng = np.random.default_rng(0)
        self.take_action_cnt = 0
        self.step_lim = cfg.step_limit
        self.instruction = ""

    # ----------------------------------------------------------------- task hooks
    def build_objects(self, spec: mujoco.MjSpec) -> None:
        raise NotImplementedError

    def randomize_objects(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def plan_waypoints(self) -> dict[str, list[Waypoint]]:
        raise NotImplementedError

    def check_success(self) -> bool:
        raise NotImplementedError

    # ----------------------------------------------------------------- RoboTwin API
    def setup_demo(self, seed: int = 0, **kwargs) -> None:
        """Reset to the home pose with object poses and instruction drawn from ``seed``."""
        if kwargs:
            log.debug("setup_demo ignores %s", sorted(kwargs))
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        mujoco.mj_resetData(self.model, self.data)
        self._set_arm_qpos(self.embodiment.home)
        self._apply_ctrl(self.embodiment.home)
        self.randomize_objects(self.rng)
        mujoco.mj_forward(self.model, self.data)
        pool = self.cfg.instructions if self.instruction_split == "train" else self.cfg.eval_instructions
        self.instruction = pool[int(self.rng.integers(len(pool)))]
        self.take_action_cnt = 0

    def get_instruction(self) -> str:
        return self.instruction

    def get_qpos(self) -> np.ndarray:
        """Current 14-D joint state (grippers normalised 0 = closed, 1 = open)."""
        q = np.empty(ACTION_DIM)
        for arm, idx in self.arms.items():
            q[ARM_SLICES[arm]] = self.data.qpos[idx.qpos]
            q[GRIPPER_INDEX[arm]] = self.embodiment.gripper_from_metres(self.data.qpos[idx.finger_qpos])
        return q

    def get_obs(self) -> dict:
        q = self.get_qpos()
        return {
            "observation": {cam: {"rgb": self.render(cam)} for cam in self.camera_ids},
            "joint_action": {
                "left_arm": q[LEFT_ARM].copy(),
                "left_gripper": float(q[LEFT_GRIPPER]),
                "right_arm": q[RIGHT_ARM].copy(),
                "right_gripper": float(q[RIGHT_GRIPPER]),
                "vector": q,
            },
        }

    def take_action(self, action: np.ndarray, action_type: str = "qpos") -> None:
        if action_type != "qpos":
            raise ValueError(f"action_type '{action_type}' is not supported; use 'qpos' (14-D joint targets)")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action must have shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"non-finite action at indices {np.nonzero(~np.isfinite(action))[0].tolist()}")
        self._apply_ctrl(action)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.take_action_cnt += 1

    def play_once(self) -> np.ndarray:
        """Run the scripted expert to the end of its plan; returns the executed (T, 14) actions."""
        actions = self.expert_actions()
        for a in actions:
            self.take_action(a)
        return actions

    def close_env(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ----------------------------------------------------------------- rendering
    def render(self, camera: str) -> np.ndarray:
        if self._renderer is None:
            load_triton_before_gl()
            self._renderer = mujoco.Renderer(self.model, self.render_cfg.height, self.render_cfg.width)
            # Registered after MuJoCo's own EGL exit hook, so it runs first (atexit is LIFO) and the
            # context is freed while EGL is still up.
            close = weakref.WeakMethod(self.close_env)
            atexit.register(lambda: close() and close()())
        self._renderer.update_scene(self.data, camera=self.camera_ids[camera])
        return self._renderer.render()

    # ----------------------------------------------------------------- expert
    def expert_actions(self) -> np.ndarray:
        """Plan the expert's joint trajectory from the current state: waypoints -> min-jerk -> IK."""
        plans = self.plan_waypoints()
        dt = self.embodiment.dt
        horizon = max(wps[-1].t for wps in plans.values())
        times = np.arange(1, int(round(horizon / dt)) + 1) * dt
        actions = np.empty((len(times), ACTION_DIM))
        for arm, wps in plans.items():
            pos, rot, grip = self._interpolate(wps, times)
            q = self.data.qpos[self.arms[arm].qpos].copy()
            worst = 0.0
            for k in range(len(times)):
                q, err = self._iks[arm].solve(pos[k], rot[k], q)
                worst = max(worst, err)
                actions[k, ARM_SLICES[arm]] = q
            actions[:, GRIPPER_INDEX[arm]] = grip
            if worst > 0.01:
                log.warning("%s: IK of the %s arm misses its target by %.1f mm (seed %s)",
                            self.name, arm, 1e3 * worst, self.seed)
        return actions

    def _interpolate(self, wps: list[Waypoint], times: np.ndarray):
        t = np.array([w.t for w in wps])
        pos = np.array([w.pos for w in wps])
        grip = np.array([w.grip for w in wps])
        rots = Rotation.from_matrix(np.array([w.rot for w in wps]))
        seg = np.clip(np.searchsorted(t, times, side="right") - 1, 0, len(t) - 2)
        span = np.maximum(t[seg + 1] - t[seg], 1e-9)
        s = min_jerk(np.clip((times - t[seg]) / span, 0.0, 1.0))
        out_pos = pos[seg] + s[:, None] * (pos[seg + 1] - pos[seg])
        out_grip = grip[seg] + s * (grip[seg + 1] - grip[seg])
        out_rot = np.empty((len(times), 3, 3))
        for i in range(len(t) - 1):
            mask = seg == i
            if mask.any():
                out_rot[mask] = Slerp([0.0, 1.0], rots[i:i + 2])(s[mask]).as_matrix()
        return out_pos, out_rot, out_grip

    def pick(self, arm: str, grasp: np.ndarray, rot: np.ndarray, t_above: float = 1.0, t_down: float = 1.8,
             t_close: float = 2.2, clearance: float = 0.1) -> list[Waypoint]:
        """From the current pose: over the grasp point, straight down (open), then close the gripper."""
        pos0, rot0 = self.tcp_pose(arm)
        grasp = np.asarray(grasp, dtype=np.float64)
        return [
            Waypoint(0.0, pos0, rot0, 1.0),
            Waypoint(t_above, grasp + [0.0, 0.0, clearance], rot, 1.0),
            Waypoint(t_down, grasp, rot, 1.0),
            Waypoint(t_close, grasp, rot, 0.0),
        ]

    def tcp_pose(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        idx = self.arms[arm]
        return (self.data.site_xpos[idx.tcp_site].copy(),
                self.data.xmat[idx.gripper_body].reshape(3, 3).copy())

    # ----------------------------------------------------------------- helpers for tasks
    def object_pos(self, body: str) -> np.ndarray:
        return self.data.xpos[self.model.body(body).id].copy()

    def set_object_pose(self, body: str, pos, quat=(1.0, 0.0, 0.0, 0.0)) -> None:
        jnt = self.model.body(body).jntadr[0]
        adr = self.model.jnt_qposadr[jnt]
        self.data.qpos[adr:adr + 3] = pos
        self.data.qpos[adr + 3:adr + 7] = quat

    def sample_xy(self, rng: np.random.Generator, obj: str) -> np.ndarray:
        x0, x1, y0, y1 = self.cfg.randomization[obj]
        return np.array([rng.uniform(x0, x1), rng.uniform(y0, y1)])

    def contacts(self) -> set[tuple[int, int]]:
        pairs = set()
        for c in self.data.contact[: self.data.ncon]:
            pairs.add((int(c.geom1), int(c.geom2)))
            pairs.add((int(c.geom2), int(c.geom1)))
        return pairs

    def touching(self, geom: int, others) -> bool:
        pairs = self.contacts()
        return any((geom, o) in pairs for o in others)

    def gripper_touches(self, arm: str, geom: int) -> bool:
        return self.touching(geom, self.arms[arm].finger_geoms)

    def on_table(self, geom: int) -> bool:
        return self.touching(geom, [self._table_geom])

    @staticmethod
    def grasp_height(center_z: float, clearance: float = 0.006) -> float:
        """TCP height for a top-down grasp at ``center_z`` that keeps the fingertips off the table."""
        return max(center_z, FINGERTIP_REACH + clearance)

    # ----------------------------------------------------------------- low level
    def _set_arm_qpos(self, q14: np.ndarray) -> None:
        for arm, idx in self.arms.items():
            self.data.qpos[idx.qpos] = q14[ARM_SLICES[arm]]
            finger = self.embodiment.gripper_to_metres(q14[GRIPPER_INDEX[arm]])
            self.data.qpos[idx.finger_qpos] = finger
            self.data.qpos[idx.finger_qpos + 1] = -finger

    def _apply_ctrl(self, q14: np.ndarray) -> None:
        for arm, idx in self.arms.items():
            self.data.ctrl[idx.ctrl] = q14[ARM_SLICES[arm]]
            finger = self.embodiment.gripper_to_metres(q14[GRIPPER_INDEX[arm]])
            self.data.ctrl[idx.finger_ctrl[0]] = finger
            self.data.ctrl[idx.finger_ctrl[1]] = -finger
