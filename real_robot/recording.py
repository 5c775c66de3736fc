"""ROS 2 recordings in MCAP, and their conversion into a LeRobot v3.0 episode.

Recording (``recorder_node`` in ``ros2_ws/src/planner`` writes with :class:`McapRecorder`): the file
is laid out as rosbag2's MCAP storage writes it, so tools that decode ROS 2 MCAP files (Foxglove, the
``mcap`` libraries) read it. Profile ``ros2``, one schema per message type (encoding ``ros2msg``, the text built by
:func:`ros2msg_schema`), one channel per topic (message encoding ``cdr``), messages as the
serialized bytes received, ``log_time`` = receive time and ``publish_time`` = the header stamp
(capture time), both in nanoseconds. The file is written to ``<path>.part`` and renamed to
``<path>`` by :meth:`McapRecorder.close`: a recording under its final name is always complete.

Conversion (:func:`mcap_to_lerobot`, console script ``eva-mcap-to-lerobot``): the recording is
resampled onto the embodiment's control-rate grid. At each tick t the episode frame holds the
latest message at or before t of every stream: the follower states ``ros.state_topics``
(``observation.state``), the leader arms ``ros.command_topics`` (``action``, the ALOHA
convention) and one image per camera. Times are the header stamps (``clock="header"``, capture
time, read from the CDR bytes, so rosbag2 recordings convert too) or the receive times
(``clock="log"``). The grid starts when the last stream has its first message and ends at the
earliest last message, so no tick is built from a stream that has not started or has stopped.

    eva-mcap-to-lerobot runs/rec/episode_0.mcap --root runs/data/real --instruction "lift the bar"

No ROS import: messages are decoded from their CDR bytes here (``decode_joint_state``, ``decode_image``),
so recordings convert on any machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import struct
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from mcap.reader import make_reader
from mcap.well_known import MessageEncoding, Profile, SchemaEncoding
from mcap.writer import CompressionType, Writer
from tqdm import tqdm

from configs.constants import ARMS, CAMERAS
from configs.embodiment import Embodiment, load_embodiment
from real_robot.messages import InvalidMessage, arm_from_joint_state, image_to_array
from sim.dataset import DatasetError, EpisodeRecord, LeRobotDataset, LeRobotDatasetWriter, stage_episode_videos

log = logging.getLogger(__name__)

LIBRARY = "eva-stack real_robot.recording"
SCHEMA_SEPARATOR = "=" * 80
PART_SUFFIX = ".part"
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
IMAGE_TYPE = "sensor_msgs/msg/Image"
CLOCKS = ("header", "log")  # header stamps (capture time) or receive times
# Field types of .msg files that are not messages (rosidl's primitive types).
PRIMITIVE_TYPES = frozenset({"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16",
                             "int32", "uint32", "int64", "uint64", "string", "wstring"})
CDR_ENCAPSULATIONS = {b"\x00\x00": ">", b"\x00\x01": "<"}  # CDR big endian, CDR little endian
NS = 1_000_000_000


# ====================================================================== ros2msg schemas
def split_type_name(type_name: str, package: str | None = None) -> tuple[str, str]:
    """(package, name) of ``pkg/msg/Name``, ``pkg/Name`` or, inside ``package``'s own .msg files, ``Name``."""
    parts = type_name.strip().split("/")
    if len(parts) == 3 and parts[1] == "msg" and all(parts):
        return parts[0], parts[2]
    if len(parts) == 2 and all(parts):
        return parts[0], parts[1]
    if len(parts) == 1 and parts[0] and package:
        return package, parts[0]
    raise ValueError(f"message type '{type_name}': expected 'package/msg/Name' (or 'package/Name')")


def msg_search_dirs(env: dict[str, str] | None = None) -> list[Path]:
    """Share directories searched for ``<package>/msg/<Name>.msg``: those of the ``AMENT_PREFIX_PATH``
    entries, then the virtual environment's (``sys.prefix/share``, where the ROS 2 wheels put them)."""
    env = os.environ if env is None else env
    prefixes = [p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p] + [sys.prefix]
    return [Path(p) / "share" for p in dict.fromkeys(prefixes)]


def find_msg_file(package: str, name: str, search_dirs: Sequence[Path]) -> Path:
    for share in search_dirs:
        path = Path(share) / package / "msg" / f"{name}.msg"
        if path.is_file():
            return path
    raise FileNotFoundError(f"message type '{package}/msg/{name}': no {package}/msg/{name}.msg under any of "
                            f"{[str(d) for d in search_dirs]} (share directories of AMENT_PREFIX_PATH and "
                            f"{sys.prefix}); is the package installed?")


def msg_dependencies(text: str, package: str) -> list[str]:
    """Message types (``pkg/Name``, sorted, once each) of the fields of a .msg text; constants skipped."""
    found = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        field_type = line.split()[0].split("[", 1)[0].split("<=", 1)[0]
        if field_type in PRIMITIVE_TYPES:
            continue
        dep_package, dep_name = split_type_name(field_type, package)
        found.add(f"{dep_package}/{dep_name}")
    return sorted(found)


def ros2msg_schema(type_name: str, search_dirs: Sequence[Path] | None = None) -> str:
    """The ``ros2msg`` schema text of a message type, as rosbag2's MCAP storage writes it.

    The type's .msg text, then every message type it depends on (recursively, depth first, each
    once) as a line of 80 ``=``, a line ``MSG: package/Name`` and that type's .msg text.
    """
    search_dirs = msg_search_dirs() if search_dirs is None else list(search_dirs)
    package, name = split_type_name(type_name)
    seen = {f"{package}/{name}"}

    def expand(pkg: str, msg_name: str) -> str:
        text = find_msg_file(pkg, msg_name, search_dirs).read_text()
        out = text
        for dep in msg_dependencies(text, pkg):
            if dep in seen:
                continue
            seen.add(dep)
            out += f"\n{SCHEMA_SEPARATOR}\nMSG: {dep}\n" + expand(*dep.split("/"))
        return out

    return expand(package, name)


def cdr_header_stamp_ns(data: bytes) -> int:
    """The header stamp (ns) of a CDR-serialized message whose first field is a ``std_msgs/Header``
    (``sensor_msgs/Image``, ``sensor_msgs/JointState``, ...): int32 sec, uint32 nanosec after the
    4-byte encapsulation header. Raises ValueError on another encapsulation or too few bytes."""
    order = CDR_ENCAPSULATIONS.get(bytes(data[:2]))
    if order is None:
        raise ValueError(f"CDR encapsulation {bytes(data[:2]).hex()} is not plain CDR (0000 or 0001)")
    if len(data) < 12:
        raise ValueError(f"{len(data)} bytes cannot hold a CDR header stamp (12 needed)")
    sec, nanosec = struct.unpack_from(f"{order}iI", data, 4)
    return sec * NS + nanosec


class _CdrReader:
    """Plain CDR (XCDR1) fields in order; alignment counts from the end of the 4-byte encapsulation header."""

    def __init__(self, data: bytes):
        self.order = CDR_ENCAPSULATIONS.get(bytes(data[:2]))
        if self.order is None:
            raise ValueError(f"CDR encapsulation {bytes(data[:2]).hex()} is not plain CDR (0000 or 0001)")
        self.data, self.pos = memoryview(data), 4

    def _take(self, fmt: str, size: int, count: int = 1) -> tuple:
        """``count`` values of the struct format character ``fmt`` (``size`` bytes each), aligned to ``size``."""
        self.pos += -(self.pos - 4) % size
        end = self.pos + size * count
        if end > len(self.data):
            raise ValueError(f"{len(self.data)} bytes end inside a field (byte {self.pos}, {size * count} more needed)")
        values = struct.unpack_from(f"{self.order}{count}{fmt}", self.data, self.pos) if count else ()
        self.pos = end
        return values

    def _bytes(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError(f"{len(self.data)} bytes end inside a field (byte {self.pos}, {n} more needed)")
        self.pos += n
        return bytes(self.data[self.pos - n:self.pos])

    def uint32(self) -> int:
        return self._take("I", 4)[0]

    def uint8(self) -> int:
        return self._take("B", 1)[0]

    def string(self) -> str:
        n = self.uint32()  # bytes including the terminating NUL
        return self._bytes(n)[:-1].decode() if n else ""

    def float64s(self) -> tuple[float, ...]:
        return self._take("d", 8, self.uint32())

    def octets(self) -> bytes:
        return self._bytes(self.uint32())

    def header(self) -> None:  # std_msgs/Header: stamp (int32, uint32), frame_id; the stamp is read separately
        self._take("i", 4)
        self.uint32()
        self.string()


def decode_joint_state(data: bytes) -> SimpleNamespace:
    """The ``name`` and ``position`` fields of a CDR-serialized ``sensor_msgs/JointState`` (no ROS needed)."""
    r = _CdrReader(data)
    r.header()
    names = [r.string() for _ in range(r.uint32())]
    return SimpleNamespace(name=names, position=list(r.float64s()))


def decode_image(data: bytes) -> SimpleNamespace:
    """The fields of a CDR-serialized ``sensor_msgs/Image`` (no ROS needed)."""
    r = _CdrReader(data)
    r.header()
    height, width, encoding = r.uint32(), r.uint32(), r.string()
    is_bigendian, step = r.uint8(), r.uint32()
    return SimpleNamespace(height=height, width=width, encoding=encoding, is_bigendian=is_bigendian, step=step,
                           data=r.octets())


def full_type_name(type_name: str) -> str:
    package, name = split_type_name(type_name)
    return f"{package}/msg/{name}"


# ====================================================================== writing
class McapRecorder:
    """Writes ROS 2 messages (CDR bytes) to an MCAP file the way rosbag2 does; see the module docstring.

    ``topics`` (topic -> type, ``pkg/msg/Name``) or ``add_topic`` register the topics (one schema per type,
    one channel per topic), ``write`` adds a message, ``close`` finishes the file and renames
    ``<path>.part`` to ``<path>``.
    Until then nothing exists under the final name; leaving a ``with`` block by an exception finishes the
    ``.part`` file (readable) but does not rename it. Not thread-safe: write from one thread.
    """

    def __init__(self, path: str | Path, *, topics: dict[str, str] | None = None, overwrite: bool = False,
                 search_dirs: Sequence[Path] | None = None, chunk_size: int = 1024 * 1024):
        self.path = Path(path)
        if self.path.suffix != ".mcap":
            raise ValueError(f"recording path {self.path}: expected a .mcap file name")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"recording {self.path} exists; choose another output (or overwrite=True)")
        self.part_path = self.path.with_name(self.path.name + PART_SUFFIX)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.search_dirs = msg_search_dirs() if search_dirs is None else list(search_dirs)
        self._stream = open(self.part_path, "wb")
        self._writer = Writer(self._stream, chunk_size=chunk_size, compression=CompressionType.ZSTD)
        self._writer.start(profile=Profile.ROS2, library=LIBRARY)
        self._schemas: dict[str, int] = {}
        self._channels: dict[str, tuple[int, str]] = {}  # topic -> (channel id, type)
        self.counts: Counter[str] = Counter()
        self.closed = False
        try:
            for topic, type_name in (topics or {}).items():
                self.add_topic(topic, type_name)
        except BaseException:
            self._stream.close()
            self.part_path.unlink(missing_ok=True)
            raise

    @property
    def topics(self) -> dict[str, str]:
        """topic -> message type (``pkg/msg/Name``) of the registered topics."""
        return {topic: type_name for topic, (_, type_name) in self._channels.items()}

    def add_topic(self, topic: str, type_name: str) -> None:
        type_name = full_type_name(type_name)
        if topic in self._channels:
            if self._channels[topic][1] != type_name:
                raise ValueError(f"topic {topic} is registered as {self._channels[topic][1]}, not {type_name}")
            return
        if type_name not in self._schemas:
            text = ros2msg_schema(type_name, self.search_dirs)
            self._schemas[type_name] = self._writer.register_schema(type_name, SchemaEncoding.ROS2, text.encode())
        channel = self._writer.register_channel(topic, MessageEncoding.CDR, self._schemas[type_name])
        self._channels[topic] = (channel, type_name)

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int) -> None:
        if self.closed:
            raise RuntimeError(f"recording {self.path} is closed; cannot write to {topic}")
        if topic not in self._channels:
            raise KeyError(f"topic {topic} is not registered in recording {self.path}; registered: "
                           f"{sorted(self._channels)}")
        if log_time_ns < 0 or publish_time_ns < 0:
            raise ValueError(f"topic {topic}: negative time (log {log_time_ns} ns, publish {publish_time_ns} ns)")
        self._writer.add_message(self._channels[topic][0], log_time=int(log_time_ns), data=bytes(data),
                                 publish_time=int(publish_time_ns), sequence=self.counts[topic])
        self.counts[topic] += 1

    def _finish(self) -> None:
        self._writer.finish()
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        self.closed = True

    def close(self) -> Path:
        """Finish the file and rename it to its final name; returns that path. Idempotent."""
        if not self.closed:
            self._finish()
            os.replace(self.part_path, self.path)
            log.info("recording %s: %d messages (%s)", self.path, sum(self.counts.values()),
                     ", ".join(f"{t}: {n}" for t, n in sorted(self.counts.items())) or "none")
        return self.path

    def __enter__(self) -> McapRecorder:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif not self.closed:
            self._finish()
            log.warning("recording %s interrupted by %s: left as %s", self.path, exc_type.__name__, self.part_path)


# ====================================================================== reading
def _streams(embodiment: Embodiment, cameras: Sequence[str]) -> dict[str, tuple[str, str]]:
    """topic -> (message type, what it is) of every stream the conversion needs."""
    streams: dict[str, tuple[str, str]] = {}
    for arm in ARMS:
        streams[embodiment.ros["state_topics"][arm]] = (JOINT_STATE_TYPE, f"ros.state_topics.{arm}")
        streams[embodiment.ros["command_topics"][arm]] = (JOINT_STATE_TYPE, f"ros.command_topics.{arm}")
    for cam in cameras:
        topic = embodiment.cameras[cam].ros_topic
        if topic in streams:
            raise ValueError(f"{embodiment.source}: camera {cam}'s topic {topic} is also {streams[topic][1]}")
        streams[topic] = (IMAGE_TYPE, f"cameras.{cam}.ros_topic")
    return streams


def _check_channels(recording: Path, summary, streams: dict[str, tuple[str, str]], embodiment: Embodiment) -> None:
    if summary is None:
        raise ValueError(f"{recording}: no MCAP summary section; was the recording closed cleanly?")
    by_topic = {channel.topic: channel for channel in summary.channels.values()}
    counts = summary.statistics.channel_message_counts if summary.statistics is not None else None
    present = sorted(t for t, c in by_topic.items() if counts is None or counts.get(c.id, 0) > 0)
    for topic, (type_name, what) in streams.items():
        if topic not in present:
            raise ValueError(f"{recording}: no messages on topic {topic} ({what} of embodiment {embodiment.name}); "
                             f"topics with messages: {present}")
        channel = by_topic[topic]
        schema = summary.schemas.get(channel.schema_id)
        if schema is None or schema.name != type_name:
            raise ValueError(f"{recording}: topic {topic} has type {schema.name if schema else None!r}, "
                             f"expected {type_name}")
        if channel.message_encoding != MessageEncoding.CDR:
            raise ValueError(f"{recording}: topic {topic} has message encoding {channel.message_encoding!r}, "
                             f"expected {MessageEncoding.CDR!r}")


def _existing_tasks(root: Path) -> list[str]:
    """Instructions of a dataset already at ``root`` (appending keeps their task indices)."""
    if not (root / "meta" / "info.json").exists():
        return []
    tasks = LeRobotDataset(root).tasks
    return [tasks[i] for i in sorted(tasks)]


def mcap_to_lerobot(recording: str | Path, root: str | Path, *, instruction: str,
                    embodiment: str | Path | Embodiment = "agilex_piper", cameras: Sequence[str] | None = None,
                    clock: str = "header", repo_id: str = "eva/real", video_codec: str = "libx264",
                    video_crf: int = 18, success: bool = True) -> int:
    """Convert one MCAP recording into one episode of the LeRobot v3.0 dataset at ``root`` (created, or
    appended to); returns the episode index. See the module docstring for the resampling."""
    recording, root = Path(recording), Path(root)
    if not isinstance(embodiment, Embodiment):
        embodiment = load_embodiment(embodiment)
    cameras = list(CAMERAS) if cameras is None else list(dict.fromkeys(cameras))
    unknown = [c for c in cameras if c not in embodiment.cameras]
    if unknown or not cameras:
        raise ValueError(f"cameras {cameras}: expected a non-empty subset of {list(embodiment.cameras)}")
    if embodiment.control_rate_hz != int(embodiment.control_rate_hz):
        raise ValueError(f"{embodiment.source}: control_rate_hz {embodiment.control_rate_hz} is not a whole number "
                         f"of frames per second (LeRobot fps)")
    if clock not in CLOCKS:
        raise ValueError(f"clock '{clock}': expected one of {CLOCKS}")
    if not instruction.strip():
        raise ValueError("instruction is empty: every episode needs its task instruction")
    if not recording.is_file():
        raise FileNotFoundError(f"recording {recording} does not exist")
    streams = _streams(embodiment, cameras)
    joint_topics = [t for t, (type_name, _) in streams.items() if type_name == JOINT_STATE_TYPE]
    camera_topics = {cam: embodiment.cameras[cam].ros_topic for cam in cameras}
    topic_cameras = {topic: cam for cam, topic in camera_topics.items()}  # one camera per topic (_streams)

    with open(recording, "rb") as f:
        reader = make_reader(f)
        _check_channels(recording, reader.get_summary(), streams, embodiment)

        # Pass 1: every message's time, the joint states, each camera's image size.
        times: dict[str, list[int]] = {t: [] for t in streams}
        arms: dict[str, list[np.ndarray]] = {t: [] for t in joint_topics}
        sizes: dict[str, tuple[int, int]] = {}
        for _, channel, message in reader.iter_messages(topics=list(streams), log_time_order=False):
            topic = channel.topic
            if clock == "header":
                try:
                    stamp = cdr_header_stamp_ns(message.data)
                except ValueError as err:
                    raise ValueError(f"{recording}: topic {topic}, message {len(times[topic])}: {err}") from err
            else:
                stamp = message.log_time
            if topic in arms:
                try:
                    arms[topic].append(arm_from_joint_state(decode_joint_state(message.data),
                                                            embodiment))
                except InvalidMessage as err:
                    raise ValueError(f"{recording}: topic {topic}, message at {stamp} ns: {err}") from err
            elif topic not in sizes:
                msg = decode_image(message.data)
                sizes[topic] = (int(msg.height), int(msg.width))
            times[topic].append(stamp)

        if clock == "header":
            for topic, stamps in times.items():
                if not any(stamps):
                    raise ValueError(f"{recording}: topic {topic} has only zero header stamps; convert with "
                                     f"clock='log' (receive times)")
        shapes = {sizes[camera_topics[cam]] for cam in cameras}
        if len(shapes) != 1:
            raise ValueError(f"{recording}: cameras have different image sizes "
                             f"{ {cam: sizes[camera_topics[cam]] for cam in cameras} }; a dataset holds one size")
        image_shape = shapes.pop()

        # The grid: ticks every control period from the last stream's first message to the earliest last one.
        order = {t: np.argsort(np.asarray(s, dtype=np.int64), kind="stable") for t, s in times.items()}
        sorted_times = {t: np.asarray(times[t], dtype=np.int64)[order[t]] for t in times}
        start = max(int(s[0]) for s in sorted_times.values())
        end = min(int(s[-1]) for s in sorted_times.values())
        if end < start:
            first = max(sorted_times, key=lambda t: sorted_times[t][0])
            last = min(sorted_times, key=lambda t: sorted_times[t][-1])
            raise ValueError(f"{recording}: the streams never overlap: {last} ends at {end} ns, before {first} "
                             f"starts at {start} ns")
        period = NS // int(embodiment.control_rate_hz)
        ticks = start + period * np.arange((end - start) // period + 1, dtype=np.int64)
        latest: dict[str, np.ndarray] = {}  # topic -> file-order index of its newest message at or before each tick
        for topic in times:
            newest = np.searchsorted(sorted_times[topic], ticks, side="right") - 1
            latest[topic] = order[topic][newest]
            age = (ticks - sorted_times[topic][newest]) / NS
            log.info("%s: %d messages, newest at a tick at most %.3f s old (mean %.3f s)", topic, len(times[topic]),
                     age.max(), age.mean())

        def vector(kind: str) -> np.ndarray:
            return np.concatenate([np.stack(arms[embodiment.ros[kind][arm]])[latest[embodiment.ros[kind][arm]]]
                                   for arm in ARMS], axis=1)

        states, actions = vector("state_topics"), vector("command_topics")

        # Pass 2: decode only the images some tick uses.
        wanted: dict[str, dict[int, list[int]]] = {t: {} for t in topic_cameras}
        for topic in wanted:
            for k, index in enumerate(latest[topic].tolist()):
                wanted[topic].setdefault(index, []).append(k)
        frames = {cam: np.zeros((len(ticks), *image_shape, 3), dtype=np.uint8) for cam in cameras}
        seen: Counter[str] = Counter()
        total = sum(len(times[t]) for t in wanted)
        with tqdm(total=total, desc="images", unit="msg", disable=None) as bar:
            for _, channel, message in reader.iter_messages(topics=list(streams), log_time_order=False):
                topic = channel.topic
                if topic not in wanted:
                    continue
                index = seen[topic]
                seen[topic] += 1
                bar.update(1)
                rows = wanted[topic].get(index)
                if rows is None:
                    continue
                try:
                    frame = image_to_array(decode_image(message.data), image_shape)
                except InvalidMessage as err:
                    raise ValueError(f"{recording}: topic {topic}, message {index}: {err}") from err
                frames[topic_cameras[topic]][rows] = frame

    log.info("%s: %d ticks at %g Hz over %.2f s (from %d ns)", recording, len(ticks), embodiment.control_rate_hz,
             (end - start) / NS, start)
    fps = int(embodiment.control_rate_hz)
    writer = LeRobotDatasetWriter(
        root, repo_id=repo_id, fps=fps, robot_type=embodiment.robot_type, embodiment=embodiment.name,
        joint_names=list(embodiment.joint_names), cameras=cameras, image_shape=image_shape,
        tasks=_existing_tasks(root) + [instruction], video_codec=video_codec, video_crf=video_crf)
    staging = writer.staging_dir(recording.stem)
    videos, image_stats = stage_episode_videos(staging, frames, fps, video_codec, video_crf)
    episode = writer.add_episode(EpisodeRecord(states=states, actions=actions, instruction=instruction,
                                               videos=videos, image_stats=image_stats, task=recording.name, seed=0,
                                               success=success))
    shutil.rmtree(writer.staging, ignore_errors=True)
    dataset = LeRobotDataset(root, expected_fps=fps, expected_embodiment=embodiment.name)
    if dataset.episodes[episode]["length"] != len(ticks):
        raise RuntimeError(f"{root}: episode {episode} has {dataset.episodes[episode]['length']} frames, "
                           f"wrote {len(ticks)}")
    log.info("%s -> %s episode %d (%d frames, cameras %s)", recording, root, episode, len(ticks), cameras)
    return episode


# ====================================================================== console script
def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="eva-mcap-to-lerobot", description=(
        "Convert a ROS 2 MCAP recording (recorder_node, rosbag2) into one episode of a LeRobot v3.0 dataset, "
        "resampled onto the embodiment's control-rate grid."))
    parser.add_argument("recording", type=Path, help="the .mcap file")
    parser.add_argument("--root", type=Path, required=True, help="dataset root (created, or appended to)")
    parser.add_argument("--instruction", required=True, help="the episode's task instruction")
    parser.add_argument("--embodiment", default="agilex_piper", help="embodiment name or YAML path")
    parser.add_argument("--cameras", nargs="+", default=None, help=f"camera roles (default: all, {list(CAMERAS)})")
    parser.add_argument("--clock", choices=CLOCKS, default="header",
                        help="header stamps (capture time, default) or receive times (log)")
    parser.add_argument("--repo-id", default="eva/real")
    parser.add_argument("--video-codec", default="libx264", choices=("libx264", "libsvtav1", "mpeg4"))
    parser.add_argument("--video-crf", type=int, default=18)
    parser.add_argument("--success", action=argparse.BooleanOptionalAction, default=True,
                        help="whether the demonstration succeeded (stored as eva/success)")
    args = parser.parse_args(None if argv is None else list(argv))
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    try:
        episode = mcap_to_lerobot(args.recording, args.root, instruction=args.instruction, embodiment=args.embodiment,
                                  cameras=args.cameras, clock=args.clock, repo_id=args.repo_id,
                                  video_codec=args.video_codec, video_crf=args.video_crf, success=args.success)
    except (ValueError, FileNotFoundError, DatasetError) as err:
        parser.exit(2, f"eva-mcap-to-lerobot: {err}\n")
    log.info("wrote %s episode %d", args.root, episode)


if __name__ == "__main__":
    main()
