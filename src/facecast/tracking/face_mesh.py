"""The tracking stage: MediaPipe face mesh (478 landmarks, up to N faces) on every frame, in order."""

from __future__ import annotations

import logging

import cv2
import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.pipeline.stage import Stage, StartupError
from facecast.tracking.geometry import eye_openness, face_box, head_pose, mouth_openness
from facecast.tracking.one_euro import OneEuroFilter, SmoothingConfig
from facecast.types import NUM_LANDMARKS, Face, FramePacket, Image, Landmarks

log = logging.getLogger(__name__)


class TrackingConfig(StrictModel):
    enabled: bool = Field(True, description="false = no tracking (passthrough only)")
    max_faces: int = Field(1, ge=1, le=8)
    min_detection_confidence: float = Field(0.5, ge=0, le=1)
    min_tracking_confidence: float = Field(0.5, ge=0, le=1)
    smoothing: SmoothingConfig = SmoothingConfig()


class FaceTracker:
    """MediaPipe face mesh in video mode. Create and use it from one thread, frames in order."""

    def __init__(self, cfg: TrackingConfig, static_images: bool = False) -> None:
        self.cfg = cfg
        try:
            from mediapipe.python.solutions.face_mesh import FaceMesh
        except ImportError as exc:  # pragma: no cover - mediapipe is a core requirement
            raise StartupError(f"tracking needs mediapipe==0.10.21 ({exc}); run: make run") from exc
        self._mesh = FaceMesh(
            static_image_mode=static_images,
            max_num_faces=cfg.max_faces,
            refine_landmarks=True,  # adds the 10 iris points: 478 in all
            min_detection_confidence=cfg.min_detection_confidence,
            min_tracking_confidence=cfg.min_tracking_confidence,
        )
        self._filters: list[OneEuroFilter] = []

    def detect(self, image: Image, t: float | None = None) -> list[Face]:
        """Faces in a BGR image; `t` (seconds) drives the smoothing, None = no smoothing."""
        h, w = image.shape[:2]
        rgb = cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB)
        rgb.flags.writeable = False
        result = self._mesh.process(rgb)
        found = result.multi_face_landmarks or []
        if len(found) != len(self._filters):
            # Faces entered or left: per-face filters would mix identities, so start them afresh.
            self._filters = [OneEuroFilter.from_config(self.cfg.smoothing) for _ in found]
        faces = []
        for i, face_landmarks in enumerate(found):
            lm = to_pixels(face_landmarks.landmark, w, h)
            if t is not None and self.cfg.smoothing.enabled:
                lm = self._filters[i](lm, t).astype(np.float32)
            faces.append(make_face(lm, w, h))
        return faces

    def close(self) -> None:
        self._mesh.close()


def to_pixels(normalised, width: int, height: int) -> Landmarks:
    lm = np.array([(p.x * width, p.y * height, p.z * width) for p in normalised], dtype=np.float32)
    if lm.shape[0] != NUM_LANDMARKS:
        raise ValueError(f"expected {NUM_LANDMARKS} landmarks, MediaPipe gave {lm.shape[0]}")
    return lm


def make_face(lm: Landmarks, width: int, height: int) -> Face:
    return Face(
        landmarks=lm,
        pose=head_pose(lm, width, height),
        eye_openness=eye_openness(lm),
        mouth_openness=mouth_openness(lm),
        box=face_box(lm, width, height),
    )


class TrackingStage(Stage):
    name = "tracking"

    def __init__(self, cfg: TrackingConfig) -> None:
        self.cfg = cfg
        self._tracker: FaceTracker | None = None

    def start(self) -> None:
        if self.cfg.enabled:
            self._tracker = FaceTracker(self.cfg)

    def process(self, packet: FramePacket) -> FramePacket:
        if self._tracker is not None:
            packet.faces = self._tracker.detect(packet.image, packet.t_capture_ns / 1e9)
        return packet

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None


def track_image(image: Image, cfg: TrackingConfig | None = None) -> list[Face]:
    """One-off detection on a still image (character checks, tests)."""
    tracker = FaceTracker(cfg or TrackingConfig(smoothing=SmoothingConfig(enabled=False)), static_images=True)
    try:
        return tracker.detect(image)
    finally:
        tracker.close()


