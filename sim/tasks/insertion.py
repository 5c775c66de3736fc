"""Left arm lifts the socket, right arm lifts the peg, the peg goes into the socket in mid-air (ALOHA sim task)."""

from __future__ import annotations

import mujoco
import numpy as np

from sim.scene import add_free_box, set_box_inertia
from sim.tasks.base import BimanualTask, Waypoint, top_down

PEG_HALF = (0.06, 0.01, 0.01)
SOCKET_HALF_LENGTH = 0.06
SOCKET_OUTER = 0.022  # half height/width of the socket's outer walls
PIN_HALF_LENGTH = 0.04
GRASP_OFFSET = 0.035  # grasp each part this far from its centre, on its outer end
MEET_SOCKET = np.array([-0.06, 0.5, 0.2])  # socket centre when the peg goes in


class Insertion(BimanualTask):
    name = "insertion"

    def build_objects(self, spec: mujoco.MjSpec) -> None:
        add_free_box(spec, "peg", PEG_HALF, (1, 0, 0, 1))
        # a square tube of four plates open along x, with a pin inside (gym-aloha's socket)
        socket = spec.worldbody.add_body(name="socket", pos=[-0.2, 0.5, SOCKET_OUTER])
        set_box_inertia(socket, (SOCKET_HALF_LENGTH, SOCKET_OUTER, SOCKET_OUTER), 0.05)
        socket.add_freejoint(name="socket_joint")
        plate = dict(type=mujoco.mjtGeom.mjGEOM_BOX, rgba=[0, 0, 1, 1], condim=4,
                     friction=[1.0, 0.05, 0.001], solimp=[2, 1, 0.01, 0.5, 2], solref=[0.01, 1])
        wall = SOCKET_OUTER - 0.002
        socket.add_geom(name="socket-1", pos=[0, 0, -wall], size=[SOCKET_HALF_LENGTH, 0.018, 0.002], **plate)
        socket.add_geom(name="socket-2", pos=[0, 0, wall], size=[SOCKET_HALF_LENGTH, 0.018, 0.002], **plate)
        socket.add_geom(name="socket-3", pos=[0, wall, 0], size=[SOCKET_HALF_LENGTH, 0.002, 0.018], **plate)
        socket.add_geom(name="socket-4", pos=[0, -wall, 0], size=[SOCKET_HALF_LENGTH, 0.002, 0.018], **plate)
        socket.add_geom(name="pin", type=mujoco.mjtGeom.mjGEOM_BOX, pos=[0, 0, 0], size=[PIN_HALF_LENGTH, 0.01, 0.01],
                        rgba=[1, 0, 0, 1], condim=4, friction=[1.0, 0.005, 0.0001])

    def randomize_objects(self, rng: np.random.Generator) -> None:
        px, py = self.sample_xy(rng, "peg")
        sx, sy = self.sample_xy(rng, "socket")
        self.set_object_pose("peg", [px, py, PEG_HALF[2]])
        self.set_object_pose("socket", [sx, sy, SOCKET_OUTER])

    def plan_waypoints(self) -> dict[str, list[Waypoint]]:
        peg, socket = self.object_pos("peg"), self.object_pos("socket")
        l_rot, r_rot = top_down("left"), top_down("right")
        l_grasp = socket + [-GRASP_OFFSET, 0.0, 0.0]
        l_grasp[2] = self.grasp_height(socket[2])
        r_grasp = peg + [GRASP_OFFSET, 0.0, 0.0]
        r_grasp[2] = self.grasp_height(peg[2])
        # carried objects keep their height below the TCP
        l_drop, r_drop = l_grasp[2] - socket[2], r_grasp[2] - peg[2]
        l_meet = MEET_SOCKET + [-GRASP_OFFSET, 0.0, l_drop]
        # peg centre: first in line before the mouth, then in until it meets the pin
        peg_ready = MEET_SOCKET + [SOCKET_HALF_LENGTH + PEG_HALF[0] + 0.04, 0.0, 0.0]
        peg_in = MEET_SOCKET + [PIN_HALF_LENGTH + PEG_HALF[0] - 0.008, 0.0, 0.0]
        r_ready = peg_ready + [GRASP_OFFSET, 0.0, r_drop]
        r_in = peg_in + [GRASP_OFFSET, 0.0, r_drop]
        left = self.pick("left", l_grasp, l_rot) + [
            Waypoint(3.4, l_meet, l_rot, 0.0),
            Waypoint(7.0, l_meet, l_rot, 0.0),
        ]
        right = self.pick("right", r_grasp, r_rot) + [
            Waypoint(3.6, r_ready, r_rot, 0.0),
            Waypoint(5.2, r_in, r_rot, 0.0),
            Waypoint(7.0, r_in, r_rot, 0.0),
        ]
        return {"left": left, "right": right}

    def check_success(self) -> bool:
        peg = self.model.geom("peg").id
        pin = self.model.geom("pin").id
        socket_geoms = [self.model.geom(f"socket-{i}").id for i in range(1, 5)]
        lifted = not self.on_table(peg) and not any(self.on_table(g) for g in socket_geoms)
        return lifted and self.touching(peg, [pin])
