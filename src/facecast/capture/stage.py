"""The capture stage: picks the source, paces it, reopens it when it drops, stamps each packet."""

from __future__ import annotations

import logging
import threading
import time
from typing import Literal

from pydantic import Field, model_validator

from facecast.capture.camera import CameraConfig, CameraReader, quiet_opencv
from facecast.capture.reader import FrameReader
from facecast.capture.stream import StreamReader, UrlConfig
from facecast.capture.synthetic import SyntheticConfig, SyntheticReader
from facecast.capture.video_file import FileConfig, VideoFileReader
from facecast.configbase import StrictModel
from facecast.pipeline.stage import SourceStage, StartupError
from facecast.types import FramePacket

log = logging.getLogger(__name__)

SourceKind = Literal["auto", "camera", "file", "url", "synthetic"]
# A live source that fails again within this long of being reopened has not recovered: the next
# reopen waits longer (back-off kept across attempts), so a camera that opens but delivers nothing,
# or a stream that drops at once, cannot make the capture thread spin.
STABLE_S = 10.0


class ReconnectConfig(StrictModel):
    first_delay_s: float = Field(0.5, gt=0, description="wait before the first reopen attempt")
    max_delay_s: float = Field(8.0, gt=0, description="back-off doubles up to this")


class CaptureConfig(StrictModel):
    source: SourceKind = "auto"
    width: int = Field(1280, ge=64, le=7680)
    height: int = Field(720, ge=64, le=4320)
    fps: float = Field(60.0, gt=0, le=240)
    camera: CameraConfig = CameraConfig()
    file: FileConfig = FileConfig()
    url: UrlConfig = UrlConfig()
    synthetic: SyntheticConfig = SyntheticConfig()
    reconnect: ReconnectConfig = ReconnectConfig()

    @model_validator(mode="after")
    def _source_has_its_settings(self) -> CaptureConfig:
        if self.source == "file" and self.file.path is None:
            raise ValueError("capture.file.path must name a video file when capture.source is 'file'")
        if self.source == "url" and not self.url.url:
            raise ValueError("capture.url.url must be set when capture.source is 'url'")
        return self


def make_reader(cfg: CaptureConfig) -> FrameReader:
    """The reader for `capture.source`; `auto` = camera if one opens, else the synthetic driver."""
    if cfg.source == "camera":
        return CameraReader(cfg.camera, cfg.width, cfg.height, cfg.fps)
    if cfg.source == "file":
        return VideoFileReader(cfg.file)
    if cfg.source == "url":
        return StreamReader(cfg.url)
    if cfg.source == "synthetic":
        return SyntheticReader(cfg.synthetic, cfg.width, cfg.height, cfg.fps)
    camera = CameraReader(cfg.camera, cfg.width, cfg.height, cfg.fps)
    try:
        with quiet_opencv():
            camera.open()
        camera.close()
        log.info("capture: auto picked camera %d", cfg.camera.index)
        return camera
    except OSError as exc:
        log.info("capture: auto found no camera (%s); using the synthetic driver", exc)
        return SyntheticReader(cfg.synthetic, cfg.width, cfg.height, cfg.fps)


class CaptureStage(SourceStage):
    name = "capture"

    def __init__(self, reader: FrameReader, reconnect: ReconnectConfig | None = None) -> None:
        self.reader = reader
        self.lossless = reader.lossless
        self.reconnect = reconnect or ReconnectConfig()
        self._seq = 0
        self._next_due: float | None = None
        self._interrupt = threading.Event()
        self.reconnects = 0
        self._reopened_at: float | None = None  # monotonic time of the last successful reopen
        self._delay = self.reconnect.first_delay_s  # the wait before the next attempt

    def start(self) -> None:
        try:
            self.reader.open()
        except OSError as exc:
            raise StartupError(f"capture: {exc}") from exc
        log.info("capture: %s", self.reader.describe())

    def produce(self) -> FramePacket | None:
        self._pace()
        t0 = time.perf_counter_ns()
        frame = self.reader.read()
        while frame is None:
            if not self.reader.live:
                return None
            if not self._reopen():
                return None  # interrupted while reconnecting
            t0 = time.perf_counter_ns()
            frame = self.reader.read()
        self.last_read_ns = time.perf_counter_ns() - t0
        packet = FramePacket(
            seq=self._seq,
            image=frame.image,
            t_capture_ns=time.perf_counter_ns(),
            source_fps=self.reader.fps,
            truth=frame.truth,
        )
        self._seq += 1
        return packet

    def _pace(self) -> None:
        """Absolute deadlines for sources that do not pace themselves; no burst after a stall."""
        if self.reader.self_paced:
            return
        period = 1.0 / self.reader.fps
        now = time.perf_counter()
        if self._next_due is None or now - self._next_due > 3 * period:
            self._next_due = now  # first frame, or too late to catch up: restart the clock
        else:
            self._interrupt.wait(max(0.0, self._next_due - now))
        self._next_due += period

    def _reopen(self) -> bool:
        """Reopen with back-off; False when interrupted (shutdown). A source that failed again soon
        after the last reopen first waits the current delay, and the delay keeps doubling."""
        cfg = self.reconnect
        recovered = self._reopened_at is None or time.monotonic() - self._reopened_at >= STABLE_S
        if recovered:
            self._delay = cfg.first_delay_s
        log.warning(
            "capture: %s stopped delivering frames; reopening%s",
            self.reader.describe(),
            "" if recovered else f" in {self._delay:.1f} s (it failed again soon after the last reopen)",
        )
        self.reader.close()
        if not recovered:
            if self._interrupt.wait(self._delay):
                return False
            self._delay = min(self._delay * 2, cfg.max_delay_s)
        while not self._interrupt.is_set():
            try:
                self.reader.open()
                self.reconnects += 1
                self._reopened_at = time.monotonic()
                log.info("capture: %s is back", self.reader.describe())
                self._next_due = None
                return True
            except OSError as exc:
                log.warning("capture: reopen failed (%s); next try in %.1f s", exc, self._delay)
            if self._interrupt.wait(self._delay):
                break
            self._delay = min(self._delay * 2, cfg.max_delay_s)
        return False

    def interrupt(self) -> None:
        self._interrupt.set()

    def close(self) -> None:
        self.reader.close()
