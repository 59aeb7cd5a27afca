"""A network stream (RTSP, HTTP, SRT...) through OpenCV's FFmpeg backend."""

from __future__ import annotations

import cv2
from pydantic import Field

from facecast.capture.reader import CapturedFrame, FrameReader
from facecast.configbase import StrictModel


class UrlConfig(StrictModel):
    url: str | None = Field(None, description="stream address, e.g. rtsp://192.168.1.20:8554/cam")


class StreamReader(FrameReader):
    live = True
    self_paced = True

    def __init__(self, cfg: UrlConfig) -> None:
        if not cfg.url:
            raise OSError("capture.url.url is not set: give the stream address")
        self.url = cfg.url
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise OSError(f"stream {self.url} did not open")
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 240 else 30.0
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def read(self) -> CapturedFrame | None:
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        return CapturedFrame(frame) if ok and frame is not None else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def describe(self) -> str:
        return f"stream {self.url}"
