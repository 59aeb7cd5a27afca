"""Records the output to an H.264 mp4 with PyAV: one frame per delivered frame, constant fps."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from facecast.configbase import StrictModel
from facecast.outputs.base import Output, flatten_alpha
from facecast.types import FramePacket, Image

log = logging.getLogger(__name__)


class RecordOutputConfig(StrictModel):
    type: Literal["record"] = "record"
    enabled: bool = False
    path: str = Field(
        "recordings/facecast-{time}.mp4",
        description="file to write; {time} becomes the start time (YYYYmmdd-HHMMSS)",
    )
    codec: Literal["libx264", "h264", "mpeg4"] = "libx264"
    crf: int = Field(20, ge=0, le=51, description="x264 quality: lower = better and bigger")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    fps: float | None = Field(None, gt=0, le=240, description="empty = the capture source's fps")
    background: tuple[int, int, int] = Field((0, 0, 0), description="BGR behind transparent pixels (mp4 has no alpha)")


def resolve_path(pattern: str) -> Path:
    return Path(pattern.replace("{time}", time.strftime("%Y%m%d-%H%M%S")))


class RecordOutput(Output):
    delivery = "every"  # a recording gets every delivered frame once, in order; never a repeat

    def __init__(self, name: str, cfg: RecordOutputConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.path = resolve_path(cfg.path)
        self._container = None
        self._stream = None
        self._opened = False
        self.frames = 0

    def open(self) -> None:
        if self._opened:  # reopened after a failure: never overwrite what was already recorded
            self.path = _unused(resolve_path(self.cfg.path))
        self._opened = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.parent.is_dir() or not _writable(self.path.parent):
            raise OSError(f"outputs.{self.name}.path: cannot write in {self.path.parent}")

    def _start(self, image: Image, source_fps: float) -> None:
        import av

        from facecast.media.video import add_video_stream, frame_rate

        fps = self.cfg.fps or source_fps or 30.0
        rate = frame_rate(fps)
        h, w = image.shape[:2]
        self._container = av.open(str(self.path), mode="w")
        stream = add_video_stream(self._container, w, h, rate, self.cfg.codec, self.cfg.crf, self.cfg.preset)
        self._stream = stream
        self.frames = 0
        log.info("record: writing %s (%dx%d, %s fps, %s)", self.path, stream.width, stream.height, rate, self.cfg.codec)

    def write(self, packet: FramePacket) -> None:
        import av

        if self._container is None:
            self._start(packet.image, packet.source_fps)
        stream = self._stream
        image = flatten_alpha(packet.image, self.cfg.background)[: stream.height, : stream.width]
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts = self.frames
        self._container.mux(stream.encode(frame))
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        try:
            self._container.mux(self._stream.encode(None))  # flush delayed frames
        except Exception:
            log.exception("record: flushing %s failed", self.path)
        finally:
            self._container.close()
            self._container = None
            log.info("record: %s closed with %d frames", self.path, self.frames)


def _writable(folder: Path) -> bool:
    import os

    return os.access(folder, os.W_OK)


def _unused(path: Path) -> Path:
    """`path`, or `name-2.mp4`, `name-3.mp4`... when it already exists."""
    n = 2
    candidate = path
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
