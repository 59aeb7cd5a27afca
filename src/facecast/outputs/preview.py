"""A local preview window (OpenCV). Skipped with a warning when there is no display."""

from __future__ import annotations

import os
import sys
from typing import Literal

import cv2
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.outputs.base import Output, OutputUnavailable, flatten_alpha
from facecast.types import FramePacket


class PreviewOutputConfig(StrictModel):
    type: Literal["preview"] = "preview"
    enabled: bool = True
    title: str = Field("facecast preview", min_length=1)
    background: tuple[int, int, int] = Field((0, 177, 64), description="BGR shown behind transparent pixels")


def display_available() -> bool:
    if sys.platform.startswith("linux"):
        # OpenCV's Qt ships only its X11 plugin: on Wayland it needs XWayland's DISPLAY, and without
        # one Qt aborts the whole process instead of failing to open a window.
        return bool(os.environ.get("DISPLAY"))
    else:  # an else, not a fall-through, so type checkers on Linux do not call it unreachable
        return True


class PreviewOutput(Output):
    def __init__(self, name: str, cfg: PreviewOutputConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self._window_open = False

    def open(self) -> None:
        if not display_available():
            raise OutputUnavailable("no X11 display (DISPLAY unset; under Wayland the window needs XWayland)")

    def write(self, packet: FramePacket) -> None:
        if not self._window_open:
            cv2.namedWindow(self.cfg.title, cv2.WINDOW_NORMAL)
            self._window_open = True
        cv2.imshow(self.cfg.title, flatten_alpha(packet.image, self.cfg.background))
        cv2.waitKey(1)  # lets the window paint; key handling is the hotkeys' job

    def close(self) -> None:
        if self._window_open:
            try:
                cv2.destroyWindow(self.cfg.title)
                cv2.waitKey(1)
            except cv2.error:
                pass  # the window was already closed by the user
            self._window_open = False
