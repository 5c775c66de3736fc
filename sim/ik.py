"""Damped least-squares inverse kinematics for one 6-DoF arm (position + orientation)."""

from __future__ import annotations

import mujoco
import numpy as np


def rotation_error(current: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-frame axis-angle vector that rotates ``current`` (3x3) onto ``target`` (3x3)."""
    r = target @ current.T
    angle = np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))
    axis = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
    s = np.sin(angle)
    if s < 1e-6:
        if angle < 1e-6:
            return 0.5 * axis
        # angle near pi: take the axis from the symmetric part
        w, v = np.linalg.eigh((r + r.T) / 2.0)
        return v[:, -1] * angle
    return axis * (angle / (2.0 * s))


class ArmIK:
    """Solves joint angles that bring a site to a target pose, on a private MjData.

    The solver never touches the simulation state: it runs forward kinematics on its
    own ``MjData`` copy, so a scripted expert can plan a whole trajectory up front.
    """

    def __init__(self, model: mujoco.MjModel, qpos_adr: np.ndarray, dof_adr: np.ndarray, site: int,
                 lower: np.ndarray, upper: np.ndarray, damping: float = 1e-3, max_iters: int = 60,
                 tol_pos: float = 5e-4, tol_rot: float = 5e-3, locked: tuple[int, ...] = (),
                 rot_weight: float = 1.0):
        self.model = model
        self.data = mujoco.MjData(model)
        self.qpos_adr, self.dof_adr, self.site = qpos_adr, dof_adr, site
        self.lower, self.upper = lower, upper
        self.damping, self.max_iters, self.tol_pos, self.tol_rot = damping, max_iters, tol_pos, tol_rot
        # ``locked`` joints keep their initial value. With fewer than 6 active joints the pose
        # is met in the least-squares sense, orientation errors weighted by ``rot_weight``
        # (rad against m) so that position is met first.
        self.active = np.array([i not in locked for i in range(len(qpos_adr))])
        self.err_weight = np.array([1.0, 1.0, 1.0, rot_weight, rot_weight, rot_weight])
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def forward(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.qpos_adr] = q
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site].copy(), self.data.site_xmat[self.site].reshape(3, 3).copy()

    def solve(self, target_pos: np.ndarray, target_rot: np.ndarray, q_init: np.ndarray) -> tuple[np.ndarray, float]:
        """Returns (joint angles, final position error in metres)."""
        q = np.array(q_init, dtype=np.float64)
        err_p = np.inf
        for _ in range(self.max_iters):
            pos, rot = self.forward(q)
            err_p = target_pos - pos
            err_r = rotation_error(rot, target_rot)
            if np.linalg.norm(err_p) < self.tol_pos and (np.linalg.norm(err_r) < self.tol_rot or not self.active.all()):
                break
            mujoco.mj_comPos(self.model, self.data)
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            jac = np.vstack([self._jacp[:, self.dof_adr], self._jacr[:, self.dof_adr]])
            err = np.concatenate([err_p, err_r])
            # weighted damped least squares over the active joints (locked joints keep their value)
            jac = self.err_weight[:, None] * jac[:, self.active]
            err = self.err_weight * err
            dq = np.zeros_like(q)
            dq[self.active] = jac.T @ np.linalg.solve(jac @ jac.T + self.damping * np.eye(6), err)
            q = np.clip(q + dq, self.lower, self.upper)
        pos, _ = self.forward(q)
        return q, float(np.linalg.norm(target_pos - pos))
