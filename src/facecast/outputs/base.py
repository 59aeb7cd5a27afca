"""The output interface."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from facecast.types import FramePacket, Image


class OutputUnavailable(RuntimeError):
    """This output cannot run on this machine (no display, missing runtime...): skip it, say why."""


class Output(ABC):
    def __init__(self, name: str) -> None:
        self.name = name  # the key under `outputs:` in the config

    def open(self) -> None:
        """Prepare. Raise OutputUnavailable to be skipped with a warning, anything else to stop start-up."""

    @abstractmethod
    def write(self, packet: FramePacket) -> None: ...

    def close(self) -> None:
        """Flush and release. Must not raise."""


def flatten_alpha(image: Image, background: tuple[int, int, int] = (0, 0, 0)) -> Image:
    """BGRA (straight alpha) composited over a solid BGR colour; BGR images pass through."""
    if image.ndim == 3 and image.shape[2] == 4:
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        bg = np.array(background, dtype=np.float32)
        return (image[:, :, :3].astype(np.float32) * alpha + bg * (1.0 - alpha)).astype(np.uint8)
    return image
