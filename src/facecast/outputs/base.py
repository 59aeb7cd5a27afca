"""The output interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal, cast

import cv2
import numpy as np

from facecast.types import FramePacket, Image


class OutputUnavailable(RuntimeError):
    """This output cannot run on this machine (no display, missing runtime...): skip it, say why."""


# How frames reach an output; each output runs on its own thread (see outputs/worker.py):
#   paced  - live senders (NDI, Spout, virtual camera): the newest frame leaves at `fps` from absolute
#            deadlines; when no new frame is ready the last one is sent again. Never out of order.
#   latest - the newest frame as soon as it is ready, older unsent ones are skipped (preview window).
#   every  - every delivered frame, in order, through a bounded queue (recording): nothing repeated.
Delivery = Literal["paced", "latest", "every"]


class Output(ABC):
    delivery: Delivery = "latest"

    def __init__(self, name: str) -> None:
        self.name = name  # the key under `outputs:` in the config
        self.fps = 0.0  # paced outputs: the rate frames leave at
        # Set by the output stage: frames come from a file (every one arrives, none dropped upstream).
        self.source_lossless = False

    @property
    def kind(self) -> str:
        """The output's `type` in the config (ndi, record...)."""
        cfg = getattr(self, "cfg", None)
        return getattr(cfg, "type", type(self).__name__)

    def open(self) -> None:
        """Prepare. Raise OutputUnavailable to be skipped with a warning, anything else to stop start-up."""

    @abstractmethod
    def write(self, packet: FramePacket) -> None: ...

    def close(self) -> None:
        """Flush and release. Must not raise."""

    def stats(self) -> dict[str, Any]:
        """Extra figures for the stats (e.g. connected NDI receivers). Called from another thread:
        return cached values, never touch the backend here."""
        return {}


def flatten_alpha(image: Image, background: tuple[int, int, int] = (0, 0, 0)) -> Image:
    """BGRA (straight alpha) composited over a solid BGR colour; BGR images pass through.

    Outputs call this for every frame on their own threads: OpenCV's saturating uint8 arithmetic
    does it in a few SIMD passes with the GIL released (rounded to the nearest level).
    """
    if image.ndim == 3 and image.shape[2] == 4:
        colour = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
        alpha = cv2.cvtColor(np.ascontiguousarray(image[:, :, 3]), cv2.COLOR_GRAY2BGR)
        back = np.empty_like(colour)
        back[:] = background
        front = cv2.multiply(colour, alpha, scale=1.0 / 255.0)
        behind = cv2.multiply(back, cv2.bitwise_not(alpha), scale=1.0 / 255.0)
        return cast(Image, cv2.add(front, behind))  # uint8 in, uint8 out; cv2's stubs cannot say so
    return image
