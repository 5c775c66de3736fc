"""ament_python package ``planner``; the planner core itself is the ``eva-stack`` library (real_robot/)."""

from glob import glob

from setuptools import setup

PACKAGE = "planner"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=[PACKAGE],
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="EVA stack",
    maintainer_email="eva@example.com",
    description="EVA planner nodes: world model + IDM behind the safety filter, a MuJoCo robot, an MCAP recorder",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "planner_node = planner.planner_node:main",
            "sim_robot_node = planner.sim_robot_node:main",
            "recorder_node = planner.recorder_node:main",
        ],
    },
)
