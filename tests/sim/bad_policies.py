"""Policies that misbehave, importable by evaluation worker processes (policy=import)."""

import numpy as np


class NaNPolicy:
    def reset(self):
        pass

    def select_action(self, obs):
        a = np.asarray(obs["joint_action"]["vector"], dtype=np.float64).copy()
        a[3] = np.nan
        return a


class RaisingPolicy:
    def reset(self):
        pass

    def select_action(self, obs):
        raise RuntimeError("model exploded")


class WrongShapePolicy:
    def reset(self):
        pass

    def select_action(self, obs):
        return np.zeros(7)


class HoldPolicy:
    """Holds the current joint state: never succeeds."""

    def reset(self):
        pass

    def select_action(self, obs):
        return obs["joint_action"]["vector"]
