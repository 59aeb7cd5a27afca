"""Records the output to an H.264 file with PyAV: every delivered frame, in a constant-rate time base.

Frames from a live source are placed by their capture time (`timing: auto`), so a recording made
while the pipeline dropped frames still plays at real speed (the previous frame is held through
the gap); frames from a file follow one another.

The file is crash-safe while it is written (fragmented MP4/MOV, or Matroska for .mkv): a crash, a
power cut or a kill leaves a file that plays up to about `fragment_s` plus the encoder's delay
before the end. At a clean stop it is remuxed into an ordinary MP4 (`remux_to_mp4`, as OBS offers),
on this output's own thread; the crash-safe file is removed only once the MP4 is complete.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from facecast.configbase import StrictModel
from facecast.media.video import (
    CRASH_SAFE_SUFFIXES,
    FRAGMENT_S,
    RemuxAbandoned,
    VideoFileWriter,
    WrittenVideo,
    remux_to_mp4,
)
from facecast.outputs.base import Output, flatten_alpha
from facecast.types import FramePacket

log = logging.getLogger(__name__)


class RecordOutputConfig(StrictModel):
    type: Literal["record"] = "record"
    enabled: bool = False
    path: str = Field(
        "recordings/facecast-{time}.mp4",
        description="file to write (.mp4, .mov or .mkv); {time} becomes the start time (YYYYmmdd-HHMMSS)",
    )
    codec: Literal["libx264", "h264", "mpeg4"] = "libx264"
    crf: int = Field(20, ge=0, le=51, description="x264 quality: lower = better and bigger")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "veryfast"
    fps: float | None = Field(None, gt=0, le=240, description="empty = the capture source's fps")
    background: tuple[int, int, int] = Field((0, 0, 0), description="BGR behind transparent pixels (mp4 has no alpha)")
    fragment_s: float = Field(
        FRAGMENT_S, ge=0.1, le=10.0, description="crash safety: the file is written out this often while recording"
    )
    timing: Literal["auto", "capture", "frames"] = Field(
        "auto",
        description="where each frame goes in the file: capture = at its capture time, so the file plays at real "
        "speed even when the pipeline dropped frames; frames = one after another; auto = capture for live "
        "sources (camera, URL, synthetic), frames for files (every frame arrives)",
    )
    remux_to_mp4: bool = Field(True, description="at a clean stop, rewrite the recording as an ordinary MP4")

    @field_validator("path")
    @classmethod
    def _known_container(cls, value: str) -> str:
        if Path(value).suffix.lower() not in CRASH_SAFE_SUFFIXES:
            raise ValueError(f"must end in {', '.join(CRASH_SAFE_SUFFIXES)} (the containers that survive a crash)")
        return value


def resolve_path(pattern: str) -> Path:
    return Path(pattern.replace("{time}", time.strftime("%Y%m%d-%H%M%S")))


class RecordOutput(Output):
    delivery = "every"  # a recording gets every delivered frame once, in order; never a repeat

    def __init__(self, name: str, cfg: RecordOutputConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.path = resolve_path(cfg.path)
        self._writer: VideoFileWriter | None = None
        self._give_up = threading.Event()
        self._finished: list[WrittenVideo] = []
        self._first_capture_ns: int | None = None

    def open(self) -> None:
        # Every start and every reopen after a failure gets a file of its own: never overwrite a recording.
        self.path = _unused(resolve_path(self.cfg.path))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.parent.is_dir() or not os.access(self.path.parent, os.W_OK):
            raise OSError(f"outputs.{self.name}.path: cannot write in {self.path.parent}")

    def write(self, packet: FramePacket) -> None:
        if self._writer is None:
            fps = self.cfg.fps or packet.source_fps or 30.0
            self._writer = VideoFileWriter(
                self.path,
                fps,
                codec=self.cfg.codec,
                crf=self.cfg.crf,
                preset=self.cfg.preset,
                crash_safe=True,
                fragment_s=self.cfg.fragment_s,
            )
        writer = self._writer
        writer.write(flatten_alpha(packet.image, self.cfg.background), self._slot(packet, float(writer.rate)))
        if writer.frames == 1:
            log.info(
                "record: writing %s (%s, %s fps, %s, crash-safe)",
                self.path,
                "x".join(map(str, writer.size or ())),
                writer.rate,
                self.cfg.codec,
            )

    def _slot(self, packet: FramePacket, rate: float) -> int | None:
        """The frame's place in the file by its capture time (live sources), or None: the next one."""
        timing = self.cfg.timing
        if timing == "frames" or (timing == "auto" and self.source_lossless):
            return None
        if self._first_capture_ns is None:
            self._first_capture_ns = packet.t_capture_ns
        return round((packet.t_capture_ns - self._first_capture_ns) * rate / 1e9)

    def close(self) -> None:
        writer, self._writer = self._writer, None
        self._first_capture_ns = None
        if writer is None:
            return
        try:
            video = writer.close()  # flushes the encoder's delayed frames
        except Exception:
            log.exception("record: flushing %s failed; the file plays up to its last fragment", self.path)
            video = WrittenVideo(writer.path, writer.frames, round(writer.duration_s, 3), "end not flushed")
        if self.cfg.remux_to_mp4:
            video = self._remux(video)
        self._finished.append(video)
        log.info("record: finalised %s", video.describe())

    def _remux(self, video: WrittenVideo) -> WrittenVideo:
        src = video.path
        dst = src if src.suffix.lower() == ".mp4" else _unused(src.with_suffix(".mp4"))
        t0 = time.monotonic()
        try:
            remux_to_mp4(src, dst, self._give_up)
        except RemuxAbandoned:
            log.warning(
                "record: remux to MP4 stopped at the shutdown limit; %s stays crash-safe (it plays as it is; "
                "`ffmpeg -i %s -c copy out.mp4` makes an ordinary MP4 of it)",
                src,
                src,
            )
            return WrittenVideo(src, video.frames, video.duration_s, "crash-safe, remux to MP4 not finished")
        except Exception as exc:
            log.error(
                "record: remux of %s to MP4 failed (%s); the crash-safe file is kept and plays as it is", src, exc
            )
            return WrittenVideo(src, video.frames, video.duration_s, "crash-safe, remux to MP4 failed")
        if dst != src:
            src.unlink(missing_ok=True)  # only now that the MP4 is complete
        log.debug("record: remuxed %s in %.2f s", dst, time.monotonic() - t0)
        return WrittenVideo(dst, video.frames, video.duration_s, "remuxed to MP4")

    # -- what the worker asks at shutdown ------------------------------------------------------------
    def written(self) -> list[WrittenVideo]:
        """The files this output finished, in order."""
        return list(self._finished)

    def abandon(self) -> None:
        """The shutdown limit is reached: stop a remux under way (the crash-safe file stays)."""
        self._give_up.set()


def _unused(path: Path) -> Path:
    """`path`, or `name-2.mp4`, `name-3.mp4`... when it (or its remuxed .mp4) already exists."""
    n = 2
    candidate = path
    while candidate.exists() or candidate.with_suffix(".mp4").exists():
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        n += 1
    return candidate
