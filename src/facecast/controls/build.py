"""All the control signals of a driving video at the model's size, and their preview videos."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from facecast.controls.face import FaceCropper
from facecast.controls.mask import background, person_mask
from facecast.controls.pose import PoseEstimator, draw_skeleton, openpose_keypoints
from facecast.controls.source import fill_size
from facecast.types import Image


class NoPerson(ValueError):
    """The driving video has no person (or no face) to follow; the message says which."""


@dataclass(slots=True)
class Controls:
    frames: list[Image]  # the source frames at the model's size (BGR)
    pose: list[Image] = field(default_factory=list)  # skeleton frames, RGB
    face: list[Image] = field(default_factory=list)  # face crops, RGB
    mask: list[Image] = field(default_factory=list)  # 255 = the person (replace mode only)
    background: list[Image] = field(default_factory=list)  # frames without the person, RGB (replace)
    keypoints: list[tuple[np.ndarray, np.ndarray] | None] = field(default_factory=list)  # OpenPose 18 per frame
    pose_frames: int = 0  # frames where a body was found
    face_frames: int = 0  # frames where a face was found


def make_controls(
    frames: list[Image],
    width: int,
    height: int,
    face_size: int = 512,
    with_mask: bool = True,
    progress: Callable[[float], None] | None = None,
) -> Controls:
    """Pose, face crops and (when `with_mask`) the person mask for every frame, at width x height.
    NoPerson when no body or no face is found in the whole video."""
    # Tracked at the source's own resolution (cut to the model's aspect): a face or a body too
    # small for MediaPipe at the model's size is still found, and the face crops keep their detail.
    h0, w0 = frames[0].shape[:2]
    fit = min(w0 / width, h0 / height)
    aw, ah = max(width, round(width * fit)), max(height, round(height * fit))
    scale = width / aw
    controls = Controls([])
    cropper = FaceCropper(face_size)
    first_face: int | None = None
    try:
        with PoseEstimator() as estimator:
            for i, source in enumerate(frames):
                analysed = fill_size(source, aw, ah)
                frame = cast(Image, cv2.resize(analysed, (width, height), interpolation=cv2.INTER_AREA))
                controls.frames.append(frame)
                body = estimator.detect(analysed)
                if body is None:
                    controls.keypoints.append(None)
                    controls.pose.append(np.zeros((height, width, 3), np.uint8))
                    mask = np.zeros((height, width), np.uint8)
                else:
                    controls.pose_frames += 1
                    points, visible = openpose_keypoints(body.landmarks)
                    points = points * scale
                    controls.keypoints.append((points, visible))
                    controls.pose.append(draw_skeleton(points, visible, width, height))
                    mask = person_mask(body.segmentation, width, height)
                if with_mask:
                    controls.mask.append(mask)
                    controls.background.append(cast(Image, cv2.cvtColor(background(frame, mask), cv2.COLOR_BGR2RGB)))
                crop = cropper.crop(analysed)
                if crop is not None and first_face is None:
                    first_face = i
                blank = np.zeros((face_size, face_size, 3), np.uint8)
                controls.face.append(blank if crop is None else cast(Image, cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)))
                if progress is not None:
                    progress((i + 1) / len(frames))
        controls.face_frames = cropper.found
    finally:
        cropper.close()
    if controls.pose_frames == 0:
        raise NoPerson("no person found in the driving video (MediaPipe Pose saw no body in any frame)")
    if first_face is None:
        raise NoPerson("no face found in the driving video: the character's face would have nothing to follow")
    for i in range(first_face):  # frames before the face was first seen take its first crop
        controls.face[i] = controls.face[first_face]
    return controls


def has_person(frames: list[Image]) -> bool:
    """Is a body found in any of these frames (each looked at on its own)?"""
    with PoseEstimator(static_images=True) as estimator:
        return any(estimator.detect(f) is not None for f in frames)


def write_previews(controls: Controls, rate: Fraction, folder: Path) -> list[Path]:
    """pose.mp4, face.mp4 (and mask.mp4 with the mask) in `folder`, at the source's frame rate."""
    from facecast.media.video import write_video

    folder.mkdir(parents=True, exist_ok=True)
    videos: dict[str, list[Image]] = {"pose": controls.pose, "face": controls.face}
    if controls.mask:
        videos["mask"] = [cast(Image, cv2.cvtColor(m, cv2.COLOR_GRAY2RGB)) for m in controls.mask]
    written = []
    for name, rgb in videos.items():
        path = folder / f"{name}.mp4"
        write_video(path, (cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in rgb), float(rate))
        written.append(path)
    return written
