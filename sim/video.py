"""mp4 encoding and decoding through PyAV (FFmpeg), with atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import av
import numpy as np


class VideoError(RuntimeError):
    pass


def write_mp4(path: str | Path, frames: np.ndarray, fps: float, codec: str = "libx264", crf: int = 18) -> None:
    """Encode (T, H, W, 3) uint8 frames to ``path``; the file appears only when complete."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{path}: expected (T, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    if frames.shape[0] == 0:
        raise ValueError(f"{path}: no frames to encode")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mp4")
    h, w = frames.shape[1:3]
    # yuv420p needs even sizes: pad by one pixel if needed, cropped again when decoding
    pad_h, pad_w = h % 2, w % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with av.open(str(tmp), mode="w") as container:
        stream = container.add_stream(codec, rate=int(round(fps)))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec in ("libx264", "libsvtav1"):
            stream.options = {"crf": str(crf)}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def read_mp4(path: str | Path, expected_frames: int | None = None) -> np.ndarray:
    """Decode a whole mp4 to (T, H, W, 3) uint8. Raises ``VideoError`` naming the file on damage."""
    path = Path(path)
    if not path.exists():
        raise VideoError(f"{path}: video file missing")
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError, ValueError) as e:
        raise VideoError(f"{path}: cannot decode video ({e})") from e
    if not frames:
        raise VideoError(f"{path}: no decodable frames")
    out = np.stack(frames)
    if expected_frames is not None and out.shape[0] != expected_frames:
        raise VideoError(f"{path}: decoded {out.shape[0]} frames, expected {expected_frames} (truncated or corrupt)")
    return out


def video_codec_name(codec: str) -> str:
    """Codec name as LeRobot's info.json records it."""
    return {"libx264": "h264", "libsvtav1": "av1", "mpeg4": "mpeg4"}.get(codec, codec)
