"""A local camera through OpenCV, by index."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, cast

import cv2
from pydantic import Field

from facecast.capture.reader import CapturedFrame, FrameReader
from facecast.configbase import StrictModel
from facecast.types import Image

log = logging.getLogger(__name__)

_APIS = {
    "any": cv2.CAP_ANY,
    "v4l2": cv2.CAP_V4L2,
    "dshow": cv2.CAP_DSHOW,
    "msmf": cv2.CAP_MSMF,
    "avfoundation": cv2.CAP_AVFOUNDATION,
}


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log while probing cameras that may not exist (it prints an ERROR line
    for every missing index); the probe's result is reported by facecast itself."""
    previous = cv2.getLogLevel()
    cv2.setLogLevel(0)  # LOG_LEVEL_SILENT
    try:
        yield
    finally:
        cv2.setLogLevel(previous)


class CameraConfig(StrictModel):
    index: int = Field(0, ge=0, description="camera number as the OS lists it (0 = first camera)")
    mjpg: bool = Field(True, description="ask for MJPG: most USB cameras need it for 720p60/1080p60")
    api: Literal["any", "v4l2", "dshow", "msmf", "avfoundation"] = "any"


class CameraReader(FrameReader):
    live = True
    self_paced = True

    def __init__(self, cfg: CameraConfig, width: int, height: int, fps: float) -> None:
        self.cfg = cfg
        self.width, self.height, self.fps = width, height, fps
        self._cap: cv2.VideoCapture | None = None
        self.fourcc = ""

    def open(self) -> None:
        api = _APIS[self.cfg.api]
        if api == cv2.CAP_ANY and sys.platform == "win32":
            api = cv2.CAP_DSHOW  # MSMF opens cameras slowly and often ignores MJPG on Windows
        cap = cv2.VideoCapture(self.cfg.index, api)
        if not cap.isOpened():
            cap.release()
            raise OSError(f"camera {self.cfg.index} did not open (is it in use by another program?)")
        if self.cfg.mjpg:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*"MJPG"))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a backlog
        ok, frame = cap.read()
        if not ok or frame is None:
            cap.release()
            raise OSError(f"camera {self.cfg.index} opened but gave no frame")
        code = int(cap.get(cv2.CAP_PROP_FOURCC))
        self.fourcc = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00")
        got_fps = cap.get(cv2.CAP_PROP_FPS) or self.fps
        h, w = frame.shape[:2]
        if (w, h) != (self.width, self.height) or abs(got_fps - self.fps) > 0.5:
            log.warning(
                "camera %d gives %dx%d at %.1f fps (asked for %dx%d at %.1f)",
                self.cfg.index,
                w,
                h,
                got_fps,
                self.width,
                self.height,
                self.fps,
            )
        self.fps = float(got_fps)
        self._cap = cap

    def read(self) -> CapturedFrame | None:
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        # VideoCapture gives uint8 BGR frames; cv2's stubs type them as any numeric array
        return CapturedFrame(cast(Image, frame)) if ok and frame is not None else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def describe(self) -> str:
        return f"camera {self.cfg.index} ({self.fourcc or 'unknown format'}, {self.fps:.0f} fps)"
