"""Right arm picks the red cube and hands it over to the left arm (the ALOHA sim task)."""

from __future__ import annotations

import mujoco
import numpy as np

from sim.scene import add_free_box
from sim.tasks.base import BimanualTask, Waypoint, tilted

CUBE_HALF = 0.02  # 4 cm cube, as in gym-aloha
MEET = np.array([0.0, 0.5, 0.25])  # hand-over point above the table centre
RIGHT_GRASP_ABOVE = 0.022  # right TCP above the cube centre when it picks (tilted approach)
LEFT_GRASP_SHORT = 0.008  # left TCP stops this far before the cube centre (fingers pinch top and bottom)


def left_horizontal() -> np.ndarray:
    """Left gripper pointing along +x with its fingers closing vertically."""
    x = np.array([1.0, 0.0, 0.0])
    y = np.array([0.0, 0.0, 1.0])
    return np.column_stack([x, y, np.cross(x, y)])


class TransferCube(BimanualTask):
    name = "transfer_cube"

    def build_objects(self, spec: mujoco.MjSpec) -> None:
        add_free_box(spec, "cube", (CUBE_HALF, CUBE_HALF, CUBE_HALF), (1, 0, 0, 1))

    def randomize_objects(self, rng: np.random.Generator) -> None:
        x, y = self.sample_xy(rng, "cube")
        self.set_object_pose("cube", [x, y, CUBE_HALF])

    def plan_waypoints(self) -> dict[str, list[Waypoint]]:
        cube = self.object_pos("cube")
        r_pick = tilted("right", 30.0)  # 60 degrees below horizontal, leaves the cube's left half free
        l_meet = left_horizontal()
        l_pos, l_rot = self.tcp_pose("left")
        grasp_z = cube[2] + RIGHT_GRASP_ABOVE
        r_hold = MEET + np.array([0.012, 0.0, 0.0])
        # the right gripper keeps its orientation, so the cube stays RIGHT_GRASP_ABOVE below its TCP
        cube_at_meet = r_hold - np.array([0.0, 0.0, RIGHT_GRASP_ABOVE])
        r_grasp = np.array([cube[0], cube[1], grasp_z])
        right = self.pick("right", r_grasp, r_pick, clearance=0.12 - RIGHT_GRASP_ABOVE) + [
            Waypoint(3.4, r_hold, r_pick, 0.0),
            Waypoint(5.0, r_hold, r_pick, 0.0),
            Waypoint(5.4, r_hold, r_pick, 1.0),
            Waypoint(6.4, r_hold + [0.12, 0.0, 0.05], r_pick, 1.0),
        ]
        l_grasp = cube_at_meet - np.array([LEFT_GRASP_SHORT, 0.0, 0.0])
        left = [
            Waypoint(0.0, l_pos, l_rot, 1.0),
            Waypoint(2.6, l_grasp - np.array([0.12, 0.0, 0.0]), l_meet, 1.0),
            Waypoint(4.2, l_grasp, l_meet, 1.0),
            Waypoint(4.6, l_grasp, l_meet, 0.0),
            Waypoint(5.6, l_grasp, l_meet, 0.0),
            Waypoint(6.4, l_grasp + [-0.08, 0.0, 0.0], l_meet, 0.0),
        ]
        return {"left": left, "right": right}

    def check_success(self) -> bool:
        cube = self.model.geom("cube").id
        return (self.gripper_touches("left", cube) and not self.gripper_touches("right", cube)
                and not self.on_table(cube))
