"""Discards frames: for benchmarks and smoke runs that measure the pipeline, not an output."""

from __future__ import annotations

from typing import Literal

from facecast.configbase import StrictModel
from facecast.outputs.base import Output
from facecast.types import FramePacket


class NullOutputConfig(StrictModel):
    type: Literal["null"] = "null"
    enabled: bool = False


class NullOutput(Output):
    delivery = "every"

    def __init__(self, name: str, cfg: NullOutputConfig) -> None:
        super().__init__(name)
        self.frames = 0

    def write(self, packet: FramePacket) -> None:
        self.frames += 1
