"""Simulation and data engine of the EVA stack (MuJoCo tasks, datasets, evaluation).

Rendering is headless: EGL unless ``MUJOCO_GL`` says otherwise (``osmesa`` is the
software fallback for machines without a working EGL).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
