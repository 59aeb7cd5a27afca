"""Draws what the tracker sees: landmarks, head pose, eye/mouth openness and the live fps."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.effects.base import Effect
from facecast.types import Face, FramePacket, Image

GREEN, YELLOW, WHITE, RED = (80, 220, 80), (0, 220, 255), (255, 255, 255), (60, 60, 230)


class DebugConfig(StrictModel):
    landmarks: bool = Field(True, description="draw the 478 landmarks")
    pose: bool = Field(True, description="draw pitch/yaw/roll and eye/mouth openness")
    fps: bool = Field(True, description="draw the output fps and end-to-end latency")


# A landmark is drawn as a small plus: its pixel and the four around it, set in one numpy assignment
# for all 478 points (478 separate cv2.circle calls from Python cost about as much as the tracker's
# own post-processing).
_DOT = np.array([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)])


def draw_points(image: Image, points: np.ndarray, color: tuple[int, int, int]) -> None:
    """Small dots at (n, 2) pixel positions; points off the image are skipped."""
    h, w = image.shape[:2]
    xy = (np.rint(points[:, None, :2]).astype(np.int32) + _DOT).reshape(-1, 2)
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    xy = xy[inside]
    image[xy[:, 1], xy[:, 0], :3] = color


def own_frame(packet: FramePacket) -> Image:
    """The packet's frame to draw on in place: the packet owns it, and nothing reads the camera image
    after the effect. A read-only or non-contiguous frame (which OpenCV cannot draw on) is copied."""
    image = packet.image
    if not (image.flags.writeable and image.flags.c_contiguous):
        image = image.copy()
    return image


def draw_face(image: Image, face: Face, cfg: DebugConfig, index: int) -> None:
    if cfg.landmarks:
        draw_points(image, face.landmarks, GREEN)
        for idx in (468, 473):  # iris centres
            x, y = face.landmarks[idx, :2].astype(int)
            cv2.circle(image, (int(x), int(y)), 3, YELLOW, -1, cv2.LINE_AA)
    x, y, w, h = face.box
    cv2.rectangle(image, (x, y), (x + w, y + h), GREEN, 1)
    if cfg.pose:
        p = face.pose
        lines = [
            f"face {index}: pitch {p.pitch:+.0f} yaw {p.yaw:+.0f} roll {p.roll:+.0f}",
            f"eyes {face.eye_openness[0]:.2f}/{face.eye_openness[1]:.2f} mouth {face.mouth_openness:.2f}",
        ]
        for i, text in enumerate(lines):
            put_text(image, text, (x, max(14, y - 8 - 18 * (len(lines) - 1 - i))))


def put_text(image: Image, text: str, origin: tuple[int, int], color=WHITE) -> None:
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1, cv2.LINE_AA)


class DebugOverlay(Effect):
    name = "debug"

    def __init__(self, cfg: DebugConfig, live_figures: Callable[[], tuple[float, float | None]] | None = None) -> None:
        self.cfg = cfg
        self.live_figures = live_figures  # () -> (fps, latency p50 ms), read from the pipeline stats

    def apply(self, packet: FramePacket) -> Image:
        # Drawn on the packet's own frame: the packet owns it and nothing reads the camera image after
        # the effect, so there is no full-frame copy per frame.
        return self._draw(own_frame(packet), packet)

    def draw_over(self, image: Image, packet: FramePacket) -> Image:
        """The overlay drawn on a copy of another effect's output (the live `debug_overlay` control).
        On BGRA the drawn pixels are made opaque, so the overlay shows over transparent areas too."""
        if image.ndim == 3 and image.shape[2] == 4:
            bgr = np.ascontiguousarray(image[:, :, :3])
            before = bgr.copy()
            self._draw(bgr, packet)
            out = image.copy()
            out[:, :, :3] = bgr
            out[(bgr != before).any(axis=2), 3] = 255
            return out
        return self._draw(image.copy(), packet)

    def _draw(self, out: Image, packet: FramePacket) -> Image:
        faces = packet.faces
        for i, face in enumerate(faces or []):
            draw_face(out, face, self.cfg, i)
        if faces == []:
            put_text(out, "no face", (10, 44), RED)
        if self.cfg.fps and self.live_figures is not None:
            fps, latency = self.live_figures()
            lat = "-" if latency is None else f"{latency:.0f} ms"
            put_text(out, f"{fps:.1f} fps  latency {lat}  frame {packet.seq}", (10, 22))
        return out
