"""Face crops from MediaPipe landmarks: a similarity transform that levels the eyes."""

from __future__ import annotations

import math

import cv2
import numpy as np

from facecast.tracking.geometry import EYE_L_INNER, EYE_L_OUTER, EYE_R_INNER, EYE_R_OUTER
from facecast.types import Image, Landmarks


def crop_transform(landmarks: Landmarks, size: int, scale: float, vy_offset: float) -> np.ndarray:
    """2x3 matrix from image to a `size` square crop around the face.

    `scale` = crop side / face size; `vy_offset` moves the centre by that fraction of the face
    size, upward positive (LivePortrait: source 2.3 / -0.125, driving 2.2 / -0.1).
    """
    pts = landmarks[:, :2].astype(np.float64)
    left = pts[[EYE_L_OUTER, EYE_L_INNER]].mean(axis=0)
    right = pts[[EYE_R_INNER, EYE_R_OUTER]].mean(axis=0)
    angle = math.atan2(right[1] - left[1], right[0] - left[0])  # eye line vs horizontal
    c, s = math.cos(-angle), math.sin(-angle)
    rot = np.array([[c, -s], [s, c]])
    centre = pts.mean(axis=0)
    level = (pts - centre) @ rot.T  # landmarks with the eyes level
    lo, hi = level.min(axis=0), level.max(axis=0)
    face_size = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    box_centre = (lo + hi) / 2 + np.array([0.0, -vy_offset * face_size])  # image y points down
    k = size / (face_size * scale)
    m = np.zeros((2, 3))
    m[:, :2] = k * rot
    m[:, 2] = size / 2 - k * (rot @ centre + box_centre)
    return m


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


def warp_crop(image: Image, m: np.ndarray, size: int) -> Image:
    return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def paste_region(m_c2o: np.ndarray, size: int, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1) in the image that a `size` crop covers: only it is touched on paste."""
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ m_c2o.T
    h, w = shape
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def paste_into(base: Image, patch: Image, mask: np.ndarray, m_c2o: np.ndarray) -> Image:
    """Blend a crop-space `patch` (with its [0,1] `mask`) back into `base`, inside the crop's box only."""
    size = patch.shape[0]
    box = paste_region(m_c2o, size, base.shape[:2])
    if box is None:
        return base
    x0, y0, x1, y1 = box
    local = m_c2o.copy()
    local[:, 2] -= (x0, y0)  # same transform, into the box's own coordinates
    w, h = x1 - x0, y1 - y0
    warped = cv2.warpAffine(patch, local, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, local, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    region = base[y0:y1, x0:x1, :3].astype(np.float32)
    base[y0:y1, x0:x1, :3] = (alpha * warped[..., :3].astype(np.float32) + (1 - alpha) * region).astype(np.uint8)
    return base


def feathered_mask(size: int, inner: float = 0.82, blur: float = 0.08) -> np.ndarray:
    """A soft rounded-square mask for a face crop: 1 in the middle, fading to 0 at the edges."""
    mask = np.zeros((size, size), np.float32)
    margin = int(size * (1 - inner) / 2)
    cv2.rectangle(mask, (margin, margin), (size - margin, size - margin), 1.0, -1)
    k = int(size * blur) | 1
    return cv2.GaussianBlur(mask, (k * 2 + 1, k * 2 + 1), 0)
