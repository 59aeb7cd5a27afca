"""The effect interface: a frame packet in, the image to send out."""

from __future__ import annotations

from abc import ABC, abstractmethod

from facecast.types import FramePacket, Image


class Effect(ABC):
    name: str = "effect"
    # False for an effect that uses only the landmarks and renders at its own size: the effect stage
    # then does not resize the camera frame to the working size for it (pipeline.work_size).
    reads_frame: bool = True

    def start(self) -> None:
        """Load what the effect needs: the configured effect in the effect thread before the first frame; an
        effect switched to later on the effect stage's loader thread, while the current one keeps running."""

    @abstractmethod
    def apply(self, packet: FramePacket) -> Image:
        """The output image for this packet: BGR, or BGRA with straight alpha."""

    def close(self) -> None:
        """Release resources. Must not raise."""
