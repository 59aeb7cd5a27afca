"""A video file played as a camera: paced at its own fps (or as fast as possible), looped or not."""

from __future__ import annotations

from pathlib import Path
from typing import cast

import cv2
from pydantic import Field

from facecast.capture.decoder import DecoderThreads, decoding_threads, open_ffmpeg, threads_note
from facecast.capture.reader import CapturedFrame, FrameReader
from facecast.configbase import StrictModel
from facecast.types import Image


class FileConfig(StrictModel):
    path: Path | None = Field(None, description="video file to play as the camera")
    loop: bool = Field(True, description="start again at the end instead of stopping")
    realtime: bool = Field(True, description="play at the file's fps; false = as fast as the pipeline goes")
    decoder_threads: DecoderThreads = "auto"


class VideoFileReader(FrameReader):
    lossless = True

    def __init__(self, cfg: FileConfig) -> None:
        if cfg.path is None:
            raise OSError("capture.file.path is not set: name the video file to play")
        self.path = Path(cfg.path)
        self.cfg = cfg
        self.self_paced = not cfg.realtime  # not paced = read as fast as the queues take frames
        self._cap: cv2.VideoCapture | None = None
        self.frame_count = 0

    def open(self) -> None:
        if not self.path.is_file():
            raise OSError(f"capture.file.path: no such file: {self.path}")
        cap = open_ffmpeg(str(self.path), self.cfg.decoder_threads)
        ok, first = cap.read() if cap.isOpened() else (False, None)
        if not ok or first is None:
            cap.release()
            raise OSError(f"capture.file.path: {self.path} is not a video OpenCV can decode")
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and fps > 0 else 30.0
        self.frame_count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.decoder_threads = decoding_threads(cap)
        self._cap = cap

    def read(self) -> CapturedFrame | None:
        if self._cap is None:
            return None
        ok, frame = self._cap.read()
        if not ok and self.cfg.loop:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = self._cap.read()
        # VideoCapture gives uint8 BGR frames; cv2's stubs type them as any numeric array
        return CapturedFrame(cast(Image, frame)) if ok and frame is not None else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def describe(self) -> str:
        play = "looped" if self.cfg.loop else "once"
        return f"file {self.path} ({self.fps:.2f} fps, {play}{threads_note(self.decoder_threads)})"
