"""What every frame source implements; the capture stage does pacing, reconnects and packets."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from facecast.types import Image, SyntheticTruth


@dataclass(slots=True)
class CapturedFrame:
    image: Image
    truth: SyntheticTruth | None = None


class FrameReader(ABC):
    # Reopened with back-off when it fails mid-run (cameras, network streams).
    live: bool = False
    # Delivers frames at its own rate (a camera). Otherwise the capture stage paces it at `fps`.
    self_paced: bool = False
    # Every frame matters (files): downstream queues block instead of dropping.
    lossless: bool = False
    fps: float = 30.0
    # FFmpeg's decoding threads once open (files, streams: capture/decoder.py); 0 = not decoded by FFmpeg.
    decoder_threads: int = 0

    @abstractmethod
    def open(self) -> None:
        """Open the device or file; raise OSError with a sentence for the streamer on failure."""

    @abstractmethod
    def read(self) -> CapturedFrame | None:
        """The next frame; None when the device failed (live) or the stream ended (file)."""

    def close(self) -> None:
        """Release the device. Must not raise."""

    @abstractmethod
    def describe(self) -> str: ...
