"""Spout output (Windows only, SpoutGL): shares frames with OBS's "Spout2 Capture" source on the
same PC through the GPU, without compression.

SpoutGL needs an OpenGL context current in the thread that sends, or it falls back silently to a
slow CPU path: open() runs on the output's own thread (outputs/worker.py) and creates one there.
Frames go out as RGBA with straight alpha; set the Spout2 Capture source's composite mode to
match (see docs/OBS.md).
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from facecast.outputs.base import Output, flatten_alpha
from facecast.outputs.scaling import VideoOutputConfig, fit_into
from facecast.types import FramePacket

log = logging.getLogger(__name__)

GL_RGBA = 0x1908  # the OpenGL enum, fixed by the OpenGL specification (SpoutGL.enums.GL_RGBA)


class SpoutOutputConfig(VideoOutputConfig):
    type: Literal["spout"] = "spout"
    enabled: bool = False
    name: str = Field("facecast", min_length=1, max_length=255, description="Spout sender name shown in Spout2 Capture")
    alpha: bool = Field(True, description="send the effect's alpha (straight); false = opaque over background")
    background: tuple[int, int, int] = Field(
        (0, 0, 0), description="BGR of letterbox bars on opaque frames, and behind transparent pixels when alpha is off"
    )


def load_spout() -> Any:
    if sys.platform != "win32":
        raise RuntimeError(
            f"Spout is Windows-only (it shares GPU textures between Windows programs) and this is {sys.platform}; "
            "use an output of type ndi or virtualcam instead"
        )
    else:  # an else, not a fall-through, so type checkers off Windows do not call it unreachable
        try:
            import SpoutGL
        except ImportError as exc:
            raise RuntimeError(f"the Spout output needs SpoutGL: pip install SpoutGL ({exc})") from exc
        return SpoutGL


class SpoutOutput(Output):
    delivery = "paced"

    def __init__(self, name: str, cfg: SpoutOutputConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.fps = cfg.fps
        self._sender: Any = None
        self._bgra = np.zeros((cfg.height, cfg.width, 4), np.uint8)
        self._rgba = np.zeros_like(self._bgra)
        self._last_packet: FramePacket | None = None

    def open(self) -> None:
        spout = load_spout()
        sender = spout.SpoutSender()
        if not hasattr(sender, "createOpenGL"):
            raise RuntimeError("this SpoutGL cannot create its own OpenGL context: pip install -U SpoutGL")
        if not sender.createOpenGL():
            raise RuntimeError("Spout could not create an OpenGL context (is the graphics driver installed?)")
        sender.setSenderName(self.cfg.name)
        self._sender = sender
        self._last_packet = None
        log.info("Spout: sending as %r, %dx%d at %g fps", self.cfg.name, self.cfg.width, self.cfg.height, self.cfg.fps)

    def write(self, packet: FramePacket) -> None:
        if packet is not self._last_packet:
            image = packet.image
            if self.cfg.alpha and image.ndim == 3 and image.shape[2] == 4:
                fit_into(self._bgra, image, self.cfg.scaling, (0, 0, 0, 0))
            else:
                opaque = flatten_alpha(image, self.cfg.background) if image.ndim == 3 else image
                fit_into(self._bgra, opaque, self.cfg.scaling, (*self.cfg.background, 255))
            cv2.cvtColor(self._bgra, cv2.COLOR_BGRA2RGBA, dst=self._rgba)
            self._last_packet = packet
        # SpoutGL releases the GIL while it uploads; width then height, positionally.
        if not self._sender.sendImage(self._rgba, self.cfg.width, self.cfg.height, GL_RGBA, False, 0):
            raise RuntimeError("Spout refused the frame (sendImage returned false)")

    def close(self) -> None:
        sender, self._sender = self._sender, None
        if sender is None:
            return
        try:
            sender.releaseSender()
        finally:
            sender.closeOpenGL()
