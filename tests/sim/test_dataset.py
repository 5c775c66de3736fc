"""LeRobot v3.0 writer/reader: round trip, schema field by field, clips, damage, resume."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from configs.constants import ACTION_DIM, ACTION_KEY, FRAME_COLUMNS, STATE_KEY, image_key
from sim.dataset import (
    DATA_PATH,
    VIDEO_PATH,
    ClipDataset,
    DatasetError,
    EpisodeRecord,
    LeRobotDataset,
    LeRobotDatasetWriter,
    stage_episode_videos,
)
from sim.video import VideoError, read_mp4, write_mp4

FPS = 50
CAMERAS = ["cam_high", "cam_left_wrist"]
SHAPE = (48, 64)
JOINTS = [f"j{i}" for i in range(ACTION_DIM)]
TASKS = ["pick the cube", "lift the bar"]
LENGTHS = (20, 13)


def make_writer(root: Path, **overrides) -> LeRobotDatasetWriter:
    kwargs = dict(repo_id="test/synthetic", fps=FPS, robot_type="aloha", embodiment="aloha_viperx",
                  joint_names=JOINTS, cameras=CAMERAS, image_shape=SHAPE, tasks=TASKS)
    kwargs.update(overrides)
    return LeRobotDatasetWriter(root, **kwargs)


def smooth_frames(t: int, shape: tuple[int, int], phase: float) -> np.ndarray:
    """Smooth colour gradients that move over time (codec friendly, distinct per frame)."""
    h, w = shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty((t, h, w, 3), np.uint8)
    for k in range(t):
        s = phase + 0.1 * k
        out[k, ..., 0] = 128 + 60 * np.sin(np.pi * x / w + s)
        out[k, ..., 1] = 128 + 60 * np.cos(np.pi * y / h - s)
        out[k, ..., 2] = 60 + 3 * k + (x + y) / (h + w) * 60
    return out


def make_episode(writer: LeRobotDatasetWriter, t: int, seed: int, instruction: str, shape=SHAPE):
    rng = np.random.default_rng(seed)
    states = rng.normal(size=(t, ACTION_DIM)).astype(np.float32)
    actions = rng.normal(size=(t, ACTION_DIM)).astype(np.float32)
    frames = {cam: smooth_frames(t, shape, phase=seed + i) for i, cam in enumerate(writer.cameras)}
    videos, stats = stage_episode_videos(writer.staging_dir(f"ep-{seed}"), frames, writer.fps, "libx264", 18)
    rec = EpisodeRecord(states=states, actions=actions, instruction=instruction, videos=videos, image_stats=stats,
                        task="synthetic", seed=seed, success=True)
    return rec, frames


@pytest.fixture
def two_episode_dataset(tmp_path):
    """A dataset with two committed episodes; returns (root, [(states, actions, frames, instruction)])."""
    root = tmp_path / "ds"
    writer = make_writer(root)
    truth = []
    for i, (t, instruction) in enumerate(zip(LENGTHS, TASKS)):
        rec, frames = make_episode(writer, t, seed=100_000 + i, instruction=instruction)
        assert writer.add_episode(rec) == i
        truth.append((rec.states, rec.actions, frames, instruction))
    return root, truth


# ---------------------------------------------------------------------- round trip
def test_round_trip(two_episode_dataset):
    root, truth = two_episode_dataset
    ds = LeRobotDataset(root, expected_fps=FPS, expected_embodiment="aloha_viperx")
    assert len(ds) == 2 and ds.fps == FPS and ds.cameras == CAMERAS
    start = 0
    for ep, (states, actions, frames, instruction) in enumerate(truth):
        table = ds.episode_table(ep)
        assert table[STATE_KEY].dtype == np.float32 and table[ACTION_KEY].dtype == np.float32
        np.testing.assert_array_equal(table[STATE_KEY], states)
        np.testing.assert_array_equal(table[ACTION_KEY], actions)
        t = len(states)
        np.testing.assert_array_equal(table["frame_index"], np.arange(t))
        np.testing.assert_array_equal(table["episode_index"], np.full(t, ep))
        np.testing.assert_array_equal(table["index"], np.arange(start, start + t))
        np.testing.assert_allclose(table["timestamp"], np.arange(t) / FPS, rtol=1e-6)
        assert ds.tasks[int(table["task_index"][0])] == instruction == ds.instruction(ep)
        for cam in CAMERAS:
            video = ds.episode_video(ep, cam)
            assert video.shape == frames[cam].shape and video.dtype == np.uint8
            mae = np.abs(video.astype(np.float64) - frames[cam]).mean()
            assert mae < 3.0, f"episode {ep} {cam}: mean abs error {mae:.2f}"
        start += t


def test_video_round_trip_odd_size(tmp_path):
    """yuv420p needs even sizes: odd frames are padded on write and cropped by the reader."""
    root = tmp_path / "odd"
    writer = make_writer(root, image_shape=(33, 47), cameras=["cam_high"])
    rec, frames = make_episode(writer, 10, seed=7, instruction=TASKS[0], shape=(33, 47))
    writer.add_episode(rec)
    video = LeRobotDataset(root).episode_video(0, "cam_high")
    assert video.shape == (10, 33, 47, 3)
    assert np.abs(video.astype(np.float64) - frames["cam_high"]).mean() < 3.0


def test_write_mp4_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(tmp_path / "a.mp4", np.zeros((3, 8, 8, 3), np.float32), fps=10)
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "a.mp4", np.zeros((0, 8, 8, 3), np.uint8), fps=10)
    assert not (tmp_path / "a.mp4").exists()
    with pytest.raises(VideoError, match="missing"):
        read_mp4(tmp_path / "a.mp4")


# ---------------------------------------------------------------------- v3.0 schema
def test_info_json_schema(two_episode_dataset):
    root, truth = two_episode_dataset
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    assert info["fps"] == FPS and isinstance(info["fps"], int)
    assert info["robot_type"] == "aloha"
    assert info["total_episodes"] == 2
    assert info["total_frames"] == sum(LENGTHS)
    assert info["total_tasks"] == len(TASKS)
    assert info["splits"] == {"train": "0:2"}
    assert info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    expected = {image_key(c) for c in CAMERAS} | {STATE_KEY, ACTION_KEY, *FRAME_COLUMNS}
    assert set(feats) == expected
    for cam in CAMERAS:
        f = feats[f"observation.images.{cam}"]
        assert f["dtype"] == "video"
        assert f["shape"] == [*SHAPE, 3]
        assert f["names"] == ["height", "width", "channels"]
        assert f["info"]["video.codec"] == "h264"
        assert f["info"]["video.pix_fmt"] == "yuv420p"
        assert f["info"]["video.fps"] == FPS
        assert f["info"]["video.height"] == SHAPE[0] and f["info"]["video.width"] == SHAPE[1]
    for key in (STATE_KEY, ACTION_KEY):
        assert feats[key] == {"dtype": "float32", "shape": [ACTION_DIM], "names": JOINTS}
    assert feats["timestamp"]["dtype"] == "float32" and feats["timestamp"]["shape"] == [1]
    for col in ("frame_index", "episode_index", "index", "task_index"):
        assert feats[col]["dtype"] == "int64" and feats[col]["shape"] == [1]
    assert info["eva"]["embodiment"] == "aloha_viperx" and info["eva"]["cameras"] == CAMERAS


def test_file_layout_and_parquet_types(two_episode_dataset):
    root, _ = two_episode_dataset
    for ep in range(2):
        loc = {"chunk_index": 0, "file_index": ep}
        data = root / DATA_PATH.format(**loc)
        assert data.is_file()
        for cam in CAMERAS:
            video = root / VIDEO_PATH.format(video_key=image_key(cam), **loc)
            assert video.is_file()
            with av.open(str(video)) as c:
                stream = c.streams.video[0]
                assert stream.codec_context.name == "h264"
                assert stream.average_rate == FPS
        schema = pq.read_schema(data)
        assert schema.field(STATE_KEY).type == pa.list_(pa.float32(), ACTION_DIM)
        assert schema.field(ACTION_KEY).type == pa.list_(pa.float32(), ACTION_DIM)
        assert schema.field("timestamp").type == pa.float32()
        for col in ("frame_index", "episode_index", "index", "task_index"):
            assert schema.field(col).type == pa.int64()
    assert not (root / ".staging").exists() or not any((root / ".staging").rglob("*.mp4"))


def test_episodes_meta_columns(two_episode_dataset):
    root, truth = two_episode_dataset
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    assert [f.relative_to(root).as_posix() for f in files] == [
        "meta/episodes/chunk-000/file-000.parquet", "meta/episodes/chunk-000/file-001.parquet"]
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    start = 0
    for ep, (row, (states, actions, _, instruction)) in enumerate(zip(rows, truth)):
        t = len(states)
        assert row["episode_index"] == ep
        assert row["tasks"] == [instruction]
        assert row["length"] == t
        assert (row["data/chunk_index"], row["data/file_index"]) == (0, ep)
        assert (row["dataset_from_index"], row["dataset_to_index"]) == (start, start + t)
        assert (row["meta/episodes/chunk_index"], row["meta/episodes/file_index"]) == (0, ep)
        for cam in CAMERAS:
            key = image_key(cam)
            assert (row[f"videos/{key}/chunk_index"], row[f"videos/{key}/file_index"]) == (0, ep)
            assert row[f"videos/{key}/from_timestamp"] == 0.0
            assert row[f"videos/{key}/to_timestamp"] == pytest.approx(t / FPS)
            assert np.asarray(row[f"stats/{key}/mean"]).shape == (3, 1, 1)
        np.testing.assert_allclose(row[f"stats/{STATE_KEY}/min"], states.min(0), rtol=1e-6)
        np.testing.assert_allclose(row[f"stats/{ACTION_KEY}/max"], actions.max(0), rtol=1e-6)
        assert row[f"stats/{STATE_KEY}/count"] == [t]
        assert row["eva/seed"] == 100_000 + ep and row["eva/success"] is True and row["eva/task"] == "synthetic"
        start += t


def test_tasks_parquet(two_episode_dataset):
    root, _ = two_episode_dataset
    table = pq.read_table(root / "meta" / "tasks.parquet")
    assert table.schema.field("task_index").type == pa.int64()
    assert table.to_pydict() == {"task_index": [0, 1], "task": TASKS}


def test_stats_json(two_episode_dataset):
    root, truth = two_episode_dataset
    stats = json.loads((root / "meta" / "stats.json").read_text())
    assert set(stats) == {STATE_KEY, ACTION_KEY, *(image_key(c) for c in CAMERAS)}
    for feat, entry in stats.items():
        assert set(entry) == {"min", "max", "mean", "std", "count"}, feat
        assert entry["count"] == [sum(LENGTHS)]
    # pooled per-episode stats equal the stats of all frames together
    for key, col in ((STATE_KEY, 0), (ACTION_KEY, 1)):
        allx = np.concatenate([t[col] for t in truth]).astype(np.float64)
        for name, fn in (("min", np.min), ("max", np.max), ("mean", np.mean), ("std", np.std)):
            np.testing.assert_allclose(stats[key][name], fn(allx, axis=0), rtol=1e-5, atol=1e-6)
    for cam in CAMERAS:
        s = stats[image_key(cam)]
        mean = np.asarray(s["mean"])
        assert mean.shape == (3, 1, 1)
        assert np.all((0 <= np.asarray(s["min"])) & (np.asarray(s["max"]) <= 1))
        allf = np.concatenate([t[2][cam] for t in truth]).reshape(-1, 3) / 255.0
        np.testing.assert_allclose(mean.ravel(), allf.mean(0), atol=0.02)


# ---------------------------------------------------------------------- clips
def test_clip_dataset_subsampled(two_episode_dataset):
    root, truth = two_episode_dataset
    clips = ClipDataset(root, clip_len=4, fps=25, cameras=["cam_high"])
    assert clips.step == 2
    span = 3 * 2 + 1
    expected = [(ep, s) for ep, t in enumerate(LENGTHS) for s in range(0, t - span + 1, 2)]
    assert clips.index == expected and len(clips) == len(expected)
    for i in (0, len(clips) - 1):
        item = clips[i]
        ep, start = expected[i]
        states, actions, frames, instruction = truth[ep]
        assert set(item["frames"]) == {"cam_high"}
        assert item["frames"]["cam_high"].shape == (4, *SHAPE, 3)
        assert item["frames"]["cam_high"].dtype == np.uint8
        assert item["state"].shape == (4, ACTION_DIM) and item["action"].shape == (4, ACTION_DIM)
        np.testing.assert_array_equal(item["state"], states[start:start + span:2])
        np.testing.assert_array_equal(item["action"], actions[start:start + span:2])
        err = np.abs(item["frames"]["cam_high"].astype(np.float64) - frames["cam_high"][start:start + span:2]).mean()
        assert err < 3.0
        assert item["instruction"] == instruction
        assert item["episode_index"] == ep and item["start_frame"] == start


def test_clip_dataset_full_rate_all_cameras(two_episode_dataset):
    root, _ = two_episode_dataset
    clips = ClipDataset(root, clip_len=5, episodes=[1], window_stride=4)
    assert clips.step == 1 and clips.cameras == CAMERAS
    assert [s for _, s in clips.index] == [0, 4, 8]
    item = clips[2]
    assert {c: v.shape for c, v in item["frames"].items()} == {c: (5, *SHAPE, 3) for c in CAMERAS}


def test_clip_dataset_errors(two_episode_dataset):
    root, _ = two_episode_dataset
    with pytest.raises(DatasetError, match="does not divide"):
        ClipDataset(root, clip_len=4, fps=30)
    with pytest.raises(DatasetError, match="cam_top"):
        ClipDataset(root, clip_len=4, cameras=["cam_top"])
    with pytest.raises(DatasetError, match="cam_top"):
        LeRobotDataset(root).episode_video(0, "cam_top")


# ---------------------------------------------------------------------- damage
def test_corrupt_parquet_names_file_and_episode(two_episode_dataset):
    root, _ = two_episode_dataset
    ds = LeRobotDataset(root)
    path = ds.data_path(1)
    path.write_bytes(b"this is not a parquet file" * 10)
    ds.episode_table(0)  # the other episode still reads
    with pytest.raises(DatasetError) as err:
        ds.episode_table(1)
    assert str(path) in str(err.value) and "episode 1" in str(err.value)


def test_truncated_mp4_names_file_and_episode(two_episode_dataset):
    root, _ = two_episode_dataset
    ds = LeRobotDataset(root)
    path = ds.video_path(0, "cam_left_wrist")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds.episode_video(0, "cam_high")  # the other camera still decodes
    with pytest.raises(DatasetError) as err:
        ds.episode_video(0, "cam_left_wrist")
    msg = str(err.value)
    assert str(path) in msg and "episode 0" in msg and "cam_left_wrist" in msg


def test_video_with_too_few_frames_is_an_error(two_episode_dataset):
    root, truth = two_episode_dataset
    ds = LeRobotDataset(root)
    path = ds.video_path(1, "cam_high")
    write_mp4(path, truth[1][2]["cam_high"][:5], fps=FPS)
    with pytest.raises(DatasetError, match=r"episode 1.*decoded 5 frames, expected 13"):
        ds.episode_video(1, "cam_high")


def test_meta_inconsistencies(two_episode_dataset):
    root, _ = two_episode_dataset
    info_path = root / "meta" / "info.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "total_frames": 999}))
    with pytest.raises(DatasetError, match="total_frames"):
        LeRobotDataset(root)
    info_path.write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetError, match="codebase_version"):
        LeRobotDataset(root)
    info_path.write_text(json.dumps({k: v for k, v in info.items() if k != "video_path"}))
    with pytest.raises(DatasetError, match="video_path"):
        LeRobotDataset(root)
    with pytest.raises(DatasetError, match="missing"):
        LeRobotDataset(root / "nowhere")


def test_expected_fps_and_embodiment(two_episode_dataset):
    root, _ = two_episode_dataset
    LeRobotDataset(root, expected_fps=FPS, expected_embodiment="aloha_viperx")
    with pytest.raises(DatasetError, match="fps is 50.*expects 30"):
        LeRobotDataset(root, expected_fps=30)
    with pytest.raises(DatasetError, match="agilex_piper"):
        LeRobotDataset(root, expected_embodiment="agilex_piper")
    with pytest.raises(DatasetError, match="agilex_piper"):
        ClipDataset(root, clip_len=2, expected_embodiment="agilex_piper")


# ---------------------------------------------------------------------- writer checks and resume
def test_add_episode_validates(tmp_path):
    writer = make_writer(tmp_path / "ds")
    rec, _ = make_episode(writer, 6, seed=1, instruction=TASKS[0])
    with pytest.raises(ValueError, match="not among"):
        writer.add_episode(EpisodeRecord(**{**rec.__dict__, "instruction": "dance"}))
    with pytest.raises(ValueError, match="states/actions"):
        writer.add_episode(EpisodeRecord(**{**rec.__dict__, "actions": rec.actions[:, :7]}))
    with pytest.raises(ValueError, match="videos"):
        writer.add_episode(EpisodeRecord(**{**rec.__dict__, "videos": {"cam_high": rec.videos["cam_high"]}}))
    assert writer.add_episode(rec) == 0


def test_resume_after_crash_mid_episode(tmp_path):
    root = tmp_path / "ds"
    writer = make_writer(root)
    rec0, frames0 = make_episode(writer, 12, seed=0, instruction=TASKS[0])
    assert writer.add_episode(rec0) == 0
    # crash while committing episode 1: its video and data landed, its meta file did not
    rec1, _ = make_episode(writer, 9, seed=1, instruction=TASKS[1])
    stray = [root / VIDEO_PATH.format(video_key=image_key(c), chunk_index=0, file_index=1) for c in CAMERAS]
    for cam, path in zip(CAMERAS, stray):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rec1.videos[cam].read_bytes())
    stray.append(root / DATA_PATH.format(chunk_index=0, file_index=1))
    stray[-1].write_bytes(b"half a parquet")
    stray.append(root / "data" / "chunk-000" / ".file-002.parquet.tmp")
    stray[-1].write_bytes(b"tmp")
    staged = writer.staging_dir("insertion-100007") / "cam_high.mp4"
    staged.write_bytes(b"partial")
    del writer

    writer = make_writer(root)
    for path in stray:
        assert not path.exists(), f"{path} of the partial episode was not removed"
    assert not (root / ".staging").exists()
    assert len(writer.episodes) == 1
    ds = LeRobotDataset(root)
    assert len(ds) == 1
    np.testing.assert_array_equal(ds.episode_table(0)[STATE_KEY], rec0.states)
    assert np.abs(ds.episode_video(0, "cam_high").astype(np.float64) - frames0["cam_high"]).mean() < 3.0
    rec1, _ = make_episode(writer, 9, seed=1, instruction=TASKS[1])
    assert writer.add_episode(rec1) == 1
    ds = LeRobotDataset(root)
    assert len(ds) == 2 and ds.info["total_frames"] == 21
    np.testing.assert_array_equal(ds.episode_table(1)["index"], np.arange(12, 21))
    np.testing.assert_array_equal(ds.episode_table(1)[ACTION_KEY], rec1.actions)


@pytest.mark.parametrize(
    "change,match",
    [
        ({"fps": 30}, "fps"),
        ({"embodiment": "agilex_piper"}, "embodiment"),
        ({"robot_type": "agilex_cobot_magic"}, "robot_type"),
        ({"cameras": ["cam_high"]}, "cameras"),
        ({"image_shape": (64, 64)}, "features"),
        ({"chunk_size": 2}, "chunks_size"),
    ],
)
def test_reopen_with_different_settings_is_refused(two_episode_dataset, change, match):
    root, _ = two_episode_dataset
    with pytest.raises(DatasetError, match=match):
        make_writer(root, **change)
    # nothing was touched: both episodes still read
    ds = LeRobotDataset(root)
    assert len(ds) == 2
    for ep in range(2):
        ds.episode_table(ep)
        ds.episode_video(ep, "cam_high")


def test_non_contiguous_committed_episodes_are_refused(two_episode_dataset):
    root, _ = two_episode_dataset
    (root / "meta" / "episodes" / "chunk-000" / "file-000.parquet").unlink()
    with pytest.raises(DatasetError, match="contiguous"):
        make_writer(root)


def test_chunked_layout_survives_reopen(tmp_path):
    """chunk_size=2: episode 2 lives in chunk-001; reopening with the same settings keeps it."""
    root = tmp_path / "ds"
    writer = make_writer(root, chunk_size=2, cameras=["cam_high"])
    actions = []
    for i in range(3):
        rec, _ = make_episode(writer, 4 + i, seed=i, instruction=TASKS[i % 2])
        writer.add_episode(rec)
        actions.append(rec.actions)
    assert (root / "data" / "chunk-001" / "file-000.parquet").is_file()
    assert (root / "videos" / "observation.images.cam_high" / "chunk-001" / "file-000.mp4").is_file()
    assert (root / "meta" / "episodes" / "chunk-001" / "file-000.parquet").is_file()
    writer = make_writer(root, chunk_size=2, cameras=["cam_high"])
    assert len(writer.episodes) == 3
    ds = LeRobotDataset(root)
    assert ds.info["chunks_size"] == 2
    for ep in range(3):
        np.testing.assert_array_equal(ds.episode_table(ep)[ACTION_KEY], actions[ep])
        assert ds.episode_video(ep, "cam_high").shape == (4 + ep, *SHAPE, 3)
