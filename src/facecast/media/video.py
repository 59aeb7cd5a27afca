"""Write BGR frames to an H.264 file at a constant frame rate (PyAV)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, codec: str = "libx264", crf: int = 20) -> int:
    """Encode `frames` (HxWx3 BGR uint8) to `path`; returns the number of frames written."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    count = 0
    # The container format is given explicitly: temporary names such as ".x.partial.mp4" still end in .mp4,
    # but callers may pass other suffixes.
    with av.open(str(path), mode="w", format=_format_for(path)) as container:
        stream = None
        for image in frames:
            if stream is None:
                h, w = image.shape[:2]
                stream = container.add_stream(codec, rate=rate)
                stream.width, stream.height, stream.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
                if codec == "libx264":
                    stream.options = {"crf": str(crf), "preset": "veryfast"}
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


def _format_for(path: Path) -> str:
    return {".mov": "mov", ".mkv": "matroska", ".webm": "webm"}.get(path.suffix.lower(), "mp4")
