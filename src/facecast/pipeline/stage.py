"""The one override point of a stage. Threads, queues and timing live in the runner."""

from __future__ import annotations

from abc import ABC, abstractmethod

from facecast.types import FramePacket


class StartupError(RuntimeError):
    """A stage cannot start (missing file, bad device...). The message is for the streamer."""


class Stage(ABC):
    """Takes a packet, returns it (changed) or None to drop it.

    `start()` and `close()` run in the stage's own thread, so a stage may hold thread-bound
    resources (MediaPipe graphs, OpenGL contexts, encoders).
    """

    name: str = "stage"

    def start(self) -> None:
        """Open resources. Raise StartupError with a clear sentence when that is impossible."""

    @abstractmethod
    def process(self, packet: FramePacket) -> FramePacket | None: ...

    def close(self) -> None:
        """Release resources. Must not raise."""


class SourceStage(ABC):
    """The first stage: produces packets instead of receiving them."""

    name: str = "capture"
    # True for files: every frame matters, so downstream queues block instead of dropping.
    lossless: bool = False
    # How long the last produce() spent reading the frame, pacing waits excluded (for the stats).
    last_read_ns: int = 0

    def start(self) -> None:
        """Open the source. Raise StartupError when it cannot be opened."""

    @abstractmethod
    def produce(self) -> FramePacket | None:
        """Block until the next frame is due; None at the end of the stream."""

    def interrupt(self) -> None:
        """Ask a blocking produce() to return soon (shutdown). Optional."""

    def close(self) -> None:
        """Release the source. Must not raise."""
