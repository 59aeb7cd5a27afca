"""A video's frames, its exact frame rate and whether it has audio (PyAV)."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from facecast.types import Image


@dataclass(slots=True)
class SourceVideo:
    frames: list[Image]  # BGR, in order
    rate: Fraction  # frames per second, exactly as the file says (30000/1001 stays that)
    has_audio: bool


def read_video(path: Path, max_frames: int | None = None) -> SourceVideo:
    """Every frame of `path` (or the first `max_frames`); ValueError when nothing can be decoded."""
    import av

    frames: list[Image] = []
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        has_audio = bool(container.streams.audio)
        for frame in container.decode(stream):
            frames.append(cast(Image, frame.to_ndarray(format="bgr24")))
            if max_frames is not None and len(frames) >= max_frames:
                break
    if not frames:
        raise ValueError(f"{path.name}: no video frame could be decoded")
    return SourceVideo(frames, Fraction(rate), has_audio)


def fill_size(image: Image, width: int, height: int) -> Image:
    """`image` scaled to cover width x height and cut at the centre: no bars, no stretching."""
    h, w = image.shape[:2]
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    resized = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    x, y = (sw - width) // 2, (sh - height) // 2
    return np.ascontiguousarray(resized[y : y + height, x : x + width])


def model_size(width: int, height: int, long_side: int = 832, multiple: int = 16) -> tuple[int, int]:
    """The source's aspect at a model's size: the long side `long_side`, both multiples of `multiple`."""
    scale = long_side / max(width, height)
    return (
        max(multiple, round(width * scale / multiple) * multiple),
        max(multiple, round(height * scale / multiple) * multiple),
    )
