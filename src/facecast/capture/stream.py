"""A network stream (RTSP, HTTP, SRT...) through OpenCV's FFmpeg backend.

Opening and each read are bounded (`open_timeout_s`, `read_timeout_s`): a camera that went away
makes `read()` fail, and the capture stage reopens it with back-off, instead of hanging the
capture thread. Credentials in the address (rtsp://user:password@host/...) never appear in logs,
status lines or errors: everything this reader says goes through `redact_url`.
"""

from __future__ import annotations

import re
from typing import cast

import cv2
from pydantic import Field

from facecast.capture.decoder import DecoderThreads, decoding_threads, open_ffmpeg, threads_note
from facecast.capture.reader import CapturedFrame, FrameReader
from facecast.configbase import StrictModel
from facecast.types import Image


class UrlConfig(StrictModel):
    url: str | None = Field(None, description="stream address, e.g. rtsp://192.168.1.20:8554/cam")
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="give up opening the stream after this long")
    read_timeout_s: float = Field(
        5.0, gt=0, le=300, description="a frame not read within this long = the stream dropped"
    )
    decoder_threads: DecoderThreads = "auto"


# user:password@ (or user@) after the scheme, and secret-looking query parameters.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s?#]+@")
_SECRET_PARAM = re.compile(r"(?P<key>[?&](?:password|passwd|pwd|pass|token|key|auth|secret)=)[^&#\s]*", re.IGNORECASE)


def redact_url(text: str) -> str:
    """`text` with any credentials of the URLs in it replaced by ***: rtsp://***@host/cam."""
    return _SECRET_PARAM.sub(r"\g<key>***", _USERINFO.sub(r"\g<scheme>***@", text))


class StreamReader(FrameReader):
    live = True
    self_paced = True

    def __init__(self, cfg: UrlConfig) -> None:
        if not cfg.url:
            raise OSError("capture.url.url is not set: give the stream address")
        self.url = cfg.url
        self.safe_url = redact_url(cfg.url)
        self.cfg = cfg
        self._cap: cv2.VideoCapture | None = None

    def open(self) -> None:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            round(self.cfg.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            round(self.cfg.read_timeout_s * 1000),
        ]
        cap = open_ffmpeg(self.url, self.cfg.decoder_threads, params)
        if not cap.isOpened():
            cap.release()
            raise OSError(
                f"stream {self.safe_url} did not open (within capture.url.open_timeout_s = "
                f"{self.cfg.open_timeout_s:g} s)"
            )
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 240 else 30.0
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self.decoder_threads = decoding_threads(cap)
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
        return f"stream {self.safe_url}{threads_note(self.decoder_threads)}"
