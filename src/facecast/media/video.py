"""Write BGR frames to an H.264 file at a constant frame rate (PyAV)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np


def frame_rate(fps: float) -> Fraction:
    """An exact rational rate: 29.97 -> 30000/1001, 60 -> 60."""
    return Fraction(fps).limit_denominator(1001)


def add_video_stream(container, width: int, height: int, rate: Fraction, codec: str = "libx264",
                     crf: int = 20, preset: str = "veryfast", threads: int = 0):
    """An H.264 (or other) yuv420p stream at a constant rate; odd sizes are cut to even (yuv420p needs
    them). `threads`: encoder threads, 0 = the encoder decides (1 beside the live stream)."""
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
    stream.codec_context.time_base = 1 / rate
    if codec == "libx264":
        stream.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
    return stream


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, codec: str = "libx264", crf: int = 20) -> int:
    """Encode `frames` (HxWx3 BGR uint8) to `path`; returns the number of frames written."""
    import av

    rate = frame_rate(fps)
    count = 0
    with av.open(str(path), mode="w", format=container_format(path)) as container:
        stream = None
        for image in frames:
            if stream is None:
                stream = add_video_stream(container, image.shape[1], image.shape[0], rate, codec, crf)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[: stream.height, : stream.width, :3]), format="bgr24")
            frame.pts = count
            container.mux(stream.encode(frame))
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    return count


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def publish(temp: Path, final: Path) -> None:
    """Rename a complete temporary file into place with ordinary permissions (mkstemp makes 0600)."""
    os.chmod(temp, 0o666 & ~UMASK)
    os.replace(temp, final)  # atomic: same folder


def container_format(path: Path) -> str:
    """The container for a file name; given explicitly because temporary names (".x.partial.mp4",
    mkstemp names) must still get the final file's format."""
    return {".mov": "mov", ".mkv": "matroska", ".webm": "webm"}.get(path.suffix.lower(), "mp4")
