"""Body pose: MediaPipe Pose (the full model bundled in the mediapipe wheel; nothing is downloaded)
and its drawing as the OpenPose-style skeleton the video models were trained on.

MediaPipe gives 33 landmarks; OpenPose's body model has 18 keypoints in another order (its "neck"
is the middle of the shoulders). The skeleton is drawn as OpenPose's own renderer draws it (the
one ControlNet and Wan-Animate's preprocessing use): on black, each limb a filled ellipse in its
colour at 60 %, then each keypoint a disc in its colour, colours in RGB order."""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from facecast.types import Image

# OpenPose body keypoints: nose, neck, right shoulder/elbow/wrist, left shoulder/elbow/wrist, right
# hip/knee/ankle, left hip/knee/ankle, right eye, left eye, right ear, left ear.
# Index into MediaPipe's 33 landmarks (-1: the neck, made from both shoulders).
MEDIAPIPE_FOR_OPENPOSE = (0, -1, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
LIMBS = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
COLORS_RGB = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
MIN_VISIBILITY = 0.5  # MediaPipe's visibility below which a joint is not drawn (out of frame, hidden)


@dataclass(slots=True)
class BodyPose:
    """One person's pose in frame pixels: MediaPipe's 33 landmarks (x, y, visibility) and the
    segmentation (float 0..1 per pixel, the person's probability)."""

    landmarks: np.ndarray  # (33, 3) float32
    segmentation: np.ndarray | None


def openpose_keypoints(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's (33, 3) landmarks as OpenPose's 18 (x, y) keypoints and which are visible."""
    points = np.zeros((18, 2), np.float32)
    visible = np.zeros(18, bool)
    for k, index in enumerate(MEDIAPIPE_FOR_OPENPOSE):
        if index < 0:  # the neck
            points[k] = (landmarks[11, :2] + landmarks[12, :2]) / 2
            visible[k] = min(landmarks[11, 2], landmarks[12, 2]) >= MIN_VISIBILITY
        else:
            points[k] = landmarks[index, :2]
            visible[k] = landmarks[index, 2] >= MIN_VISIBILITY
    return points, visible


def draw_skeleton(points: np.ndarray, visible: np.ndarray, width: int, height: int) -> Image:
    """OpenPose's body drawing of 18 keypoints, as an RGB image on black; line width scales with size."""
    canvas = np.zeros((height, width, 3), np.uint8)
    stick = max(2, round(4 * max(width, height) / 512))
    for (a, b), color in zip(LIMBS, COLORS_RGB, strict=False):
        if not (visible[a] and visible[b]):
            continue
        (xa, ya), (xb, yb) = points[a], points[b]
        length = math.hypot(xb - xa, yb - ya)
        angle = math.degrees(math.atan2(yb - ya, xb - xa))
        polygon = cv2.ellipse2Poly(
            (round((xa + xb) / 2), round((ya + yb) / 2)), (round(length / 2), stick), round(angle), 0, 360, 1
        )
        cv2.fillConvexPoly(canvas, np.asarray(polygon, np.int32), [round(c * 0.6) for c in color])
    for k in range(18):
        if visible[k]:
            cv2.circle(canvas, (round(points[k, 0]), round(points[k, 1])), stick, COLORS_RGB[k], -1)
    return canvas


class PoseEstimator:
    """MediaPipe Pose in video mode (frames in order), with its person segmentation. One thread."""

    def __init__(self, static_images: bool = False, min_confidence: float = 0.5) -> None:
        from facecast.tracking.mediapipe_solutions import solution

        Pose = solution("pose").Pose

        # model_complexity=1 is the full landmark model, the one the wheel bundles (0 and 2 would be
        # downloaded on first use).
        self._pose = Pose(
            static_image_mode=static_images,
            model_complexity=1,
            enable_segmentation=True,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def detect(self, bgr: Image) -> BodyPose | None:
        h, w = bgr.shape[:2]
        result = self._pose.process(cv2.cvtColor(bgr[:, :, :3], cv2.COLOR_BGR2RGB))
        if result.pose_landmarks is None:
            return None
        lm = np.array([(p.x * w, p.y * h, p.visibility) for p in result.pose_landmarks.landmark], np.float32)
        seg = result.segmentation_mask
        return BodyPose(lm, None if seg is None else np.asarray(seg, np.float32))

    def close(self) -> None:
        self._pose.close()

    def __enter__(self) -> PoseEstimator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
