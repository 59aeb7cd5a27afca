"""The person mask for replace mode: MediaPipe Pose's own segmentation, thresholded and grown a
little so the model may redraw the outline (a character is rarely the performer's exact shape)."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np

from facecast.types import Image


def person_mask(segmentation: np.ndarray | None, width: int, height: int, grow: float = 0.02) -> Image:
    """uint8 mask, 255 where the person is (to be generated), 0 elsewhere (kept); `grow` is the
    margin as a fraction of the frame's long side. No segmentation: an empty mask."""
    if segmentation is None:
        return np.zeros((height, width), np.uint8)
    mask: Image = np.where(segmentation > 0.5, np.uint8(255), np.uint8(0))
    if mask.shape[:2] != (height, width):
        mask = cast(Image, cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST))
    radius = round(grow * max(width, height))
    if radius > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
        mask = cast(Image, cv2.dilate(mask, kernel))  # uint8 in, uint8 out
    return mask


def background(frame: Image, mask: Image) -> Image:
    """The frame with the masked person blacked out: what Wan-Animate keeps around the new character."""
    return np.where(mask[:, :, None] > 0, 0, frame).astype(np.uint8)
