"""The size the effect works at (`pipeline.work_size`): a 1080p camera with 720p outputs costs what a
720p camera costs in the effect and the outputs.

Tracking always runs on the camera's full frame (MediaPipe crops the face itself, so a smaller
frame would save nothing there and could only cost accuracy). The effect stage then brings the frame
once to the working size, with the landmarks scaled to match, before an effect that reads the frame
works on it; each output then fits a frame that already has its size (a copy instead of a resize).

- `auto`: the size the outputs running now need. An output with its own size (NDI, Spout, virtual
  camera) needs the frame scaled to fit its box (letterbox) or to cover it (crop, stretch); a
  recording has no size of its own and keeps the camera's; the preview window (and the benchmark's
  null output) show what the others get and ask for nothing. The largest need wins; no sized output
  running = the camera's size. Followed live: starting a recording brings the full size back.
- `source`: the camera's size, always (the behaviour before work_size existed).
- `WIDTHxHEIGHT`: at most this box, aspect kept.

Never upscaled: the working size is at most the camera's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import cv2
import numpy as np

from facecast.outputs.scaling import VideoOutputConfig
from facecast.tracking.geometry import face_box
from facecast.types import Face, FramePacket, Image

WORK_SIZE_HELP = "auto (the size the running outputs need), source (the camera's size) or WIDTHxHEIGHT, e.g. 1280x720"
_BOX = re.compile(r"^([1-9][0-9]*)x([1-9][0-9]*)$")
MIN_SIDE = 64
# Outputs that show whatever frame the others get: they ask for no size of their own.
SIZELESS_VIEWERS = frozenset({"preview", "null"})


def check_work_size(value: str) -> str:
    """A `pipeline.work_size` value, or ValueError saying what is allowed."""
    if value in ("auto", "source"):
        return value
    match = _BOX.match(value)
    if match is None:
        raise ValueError(f"expected {WORK_SIZE_HELP}")
    if min(int(match[1]), int(match[2])) < MIN_SIDE:
        raise ValueError(f"WIDTHxHEIGHT must be at least {MIN_SIDE}x{MIN_SIDE}")
    return value


def output_scale(cfg: Any, width: int, height: int) -> float | None:
    """The scale a `width`x`height` frame needs for one output: None = nothing asked (a viewer),
    1.0 = the full frame (an output without a size of its own, such as a recording)."""
    if isinstance(cfg, VideoOutputConfig):
        fits = (cfg.width / width, cfg.height / height)
        return min(fits) if cfg.scaling == "letterbox" else max(fits)
    if getattr(cfg, "type", None) in SIZELESS_VIEWERS:
        return None
    return 1.0


def work_scale(setting: str, width: int, height: int, outputs: Iterable[Any]) -> float:
    """The scale (at most 1) a `width`x`height` frame is brought to, for `setting` and the running
    outputs' configs."""
    if setting == "source":
        return 1.0
    if setting == "auto":
        needs = [s for s in (output_scale(cfg, width, height) for cfg in outputs) if s is not None]
        return min(1.0, max(needs)) if needs else 1.0
    box_w, box_h = (int(v) for v in setting.split("x"))
    return min(1.0, box_w / width, box_h / height)


def work_size_for_outputs(outputs: Iterable[Any]) -> str:
    """`auto` for these output configs as an explicit setting (the bench, which replaces the outputs
    with a null one): `source` when one of them needs the full frame or none has a size, else the
    largest box (exactly what `auto` does for letterbox outputs)."""
    boxes: list[tuple[int, int]] = []
    for cfg in outputs:
        if isinstance(cfg, VideoOutputConfig):
            boxes.append((cfg.width, cfg.height))
        elif getattr(cfg, "type", None) not in SIZELESS_VIEWERS:
            return "source"
    if not boxes:
        return "source"
    width, height = max(boxes, key=lambda box: box[0] * box[1])
    return f"{width}x{height}"


def scale_face(face: Face, sx: float, sy: float, width: int, height: int) -> Face:
    """The face in a frame resized by (sx, sy) to width x height. Pose, eye and mouth openness are
    ratios and angles: the same at any size."""
    lm = face.landmarks * np.array([sx, sy, sx], np.float32)  # z is scaled like x (types.Landmarks)
    return Face(
        landmarks=lm,
        pose=face.pose,
        eye_openness=face.eye_openness,
        mouth_openness=face.mouth_openness,
        box=face_box(lm, width, height),
    )


def resize_frame(image: Image, size: tuple[int, int]) -> Image:
    """Shrink to `size` (width, height). Below 2x, bilinear reads 2x2 source pixels per output
    pixel, enough not to alias, at a fifth of INTER_AREA's cost on non-integer ratios (1080p to
    720p: about 3 ms against 15 ms on one core; 43 dB apart on a noisy frame). From 2x on,
    INTER_AREA averages every source pixel (and is fast at integer ratios)."""
    factor = image.shape[1] / size[0]
    interpolation = cv2.INTER_LINEAR if factor < 2 else cv2.INTER_AREA
    return cast(Image, cv2.resize(image, size, interpolation=interpolation))


@dataclass(slots=True)
class WorkSize:
    """Brings packets to the working size. `running` returns the running outputs by name (a mapping
    replaced, not changed, when one starts or stops: the size is worked out again only then);
    `configs` are the outputs' configs by name."""

    setting: str = "source"
    configs: Mapping[str, Any] | None = None
    running: Callable[[], Mapping[str, Any]] | None = None
    _seen: tuple[int, int, Mapping[str, Any] | None] | None = field(default=None, init=False)
    _size: tuple[int, int] = field(default=(0, 0), init=False)

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        running = self.running() if self.running is not None else None
        seen = self._seen
        if seen is None or seen[0] != width or seen[1] != height or seen[2] is not running:
            configs = self.configs or {}
            if running is not None:
                outputs = [configs[name] for name in running if name in configs]
            else:  # no output stage (tools, tests): the enabled outputs
                outputs = [cfg for cfg in configs.values() if getattr(cfg, "enabled", True)]
            scale = work_scale(self.setting, width, height, outputs)
            self._size = (max(1, round(width * scale)), max(1, round(height * scale)))
            self._seen = (width, height, running)  # holds the mapping: compared by identity, never reused
        return self._size

    def fit(self, packet: FramePacket) -> None:
        """The packet's image at the working size and its faces scaled to match (in place)."""
        height, width = packet.image.shape[:2]
        size = self.size_for(width, height)
        if size == (width, height):
            return
        packet.image = resize_frame(packet.image, size)
        if packet.faces:
            sx, sy = size[0] / width, size[1] / height
            packet.faces = [scale_face(face, sx, sy, size[0], size[1]) for face in packet.faces]


__all__ = [
    "WORK_SIZE_HELP",
    "WorkSize",
    "check_work_size",
    "output_scale",
    "resize_frame",
    "scale_face",
    "work_scale",
    "work_size_for_outputs",
]
