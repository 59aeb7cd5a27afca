"""The tracking stage: MediaPipe face mesh (478 landmarks, up to N faces) on every frame, in order.

Per frame, on the CPU budget of a 60 fps stream:

- The RGB copy MediaPipe reads is converted into a buffer reused from frame to frame, and MediaPipe
  reads it in place (a read-only array is referenced, not copied).
- The frame is tracked at full size. MediaPipe crops the face's region itself, so its cost does not
  depend on the frame size: measured on 1080p frames, 3.8-4.0 ms per frame at full size and 4.2 ms
  on a half-size copy, which costs 0.9 ms to make against 0.45 ms for the full-size conversion.
  A downscaled copy would cost CPU and accuracy, and save nothing.
- The landmarks are read from the protobuf's serialised bytes in one numpy view instead of 478
  Python objects (`landmarks_from_proto`).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.pipeline.stage import Stage, StartupError
from facecast.tracking.geometry import eye_openness, face_box, head_pose, mouth_openness
from facecast.tracking.mediapipe_solutions import SolutionCall
from facecast.tracking.one_euro import OneEuroFilter, SmoothingConfig
from facecast.tracking.prediction import FacePredictor
from facecast.types import NUM_LANDMARKS, Face, FramePacket, Image, Landmarks

log = logging.getLogger(__name__)


class TrackingConfig(StrictModel):
    enabled: bool = Field(True, description="false = no tracking (passthrough only)")
    max_faces: int = Field(1, ge=1, le=8)
    min_detection_confidence: float = Field(0.5, ge=0, le=1)
    min_tracking_confidence: float = Field(0.5, ge=0, le=1)
    max_fps: float = Field(
        0.0,
        ge=0,
        le=240,
        description="live: run the face mesh on at most this many frames a second (0 = every frame); the "
        "frames between get faces predicted from the last two tracked (tracking/prediction.py). Offline "
        "renders and jobs read every frame",
    )
    smoothing: SmoothingConfig = SmoothingConfig()


# -- MediaPipe ------------------------------------------------------------------------------------
def _face_mesh_graph(cfg: TrackingConfig, static_images: bool):
    try:
        from facecast.tracking.mediapipe_solutions import solution

        FaceMesh = solution("face_mesh").FaceMesh
    except ImportError as exc:  # pragma: no cover - mediapipe is a core requirement
        raise StartupError(f"tracking needs mediapipe==0.10.21 ({exc}); run: make run") from exc
    return FaceMesh(
        static_image_mode=static_images,
        max_num_faces=cfg.max_faces,
        refine_landmarks=True,  # adds the 10 iris points: 478 in all
        min_detection_confidence=cfg.min_detection_confidence,
        min_tracking_confidence=cfg.min_tracking_confidence,
    )


# One landmark as MediaPipe serialises it: a length-delimited message (tag 0x0A, length 15) holding
# three float fields x (0x0D), y (0x15), z (0x1D). visibility and presence are unset for the face mesh.
_RECORD = 17
_RECORD_HEAD = np.array([0x0A, 15], np.uint8)
_FIELD_TAGS = np.array([0x0D, 0x15, 0x1D], np.uint8)


def landmarks_from_proto(landmark_list, width: int, height: int) -> Landmarks:
    """A NormalizedLandmarkList as (478, 3) float32 pixels (z scaled like x, as `Landmarks` says).

    The list's serialised bytes are read through one numpy view. A list in another layout (fields
    such as visibility set) is read point by point: the same numbers, only slower.
    """
    raw = np.frombuffer(landmark_list.SerializeToString(), np.uint8)
    if raw.size == NUM_LANDMARKS * _RECORD:
        records = raw.reshape(NUM_LANDMARKS, _RECORD)
        fields = records[:, 2:].reshape(NUM_LANDMARKS, 3, 5)
        if (records[:, :2] == _RECORD_HEAD).all() and (fields[:, :, 0] == _FIELD_TAGS).all():
            xyz = np.ascontiguousarray(fields[:, :, 1:]).view(np.dtype("<f4")).reshape(NUM_LANDMARKS, 3)
            return xyz * np.array([width, height, width], np.float32)
    lm = np.array([(p.x * width, p.y * height, p.z * width) for p in landmark_list.landmark], dtype=np.float32)
    if lm.shape[0] != NUM_LANDMARKS:
        raise ValueError(f"expected {NUM_LANDMARKS} landmarks, MediaPipe gave {lm.shape[0]}")
    return lm


# -- the frame MediaPipe reads --------------------------------------------------------------------
class FramePrep:
    """The frame as the RGB array MediaPipe reads, converted into a buffer reused while the frame
    size stays the same (a fresh full-size array per frame costs page faults on every frame)."""

    def __init__(self) -> None:
        self._rgb: np.ndarray | None = None

    def __call__(self, image: Image) -> np.ndarray:
        h, w = image.shape[:2]
        if self._rgb is None or self._rgb.shape[:2] != (h, w):
            self._rgb = np.empty((h, w, 3), np.uint8)
        self._rgb.flags.writeable = True
        cv2.cvtColor(image[:, :, :3], cv2.COLOR_BGR2RGB, dst=self._rgb)
        # Read-only: MediaPipe then references the buffer instead of copying it. It is done with it
        # when process() returns, before the next frame is written.
        self._rgb.flags.writeable = False
        return self._rgb


class FaceTracker:
    """MediaPipe face mesh in video mode. Create and use it from one thread, frames in order."""

    def __init__(self, cfg: TrackingConfig, static_images: bool = False) -> None:
        self.cfg = cfg
        self._mesh = _face_mesh_graph(cfg, static_images)
        self._landmarks_of = SolutionCall(self._mesh, "multi_face_landmarks")
        self._filters: list[OneEuroFilter] = []
        self._eye_filters: list[OneEuroFilter] = []
        self._prep = FramePrep()

    def detect(self, image: Image, t: float | None = None) -> list[Face]:
        """Faces in a BGR image; `t` (seconds) drives the smoothing, None = no smoothing."""
        h, w = image.shape[:2]
        found = self._landmarks_of(self._prep(image)) or []
        if len(found) != len(self._filters):
            # Faces entered or left: per-face filters would mix identities, so start them afresh.
            smoothing = self.cfg.smoothing
            self._filters = [OneEuroFilter.from_config(smoothing) for _ in found]
            self._eye_filters = [
                OneEuroFilter(smoothing.eyes_min_cutoff, smoothing.eyes_beta, smoothing.d_cutoff) for _ in found
            ]
        faces = []
        for i, face_landmarks in enumerate(found):
            lm = landmarks_from_proto(face_landmarks, w, h)
            if t is not None and self.cfg.smoothing.enabled:
                # The eyes from the raw landmarks, through their own quicker filter (blinks).
                eyes = self._eye_filters[i](np.array(eye_openness(lm)), t)
                faces.append(make_face(self._filters[i](lm, t), w, h, (float(eyes[0]), float(eyes[1]))))
            else:
                faces.append(make_face(lm, w, h))
        return faces

    def close(self) -> None:
        self._mesh.close()


def make_face(lm: Landmarks, width: int, height: int, eyes: tuple[float, float] | None = None) -> Face:
    """`eyes`: the eye openness when read apart from `lm` (the tracker's own filter); None = from `lm`."""
    return Face(
        landmarks=lm,
        pose=head_pose(lm, width, height),
        eye_openness=eye_openness(lm) if eyes is None else eyes,
        mouth_openness=mouth_openness(lm),
        box=face_box(lm, width, height),
    )


class TrackingStage(Stage):
    name = "tracking"

    def __init__(self, cfg: TrackingConfig) -> None:
        self.cfg = cfg
        self._tracker: FaceTracker | None = None
        self._predictor = FacePredictor()
        self._size_tracked: tuple[int, ...] = ()
        self.tracked_frames = 0
        self.predicted_frames = 0

    def start(self) -> None:
        if self.cfg.enabled:
            self._tracker = FaceTracker(self.cfg)
            if self.cfg.max_fps > 0:
                log.info(
                    "tracking: the face mesh reads at most %g frames a second (tracking.max_fps); the frames "
                    "between get faces predicted from the last two it read",
                    self.cfg.max_fps,
                )
        self._predictor.reset()

    def _due(self, t: float, size: tuple[int, ...]) -> bool:
        """Whether the face mesh reads this frame. With `max_fps`, once 3/4 of its interval has passed
        since the last tracked frame: a 60 fps camera at max_fps 30 is tracked every second frame
        despite the camera's jitter, a 30 fps camera every frame. A frame of another size (a camera
        reopened) is always read: the last faces are in the old frame's pixels."""
        last = self._predictor.last_t
        if self.cfg.max_fps <= 0 or last is None or size != self._size_tracked:
            return True
        return not 0 <= t - last < 0.75 / self.cfg.max_fps

    def process(self, packet: FramePacket) -> FramePacket:
        if self._tracker is not None:
            t = packet.t_capture_ns / 1e9
            size = packet.image.shape[:2]
            if self._due(t, size):
                packet.faces = self._tracker.detect(packet.image, t)
                self._predictor.tracked(t, packet.faces)
                self._size_tracked = size
                self.tracked_frames += 1
            else:
                packet.faces = self._predictor.predict(t, size[1], size[0])
                self.predicted_frames += 1
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


__all__ = [
    "FaceTracker",
    "FramePrep",
    "TrackingConfig",
    "TrackingStage",
    "landmarks_from_proto",
    "make_face",
    "track_image",
]
