"""Both arms grasp the ends of a long bar and lift it together, keeping it level."""

from __future__ import annotations

import mujoco
import numpy as np

from sim.scene import add_free_box
from sim.tasks.base import BimanualTask, Waypoint, top_down

BAR_HALF = (0.15, 0.015, 0.015)  # 30 cm x 3 cm x 3 cm
GRASP_OFFSET = 0.11  # each arm grasps this far from the bar's centre
LIFT_HEIGHT = 0.15  # bar centre height at the end of the lift (m)
SUCCESS_HEIGHT = 0.10
MAX_TILT_DEG = 10.0


class LiftBar(BimanualTask):
    name = "lift_bar"

    def build_objects(self, spec: mujoco.MjSpec) -> None:
        add_free_box(spec, "bar", BAR_HALF, (0.1, 0.7, 0.2, 1), mass=0.1)

    def randomize_objects(self, rng: np.random.Generator) -> None:
        x, y = self.sample_xy(rng, "bar")
        self.set_object_pose("bar", [x, y, BAR_HALF[2]])

    def plan_waypoints(self) -> dict[str, list[Waypoint]]:
        bar = self.object_pos("bar")
        plans = {}
        for arm, sign in (("left", -1.0), ("right", 1.0)):
            rot = top_down(arm)
            grasp = bar + [sign * GRASP_OFFSET, 0.0, 0.0]
            grasp[2] = self.grasp_height(bar[2])
            lifted = grasp + [0.0, 0.0, LIFT_HEIGHT - bar[2]]
            plans[arm] = self.pick(arm, grasp, rot, t_above=1.2, t_down=2.0, t_close=2.4) + [
                Waypoint(4.0, lifted, rot, 0.0),
                Waypoint(5.0, lifted, rot, 0.0),
            ]
        return plans

    def check_success(self) -> bool:
        bar = self.model.geom("bar").id
        body = self.model.body("bar").id
        z_axis = self.data.xmat[body].reshape(3, 3)[:, 0]  # bar's long axis
        tilt = np.degrees(np.arcsin(np.clip(abs(z_axis[2]), 0.0, 1.0)))
        return (self.data.xpos[body][2] > SUCCESS_HEIGHT and tilt < MAX_TILT_DEG
                and self.gripper_touches("left", bar) and self.gripper_touches("right", bar)
                and not self.on_table(bar))
