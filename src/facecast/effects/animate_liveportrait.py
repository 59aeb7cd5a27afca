"""`animate` with backend `liveportrait`: the neural portrait animator on the shared engine pool."""

from __future__ import annotations

import logging
import math
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.effects.animate_mesh import BackgroundMode, compose_background
from facecast.effects.base import Effect
from facecast.engines.gate import Priority
from facecast.engines.pool import EnginePool
from facecast.neural import liveportrait as lp
from facecast.types import FramePacket, Image

log = logging.getLogger(__name__)


class AnimateLivePortraitConfig(StrictModel):
    backend: Literal["liveportrait"] = Field("liveportrait", description="LivePortrait ONNX models on the engine pool")
    width: int = Field(512, ge=64, le=4096, description="output width in pixels")
    height: int = Field(512, ge=64, le=4096, description="output height in pixels")
    background: BackgroundMode = Field("transparent", description="transparent | original | color")
    background_color: tuple[int, int, int] = Field((0, 177, 64), description="BGR used by background: color")
    pose_multiplier: float = Field(1.0, ge=0, le=3, description="scale of the head rotation since the neutral pose")
    expression_multiplier: float = Field(1.0, ge=0, le=3, description="scale of the expression change")
    stitching: bool = Field(True, description="the stitching network (keeps the shoulders still, no seam)")
    lip_zero: bool = Field(
        True, description="close the character's own open mouth first, so the performer's mouth drives it"
    )
    eye_retargeting: bool = Field(False, description="drive the eyes from the measured eye openness")
    lip_retargeting: bool = Field(False, description="drive the lips from the measured mouth openness")
    return_to_neutral_s: float = Field(0.35, gt=0, le=10, description="easing back when no face is tracked")


def frame_into(image: Image, width: int, height: int) -> Image:
    """Letterbox `image` (BGR or BGRA) into width x height, transparent borders."""
    h, w = image.shape[:2]
    k = min(width / w, height / h)
    nw, nh = max(1, round(w * k)), max(1, round(h * k))
    out = np.zeros((height, width, image.shape[2]), np.uint8)
    x, y = (width - nw) // 2, (height - nh) // 2
    out[y : y + nh, x : x + nw] = cv2.resize(
        image, (nw, nh), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR
    )
    return out


class AnimateLivePortrait(Effect):
    name = "animate"

    def __init__(self, cfg: AnimateLivePortraitConfig, characters, pool: EnginePool) -> None:
        pool.require(lp.MODELS, "liveportrait")  # missing weights: a start-up error with the command to run
        self.cfg = cfg
        self.characters = characters
        self.pool = pool
        self.model: lp.LivePortrait | None = None
        self._sources: dict[int, lp.PreparedSource] = {}
        self._neutral: lp.Motion | None = None
        self._last_xd: np.ndarray | None = None
        self._last_t: float | None = None
        self.priority: Priority = "live"  # "batch" when a job renders with it: live frames go first on the engines

    def start(self) -> None:
        self.model = lp.LivePortrait(self.pool, stitching=self.cfg.stitching, lip_zero=self.cfg.lip_zero)

    def recalibrate(self) -> None:
        self._neutral = None  # the next tracked frame becomes the neutral pose

    def _source(self, model: lp.LivePortrait, character) -> lp.PreparedSource:
        key = id(character)
        if key not in self._sources:
            face = character.face
            self._sources = {
                key: model.prepare_source(
                    character.image, face.landmarks, face.eye_openness, face.mouth_openness, self.priority
                )
            }
        return self._sources[key]

    def apply(self, packet: FramePacket) -> Image:
        character = self.characters.active
        if character is None or self.model is None:
            return np.zeros((self.cfg.height, self.cfg.width, 4), np.uint8)
        src = self._source(self.model, character)
        t = packet.t_capture_ns / 1e9
        faces = packet.faces or []
        if faces:
            face = faces[0]
            drv, _ = self.model.extract_motion(packet.image, face.landmarks, lp.DRIVING_CROP, self.priority)
            if self._neutral is None:
                self._neutral = drv
            x_d = self.model.driving_keypoints(
                src,
                drv,
                self._neutral,
                pose_multiplier=self.cfg.pose_multiplier,
                expression_multiplier=self.cfg.expression_multiplier,
                eye_ratio=float(np.mean(face.eye_openness)) if self.cfg.eye_retargeting else None,
                lip_ratio=face.mouth_openness if self.cfg.lip_retargeting else None,
                priority=self.priority,
            )
        else:  # no face: ease back to the character's own pose instead of freezing mid-expression
            last = src.x_s if self._last_xd is None else self._last_xd
            dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
            x_d = src.x_s + (last - src.x_s) * math.exp(-dt / self.cfg.return_to_neutral_s)
        self._last_xd, self._last_t = x_d, t
        pasted = self.model.paste_back(src, self.model.generate(src, x_d, self.priority))
        bgra = np.dstack([pasted, character.matte])
        return compose_background(
            frame_into(bgra, self.cfg.width, self.cfg.height), self.cfg.background, self.cfg.background_color
        )
