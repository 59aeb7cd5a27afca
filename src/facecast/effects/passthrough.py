"""The camera frame as it is."""

from __future__ import annotations

from facecast.effects.base import Effect
from facecast.types import FramePacket, Image


class Passthrough(Effect):
    name = "passthrough"

    def apply(self, packet: FramePacket) -> Image:
        return packet.image
