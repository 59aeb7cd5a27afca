"""Face crops: a square around the performer's face on every frame, from facecast's own face
mesh tracking; a frame where the face is lost keeps the last box (the motion encoder wants one
crop per frame)."""

from __future__ import annotations

from typing import cast

import cv2
import numpy as np

from facecast.types import Image

MARGIN = 1.5  # crop side / the larger side of the landmarks' box: the whole head, some hair


def face_square(landmarks: np.ndarray, margin: float = MARGIN) -> tuple[float, float, float]:
    """Centre x, y and side of the square crop around 478 landmarks."""
    lo, hi = landmarks[:, :2].min(axis=0), landmarks[:, :2].max(axis=0)
    cx, cy = (lo + hi) / 2
    return float(cx), float(cy), float(max(hi - lo) * margin)


def crop_square(image: Image, box: tuple[float, float, float], size: int) -> Image:
    """The square `box` of `image` resized to size x size; edges repeated where it leaves the frame."""
    cx, cy, side = box
    scale = size / side
    m = np.array([[scale, 0, size / 2 - cx * scale], [0, scale, size / 2 - cy * scale]], np.float32)
    crop = cv2.warpAffine(image[:, :, :3], m, (size, size), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    return cast(Image, crop)  # warpAffine keeps the uint8 input's dtype


class FaceCropper:
    """Face mesh in video mode on frames in order; `crop` returns None until a face has been seen."""

    def __init__(self, size: int) -> None:
        from facecast.tracking.face_mesh import FaceTracker, TrackingConfig
        from facecast.tracking.one_euro import SmoothingConfig

        self.size = size
        self._tracker = FaceTracker(TrackingConfig(smoothing=SmoothingConfig(enabled=False)))
        self.box: tuple[float, float, float] | None = None
        self.found = 0  # frames where a face was tracked

    def crop(self, bgr: Image) -> Image | None:
        faces = self._tracker.detect(bgr)
        if faces:
            self.found += 1
            self.box = face_square(max(faces, key=lambda f: f.box[2] * f.box[3]).landmarks)
        return None if self.box is None else crop_square(bgr, self.box, self.size)

    def close(self) -> None:
        self._tracker.close()
