"""eva-collect: the tiny session dataset, ordered seed search, and resume after a killed run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import configs
from configs.constants import ACTION_KEY, STATE_KEY, robotwin_start_seed
from configs.schema import RenderConfig
from sim.collect import collect
from sim.dataset import LeRobotDataset
from sim.parallel import ordered_seed_search
from sim.tasks import make_task
from tests.conftest import SMALL_RENDER, TINY_EPISODES_PER_TASK, tiny_collect_config

REPO = Path(__file__).resolve().parents[2]
START = robotwin_start_seed(0)


def episodes_by_task(ds: LeRobotDataset) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in ds.episodes:
        out.setdefault(e["eva/task"], []).append(e)
    return out


def check_episodes_are_expert_rollouts(ds: LeRobotDataset, embodiment, eps: list[int] | None = None) -> None:
    """Each stored episode is exactly the expert's plan for its seed, and its states are what the
    simulator produces from those actions (replayed here, without rendering)."""
    envs = {}
    for ep in eps if eps is not None else range(len(ds)):
        row = ds.episodes[ep]
        task = row["eva/task"]
        if task not in envs:
            envs[task] = make_task(configs.load_task_config(task), embodiment,
                                   RenderConfig(**SMALL_RENDER))
        env = envs[task]
        env.setup_demo(seed=row["eva/seed"])
        assert ds.instruction(ep) == env.get_instruction()
        plan = env.expert_actions()
        table = ds.episode_table(ep)
        assert row["length"] == len(plan)
        np.testing.assert_array_equal(table[ACTION_KEY], plan.astype(np.float32))
        for t, a in enumerate(plan):
            np.testing.assert_allclose(table[STATE_KEY][t], env.get_qpos(), atol=1e-5, err_msg=f"ep {ep} t {t}")
            env.take_action(a)
        assert env.check_success()


# ---------------------------------------------------------------------- session dataset
def test_tiny_dataset_has_requested_episodes(tiny_dataset, embodiment):
    ds = LeRobotDataset(tiny_dataset, expected_fps=int(embodiment.control_rate_hz),
                        expected_embodiment="aloha_viperx")
    by_task = episodes_by_task(ds)
    assert sorted(by_task) == configs.known_tasks()
    assert len(ds) == TINY_EPISODES_PER_TASK * len(by_task)
    for task, rows in by_task.items():
        assert len(rows) == TINY_EPISODES_PER_TASK
        seeds = [r["eva/seed"] for r in rows]
        assert all(s >= START for s in seeds) and len(set(seeds)) == len(seeds)
        assert seeds[0] == START  # the expert solves the first RoboTwin seed of every task
        for r in rows:
            assert r["eva/success"] is True
            assert r["tasks"][0] in configs.load_task_config(task).instructions
    assert [e["episode_index"] for e in ds.episodes] == list(range(len(ds)))
    assert not (tiny_dataset / ".staging").exists()


def test_tiny_dataset_content(tiny_dataset, embodiment):
    ds = LeRobotDataset(tiny_dataset)
    assert ds.cameras == SMALL_RENDER["cameras"]
    assert ds.info["robot_type"] == embodiment.robot_type
    assert ds.info["features"][STATE_KEY]["names"] == list(embodiment.joint_names)
    for ep in range(len(ds)):
        table = ds.episode_table(ep)
        np.testing.assert_allclose(table[STATE_KEY][0], embodiment.home, atol=1e-6)
        video = ds.episode_video(ep, "cam_high")
        assert video.shape == (ds.episodes[ep]["length"], SMALL_RENDER["height"], SMALL_RENDER["width"], 3)
        assert video.std() > 1.0
    check_episodes_are_expert_rollouts(ds, embodiment)


def test_first_frame_is_the_observation_before_the_first_action(tiny_dataset, embodiment):
    ds = LeRobotDataset(tiny_dataset)
    row = episodes_by_task(ds)["transfer_cube"][0]
    env = make_task(configs.load_task_config("transfer_cube"), embodiment, RenderConfig(**SMALL_RENDER))
    env.setup_demo(seed=row["eva/seed"])
    first = env.get_obs()["observation"]["cam_high"]["rgb"].astype(np.float64)
    env.close_env()
    video = ds.episode_video(row["episode_index"], "cam_high").astype(np.float64)
    assert np.abs(video[0] - first).mean() < 3.0
    assert np.abs(video[-1] - first).mean() > np.abs(video[0] - first).mean()


def test_rerun_of_a_complete_dataset_adds_nothing(tiny_dataset):
    before = {p: p.stat().st_mtime_ns for p in (tiny_dataset / "data").rglob("*.parquet")}
    cfg = tiny_collect_config(tiny_dataset, episodes=TINY_EPISODES_PER_TASK)
    collect(cfg)
    ds = LeRobotDataset(tiny_dataset)
    assert len(ds) == TINY_EPISODES_PER_TASK * len(configs.known_tasks())
    assert {p: p.stat().st_mtime_ns for p in (tiny_dataset / "data").rglob("*.parquet")} == before


# ---------------------------------------------------------------------- ordered seed search
def test_ordered_seed_search_keeps_order_and_skips_failures():
    results = []
    with ThreadPoolExecutor(max_workers=3) as pool:
        nxt = ordered_seed_search(pool, lambda task, s: (time.sleep(0.01 * (s % 3)), s)[1], "t", 10, needed=4,
                                  max_tries=20, keep=lambda r: r % 2 == 0,
                                  on_result=lambda s, r, kept: results.append((s, kept)), window=4)
    assert results == [(10, True), (11, False), (12, True), (13, False), (14, True), (15, False), (16, True)]
    assert nxt == 17


def test_ordered_seed_search_gives_up_after_max_tries():
    with ThreadPoolExecutor(max_workers=2) as pool:
        with pytest.raises(RuntimeError, match=r"'lift_bar': only 1 of 3 seeds qualified in 5 tries"):
            ordered_seed_search(pool, lambda task, s: s, "lift_bar", 0, needed=3, max_tries=5,
                                keep=lambda r: r == 2, on_result=lambda *a: None, window=2)


# ---------------------------------------------------------------------- resume after kill
RESUME_TASK = "lift_bar"  # the shortest expert episode (250 steps)
RESUME_EPISODES = 3


def cli_args(root: Path, episodes: int) -> list[str]:
    return [
        f"task=[{RESUME_TASK}]",
        f"dataset.root={root}",
        f"dataset.episodes_per_task={episodes}",
        f"render.height={SMALL_RENDER['height']}",
        f"render.width={SMALL_RENDER['width']}",
        f"render.cameras=[{','.join(SMALL_RENDER['cameras'])}]",
        "workers=1",
    ]


def run_and_kill_after_first_commit(root: Path, episodes: int, timeout: float = 90.0) -> int:
    """Start ``python -m sim.collect`` and SIGKILL it (and its worker) once episode 0 is committed.
    Returns how many episodes were committed when it died."""
    marker = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    log = open(root.parent / "collect.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "sim.collect", *cli_args(root, episodes)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"collect exited with {proc.returncode} before committing an episode: "
                            f"{(root.parent / 'collect.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no episode committed in time")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the process group we created: collect and its worker
        proc.wait()
        log.close()
    return len(list((root / "meta" / "episodes").rglob("file-*.parquet")))


def test_resume_after_killed_collection(tmp_path, embodiment):
    root = tmp_path / "killed"
    root.mkdir()
    committed = run_and_kill_after_first_commit(root, RESUME_EPISODES)
    assert 1 <= committed < RESUME_EPISODES, "the run finished before it could be killed"
    assert (root / "collect_config.yaml").is_file()  # the resolved config is saved in the run directory
    # read the commit markers themselves: the kill may land before info.json is updated
    killed_rows = [pq.read_table(f).to_pylist()[0]
                   for f in sorted((root / "meta" / "episodes").rglob("file-*.parquet"))]
    assert [r["episode_index"] for r in killed_rows] == list(range(committed))

    collect(tiny_collect_config(root, episodes=RESUME_EPISODES, tasks=[RESUME_TASK]))

    ds = LeRobotDataset(root, expected_fps=50, expected_embodiment="aloha_viperx")
    assert len(ds) == RESUME_EPISODES
    assert [e["episode_index"] for e in ds.episodes] == list(range(RESUME_EPISODES))
    seeds = [e["eva/seed"] for e in ds.episodes]
    assert len(set(seeds)) == len(seeds) and seeds == sorted(seeds)
    # the expert solves the first seeds of lift_bar, so an uninterrupted run keeps exactly these
    assert seeds == list(range(START, START + RESUME_EPISODES))
    assert all(e["eva/success"] for e in ds.episodes)
    for old, new in zip(killed_rows, ds.episodes):  # committed episodes were kept as they were
        assert old == new
    starts = [e["dataset_from_index"] for e in ds.episodes]
    assert starts == list(np.cumsum([0] + [e["length"] for e in ds.episodes[:-1]]))
    # no leftovers: one data file and one video per episode, no staging area
    assert len(list((root / "data").rglob("*"))) == RESUME_EPISODES + 1  # files + chunk dir
    assert len(list((root / "videos").rglob("*.mp4"))) == RESUME_EPISODES
    assert not (root / ".staging").exists()
    for ep in range(RESUME_EPISODES):
        assert ds.episode_video(ep, "cam_high").shape[0] == ds.episodes[ep]["length"]
    total = sum(e["length"] for e in ds.episodes)
    assert ds.info["total_frames"] == total
    index = np.concatenate([ds.episode_table(ep)["index"] for ep in range(RESUME_EPISODES)])
    np.testing.assert_array_equal(index, np.arange(total))
    # every episode, before and after the kill, is the expert's rollout for its seed
    check_episodes_are_expert_rollouts(ds, embodiment)


@pytest.mark.slow
def test_resumed_collection_equals_uninterrupted_run(tmp_path):
    """Byte-for-byte comparison with an uninterrupted run that uses two workers."""
    episodes = 5
    killed = tmp_path / "killed"
    killed.mkdir()
    assert run_and_kill_after_first_commit(killed, episodes) < episodes
    collect(tiny_collect_config(killed, episodes=episodes, tasks=[RESUME_TASK], workers=1))
    ref = tmp_path / "reference"
    collect(tiny_collect_config(ref, episodes=episodes, tasks=[RESUME_TASK], workers=2))
    a, b = LeRobotDataset(killed), LeRobotDataset(ref)
    assert a.episodes == b.episodes
    for ep in range(episodes):
        assert pq.read_table(a.data_path(ep)).equals(pq.read_table(b.data_path(ep)))
        np.testing.assert_array_equal(a.episode_video(ep, "cam_high"), b.episode_video(ep, "cam_high"))
