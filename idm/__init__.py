"""Inverse dynamics model (EVA section 4.1): videos in, 14-D joint actions out."""

from idm.decode import decode_video, to_control_rate
from idm.model import InverseDynamicsModel, SpatialSoftmax

__all__ = ["InverseDynamicsModel", "SpatialSoftmax", "decode_video", "to_control_rate"]
