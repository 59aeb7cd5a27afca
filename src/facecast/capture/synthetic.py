"""A camera that needs no camera: the bundled portrait moved by a scripted head motion.

Roll, shift and zoom are an affine transform of the whole frame; yaw, pitch, blinks and the mouth
are made by the `animate` mesh warp (facecast.effects.animate_mesh) on the portrait itself.

Every frame is a real face, so tracking and effects downstream do real work; the motion applied
is known exactly (`SyntheticTruth`), so tests and benchmarks can check what the tracker recovers.
Motion is a function of the frame number, not of the wall clock: the same frame index always
gives the same image.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, cast

import cv2
from pydantic import Field

from facecast.assets import default_portrait
from facecast.capture.reader import CapturedFrame, FrameReader
from facecast.configbase import StrictModel
from facecast.types import Image, SyntheticTruth

if TYPE_CHECKING:
    from facecast.effects.animate_mesh import MeshRig


class SyntheticConfig(StrictModel):
    image: Path | None = Field(None, description="face image to move; empty = the bundled portrait")
    roll_deg: float = Field(12.0, ge=0, le=45, description="head tilt amplitude, degrees")
    shift: float = Field(0.05, ge=0, le=0.3, description="side-to-side movement, fraction of the frame")
    zoom: float = Field(0.08, ge=0, le=0.5, description="towards/away from the camera, fraction of size")
    period_s: float = Field(6.0, gt=0, description="seconds for one full cycle of the roll motion")
    face_height: float = Field(
        0.4, gt=0.05, le=0.9, description="face height (brow to chin) as a fraction of the frame"
    )
    yaw_deg: float = Field(15.0, ge=0, le=35, description="head turn amplitude, degrees (mesh warp)")
    pitch_deg: float = Field(8.0, ge=0, le=25, description="nod amplitude, degrees (mesh warp)")
    blink_period_s: float = Field(3.0, ge=0, description="seconds between blinks; 0 = no blinking")
    blink_s: float = Field(0.3, gt=0, le=2, description="how long one blink lasts")
    mouth: float = Field(0.25, ge=0, le=0.6, description="widest jaw drop, in mouth widths; 0 = mouth still")
    mouth_period_s: float = Field(2.3, gt=0, description="seconds for one open-close cycle of the mouth")
    realtime: bool = Field(True, description="deliver at capture.fps; false = as fast as the pipeline takes frames")


def motion_at(cfg: SyntheticConfig, t: float) -> SyntheticTruth:
    """The scripted motion at time t (seconds): incommensurate periods so poses do not repeat in step."""
    w = 2 * math.pi / cfg.period_s
    eye_open = 1.0
    if cfg.blink_period_s > 0:
        # A blink centred on each multiple of the period (after the first), closing and opening smoothly.
        phase = (t + 0.5 * cfg.blink_period_s) % cfg.blink_period_s - 0.5 * cfg.blink_period_s
        if t > 0.5 * cfg.blink_period_s and abs(phase) < cfg.blink_s / 2:
            eye_open = 0.5 - 0.5 * math.cos(2 * math.pi * phase / cfg.blink_s)  # 0 at the middle
    return SyntheticTruth(
        roll_deg=cfg.roll_deg * math.sin(w * t),
        shift_px=(math.sin(w * t / 1.37), 0.5 * math.sin(w * t / 0.83)),  # fractions; scaled in render
        scale=1.0 + cfg.zoom * math.sin(w * t / 1.71),
        yaw_deg=cfg.yaw_deg * math.sin(w * t / 1.13 + 1.0),
        pitch_deg=cfg.pitch_deg * math.sin(w * t / 0.71 + 2.0),
        eye_open=eye_open,
        mouth_open=cfg.mouth * max(0.0, math.sin(2 * math.pi * t / cfg.mouth_period_s)),
    )


class SyntheticReader(FrameReader):
    def __init__(self, cfg: SyntheticConfig, width: int, height: int, fps: float) -> None:
        self.cfg = cfg
        self.width, self.height, self.fps = width, height, fps
        self.self_paced = not cfg.realtime  # not paced = render as fast as the queues take frames
        # Not paced, it is a render like a file's frames (no clock to keep up with): every frame
        # matters, so queues and recordings wait instead of dropping (a recording of it keeps all).
        self.lossless = not cfg.realtime
        self.index = 0
        self._portrait: Image | None = None
        self._face_center = (0.0, 0.0)
        self._face_height = 1.0
        self._rig: MeshRig | None = None  # the portrait's rig: scripted yaw, pitch, blinks and mouth

    def open(self) -> None:
        path = self.cfg.image or default_portrait()
        loaded = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if loaded is None:
            raise OSError(f"capture.synthetic.image: cannot read {path} as an image")
        image = cast(Image, loaded)  # IMREAD_COLOR gives uint8 BGR; cv2's stubs say any numeric array
        from facecast.tracking.face_mesh import track_image

        faces = track_image(image)
        if not faces:
            raise OSError(f"capture.synthetic.image: no face found in {path}")
        x, y, w, h = faces[0].box
        self._face_center = (x + w / 2.0, y + h / 2.0)
        self._face_height = float(h)
        self._portrait = image
        self.path = Path(path)
        c = self.cfg
        if c.yaw_deg or c.pitch_deg or c.mouth or c.blink_period_s:
            from facecast.effects.animate_mesh import MeshRig

            h, w = image.shape[:2]
            self._rig = MeshRig(image, None, faces[0].landmarks, w, h)

    def render(self, index: int) -> CapturedFrame:
        assert self._portrait is not None, "open() first"
        motion = motion_at(self.cfg, index / self.fps)
        cx, cy = self._face_center
        scale = self.cfg.face_height * self.height / self._face_height * motion.scale
        dx = self.cfg.shift * self.width * motion.shift_px[0]
        dy = self.cfg.shift * self.height * motion.shift_px[1]
        # Rotate and scale about the face centre, then move that centre to the frame centre + shift.
        m = cv2.getRotationMatrix2D((cx, cy), motion.roll_deg, scale)
        m[0, 2] += self.width / 2 + dx - cx
        m[1, 2] += self.height / 2 + dy - cy
        face = self._portrait
        if self._rig is not None:
            from facecast.effects.animate_mesh import RigParams

            params = RigParams(
                pitch=motion.pitch_deg,
                yaw=motion.yaw_deg,
                eyes=(motion.eye_open, motion.eye_open),
                mouth=motion.mouth_open,
            )
            face = self._rig.render(params)[:, :, :3]
        frame = cv2.warpAffine(
            face,
            m,
            (self.width, self.height),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        truth = SyntheticTruth(
            roll_deg=motion.roll_deg,
            shift_px=(dx, dy),
            scale=motion.scale,
            yaw_deg=motion.yaw_deg,
            pitch_deg=motion.pitch_deg,
            eye_open=motion.eye_open,
            mouth_open=motion.mouth_open,
        )
        return CapturedFrame(cast(Image, frame), truth)  # warpAffine keeps the uint8 input's dtype

    def read(self) -> CapturedFrame | None:
        frame = self.render(self.index)
        self.index += 1
        return frame

    def describe(self) -> str:
        name = self.path.name if self._portrait is not None else "portrait"
        return f"synthetic driver ({name} moved by a scripted head motion, {self.fps:.0f} fps)"


def synthetic_frames(
    count: int, width: int = 640, height: int = 480, fps: float = 30.0, cfg: SyntheticConfig | None = None
) -> list[CapturedFrame]:
    """`count` consecutive synthetic frames (for tools and tests)."""
    reader = SyntheticReader(cfg or SyntheticConfig(), width, height, fps)
    reader.open()
    return [reader.render(i) for i in range(count)]
