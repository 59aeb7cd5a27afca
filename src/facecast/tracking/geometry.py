"""Pure functions from 478 landmarks to head pose, eye and mouth openness, and a face box."""

from __future__ import annotations

import math

import cv2
import numpy as np

from facecast.types import HeadPose, Landmarks

# MediaPipe face mesh indices.
NOSE_TIP, CHIN = 1, 152
EYE_L_OUTER, EYE_L_INNER, EYE_L_TOP, EYE_L_BOTTOM = 33, 133, 159, 145  # image-left eye
EYE_R_INNER, EYE_R_OUTER, EYE_R_TOP, EYE_R_BOTTOM = 362, 263, 386, 374  # image-right eye
MOUTH_L, MOUTH_R, LIP_TOP_INNER, LIP_BOTTOM_INNER = 61, 291, 13, 14

# A reference head in millimetres, in camera-like axes (x right, y down, z away from the camera),
# looking straight at the camera: MediaPipe's own 3-D landmarks of a frontal face (the bundled
# portrait), made left-right symmetric and scaled to 90 mm between the outer eye corners. Using the
# mesh's own geometry avoids the ~30 degree pitch bias of textbook 6-point head models.
_PNP_REFERENCE = {
    1: (0.0, 0.0, 0.0),  # nose tip
    152: (0.0, 70.5, 45.1),  # chin
    10: (0.0, -86.7, 18.2),  # forehead
    168: (0.0, -43.9, 17.8),  # nose bridge
    33: (-45.0, -40.8, 40.3),
    263: (45.0, -40.8, 40.3),  # outer eye corners
    133: (-17.6, -38.2, 35.4),
    362: (17.6, -38.2, 35.4),  # inner eye corners
    61: (-32.1, 14.9, 44.8),
    291: (32.1, 14.9, 44.8),  # mouth corners
    70: (-55.5, -54.2, 39.3),
    300: (55.5, -54.2, 39.3),  # outer brows
    234: (-67.5, -25.8, 94.5),
    454: (67.5, -25.8, 94.5),  # cheek edges
}
_PNP_INDICES = list(_PNP_REFERENCE)
_PNP_MODEL = np.array(list(_PNP_REFERENCE.values()), dtype=np.float64)


def head_pose(landmarks: Landmarks, width: int, height: int) -> HeadPose:
    """Pitch, yaw, roll (degrees) from a pinhole camera with focal length = image width."""
    image_points = landmarks[_PNP_INDICES, :2].astype(np.float64)
    camera = np.array([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=np.float64)
    ok, rvec, _ = cv2.solvePnP(_PNP_MODEL, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP)  # type: ignore[call-overload]  # cv2 stubs: distCoeffs may be None
    if not ok:
        return HeadPose(0.0, 0.0, 0.0)
    r, _ = cv2.Rodrigues(rvec)
    return pose_from_rotation(r)


def pose_from_rotation(r: np.ndarray) -> HeadPose:
    """Decompose R = Rz(roll) @ Ry(yaw) @ Rx(pitch) in camera axes (x right, y down, z forward).

    Signs are turned into the HeadPose convention: chin up, turn to the image's right and a
    counter-clockwise tilt as seen on screen are positive.
    """
    sy = math.hypot(r[0, 0], r[1, 0])
    if sy > 1e-6:
        pitch = math.atan2(r[2, 1], r[2, 2])
        yaw = math.atan2(-r[2, 0], sy)
        roll = math.atan2(r[1, 0], r[0, 0])
    else:  # gimbal lock: looking straight up or down
        pitch = math.atan2(-r[1, 2], r[1, 1])
        yaw = math.atan2(-r[2, 0], sy)
        roll = 0.0
    # The face looks along -z. With y down, a positive angle about z is clockwise on screen, about x
    # it points the face down (chin down), about y it turns the face to the image's left: flip all three.
    return HeadPose(pitch=-math.degrees(pitch), yaw=-math.degrees(yaw), roll=-math.degrees(roll))


# Three lid pairs across the middle of each eye (the same pairs as the eyelid rig's centre): their mean
# gap follows partial closing more steadily than the single central pair.
_LIDS_L = np.array([(160, 144), (159, 145), (158, 153)])
_LIDS_R = np.array([(385, 380), (386, 374), (387, 373)])
_EYE_WIDTH = np.array([(EYE_L_OUTER, EYE_L_INNER), (EYE_R_INNER, EYE_R_OUTER)])


def _gaps(lm: Landmarks, pairs: np.ndarray) -> np.ndarray:
    d = lm[pairs[:, 0], :2] - lm[pairs[:, 1], :2]
    return np.sqrt((d * d).sum(axis=1))


def eye_openness(lm: Landmarks) -> tuple[float, float]:
    """Mean lid gap / eye width for each eye (image-left, image-right): about 0.25-0.35 open, below
    0.1 closed."""
    width = np.maximum(_gaps(lm, _EYE_WIDTH), 1e-6)
    return float(_gaps(lm, _LIDS_L).mean() / width[0]), float(_gaps(lm, _LIDS_R).mean() / width[1])


_MOUTH = np.array([(LIP_TOP_INNER, LIP_BOTTOM_INNER), (MOUTH_L, MOUTH_R)])


def mouth_openness(lm: Landmarks) -> float:
    """Inner-lip gap / mouth width: about 0 closed, 0.3+ wide open."""
    gap, width = _gaps(lm, _MOUTH)
    return float(gap / max(width, 1e-6))


def face_box(lm: Landmarks, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0 = np.floor(lm[:, :2].min(axis=0)).astype(int)
    x1, y1 = np.ceil(lm[:, :2].max(axis=0)).astype(int)
    x0, y0 = max(0, x0), max(0, y0)
    x1, y1 = min(width, x1), min(height, y1)
    return int(x0), int(y0), int(max(0, x1 - x0)), int(max(0, y1 - y0))
