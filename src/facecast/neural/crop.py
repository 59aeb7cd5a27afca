"""Face crops from MediaPipe landmarks by LivePortrait's crop rule, and pasting a crop back."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np

from facecast.effects.warp import FACE_OVAL
from facecast.tracking.geometry import (
    EYE_L_BOTTOM,
    EYE_L_INNER,
    EYE_L_OUTER,
    EYE_L_TOP,
    EYE_R_BOTTOM,
    EYE_R_INNER,
    EYE_R_OUTER,
    EYE_R_TOP,
    LIP_BOTTOM_INNER,
    LIP_TOP_INNER,
)
from facecast.types import Image, Landmarks

# The face extent LivePortrait's crop rule is calibrated on: its landmark sets run from the brows to
# the chin and ear to ear, with no forehead. MediaPipe's mesh also covers the forehead, which would
# make every crop ~20% looser, so the box is taken over the matching MediaPipe points: the face oval
# from temple to temple round the chin, and both brows.
FACE_OVAL_BELOW_BROWS = FACE_OVAL[FACE_OVAL.index(356) : FACE_OVAL.index(127) + 1]  # temple to temple
BROWS = [70, 63, 105, 66, 107, 55, 65, 52, 53, 46, 300, 293, 334, 296, 336, 285, 295, 282, 283, 276]
CROP_POINTS = np.array(FACE_OVAL_BELOW_BROWS + BROWS)
EYE_L = [EYE_L_OUTER, EYE_L_TOP, EYE_L_INNER, EYE_L_BOTTOM]
EYE_R = [EYE_R_INNER, EYE_R_TOP, EYE_R_OUTER, EYE_R_BOTTOM]


def crop_anchors(landmarks: Landmarks) -> tuple[np.ndarray, np.ndarray]:
    """The two points that orient the crop: the centre between the eyes (eye contours, not the irises,
    so gaze does not move the crop) and the centre of the mouth."""
    pts = landmarks[:, :2].astype(np.float64)
    eyes = (pts[EYE_L].mean(axis=0) + pts[EYE_R].mean(axis=0)) / 2
    mouth = (pts[LIP_TOP_INNER] + pts[LIP_BOTTOM_INNER]) / 2
    return eyes, mouth


def crop_transform(landmarks: Landmarks, size: int, scale: float, vy_ratio: float) -> np.ndarray:
    """2x3 matrix from image to a `size` square crop around the face, by LivePortrait's crop rule.

    The crop's vertical axis runs from the eyes' centre to the mouth's (so roll is undone); its side
    is `scale` times the larger side of the face box in that frame; its centre is the box centre
    moved along that axis by `vy_ratio` times the crop side (negative = towards the forehead).
    LivePortrait: source 2.3 / -0.125, driving 2.2 / -0.1.
    """
    eyes, mouth = crop_anchors(landmarks)
    uy = mouth - eyes
    length = float(np.hypot(*uy))
    uy = uy / length if length > 1e-3 else np.array([0.0, 1.0])
    ux = np.array([uy[1], -uy[0]])
    axes = np.stack([ux, uy])  # rows: the crop's x and y axes in the image
    pts = landmarks[CROP_POINTS, :2].astype(np.float64)
    origin = pts.mean(axis=0)
    local = (pts - origin) @ axes.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    side = float(max(hi - lo)) * scale
    centre = origin + ((lo + hi) / 2) @ axes + uy * (vy_ratio * side)
    k = size / side
    m = np.zeros((2, 3))
    m[:, :2] = k * axes
    m[:, 2] = size / 2 - k * (axes @ centre)
    return m


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


def warp_crop(image: Image, m: np.ndarray, size: int) -> Image:
    crop = cv2.warpAffine(
        image,
        m,
        (size, size),
        flags=cv2.INTER_AREA if m[0, 0] < 1 else cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return cast(Image, crop)  # cv2 keeps the uint8 input's dtype, which its stubs cannot express


def paste_region(m_c2o: np.ndarray, size: int, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
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
    alpha = cv2.warpAffine(mask, local, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0,))[..., None]
    region = base[y0:y1, x0:x1, :3].astype(np.float32)
    blended = alpha * warped[..., :3].astype(np.float32) + (1 - alpha) * region
    base[y0:y1, x0:x1, :3] = (blended + 0.5).astype(np.uint8)  # rounded, not truncated (no -0.5 level bias)
    return base


def feathered_mask(size: int, inner: float = 0.82, blur: float = 0.08) -> np.ndarray:
    """A soft rounded-square mask for a face crop: 1 in the middle, fading to 0 at the edges."""
    mask = np.zeros((size, size), np.float32)
    margin = int(size * (1 - inner) / 2)
    cv2.rectangle(mask, (margin, margin), (size - margin, size - margin), (1.0,), -1)
    k = int(size * blur) | 1
    return cv2.GaussianBlur(mask, (k * 2 + 1, k * 2 + 1), 0)
