"""The domain vocabulary shared by every stage: images, landmarks, poses, the frame packet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

# HxWx3 BGR uint8 (camera frames) or HxWx4 BGRA uint8 with straight alpha (effects with a matte).
Image = npt.NDArray[np.uint8]
# (478, 3) float32 in pixels of the frame: x right, y down, z depth at the same scale as x
# (MediaPipe's normalised z multiplied by the frame width), smaller z = closer to the camera.
Landmarks = npt.NDArray[np.float32]

NUM_LANDMARKS = 478  # 468 face mesh points + 10 iris points (refine_landmarks=True)

StageName = Literal["capture", "tracking", "effect", "output"]
STAGE_NAMES: tuple[StageName, ...] = ("capture", "tracking", "effect", "output")


@dataclass(slots=True)
class HeadPose:
    """Head rotation in degrees, in the image's frame of reference.

    pitch > 0: chin up; yaw > 0: the face turns toward the image's right edge;
    roll > 0: the head tilts counter-clockwise as seen in the image.
    """

    pitch: float
    yaw: float
    roll: float


@dataclass(slots=True)
class Face:
    """One tracked face in one frame."""

    landmarks: Landmarks
    pose: HeadPose
    eye_openness: tuple[float, float]  # (image-left eye, image-right eye): lid gap / eye width
    mouth_openness: float  # inner-lip gap / mouth width
    box: tuple[int, int, int, int]  # x, y, w, h around the landmarks, in pixels

    @property
    def center(self) -> tuple[float, float]:
        x, y, w, h = self.box
        return x + w / 2.0, y + h / 2.0


@dataclass(slots=True)
class SyntheticTruth:
    """The motion the synthetic driver applied to a frame, so tests and benchmarks can check tracking."""

    roll_deg: float
    shift_px: tuple[float, float]
    scale: float
    yaw_deg: float = 0.0  # HeadPose convention, applied by the mesh warp
    pitch_deg: float = 0.0
    eye_open: float = 1.0  # both eyes: 1 = as in the portrait, 0 = closed
    mouth_open: float = 0.0  # jaw drop added to the portrait's, in mouth widths


@dataclass(slots=True)
class FramePacket:
    """What travels between stages. Times are time.perf_counter_ns() values."""

    seq: int
    image: Image
    t_capture_ns: int
    stage_done_ns: dict[str, int] = field(default_factory=dict)
    # Time each stage spent working on this frame (queue waits excluded); the capture entry is the read.
    stage_busy_ns: dict[str, int] = field(default_factory=dict)
    faces: list[Face] | None = None  # None: not tracked (yet); []: tracked, no face in the frame
    source_fps: float = 0.0
    truth: SyntheticTruth | None = None

    @property
    def last_stamp_ns(self) -> int:
        """When the previous stage finished with this packet (capture time if none has)."""
        if self.stage_done_ns:
            return next(reversed(self.stage_done_ns.values()))
        return self.t_capture_ns
