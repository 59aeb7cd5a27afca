"""`swap` with backend `inswapper`: InsightFace's swapper on the shared engine pool.

The model redraws the target's aligned 128x128 face with the source's identity; the frame gets it
through the same paste as the mesh swap (effects/swap_mesh.py:paste_face, neural/blend.py): the
target's low-frequency light and colour, occluders that are not skin-coloured kept in front (and
hands, with `occlusion_hands`), the target's open mouth kept, hard / feather / seamless blending on
the face's box, steadied landmarks.
The model's own face area (a feathered ellipse over its crop) limits the paste: outside it the
redrawn pixels are hair and background the model was not made for.
"""

from __future__ import annotations

import logging
import weakref
from typing import Literal, cast

import cv2
import numpy as np
from pydantic import Field

from facecast.effects.base import Effect
from facecast.effects.debug import own_frame
from facecast.effects.enhancer import FaceEnhancerStep
from facecast.effects.swap_mesh import SEAMLESS_MARGIN, FaceState, PasteConfig, _face_region, face_holes, paste_face
from facecast.engines.gate import Priority
from facecast.engines.pool import EnginePool
from facecast.neural import blend, faceswap
from facecast.neural.crop import invert
from facecast.tracking.hands import FaceHands
from facecast.types import Face, FramePacket, Image

log = logging.getLogger(__name__)


class SwapInswapperConfig(PasteConfig):
    backend: Literal["inswapper"] = Field(
        "inswapper", description="inswapper_128 + ArcFace on the engine pool (non-commercial licence)"
    )


class SwapInswapper(Effect):
    name = "swap"

    def __init__(self, cfg: SwapInswapperConfig, characters, pool: EnginePool) -> None:
        pool.require(faceswap.MODELS, "inswapper")
        self.cfg = cfg
        self.characters = characters
        self.pool = pool
        self.swapper: faceswap.InSwapper | None = None
        # character -> its identity latent, resident where the swapper runs (uploaded once per character)
        self._latents: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._states: list[FaceState] = []
        self._coverage = faceswap.face_mask()  # the model's face area over its 128 crop
        self.priority: Priority = "live"  # "batch" when a job renders with it: live frames go first on the engines
        self.offline = False  # render and jobs: the enhancer runs on every frame, synchronously
        self.enhancer = FaceEnhancerStep(cfg.enhance, lambda: pool)
        self.hands = FaceHands()  # used while cfg.occlusion_hands is on (a live setting)

    def start(self) -> None:
        self.swapper = faceswap.InSwapper(self.pool)
        self.enhancer.start(self.offline, self.priority)
        self.hands.offline = self.offline
        if self.cfg.occlusion_hands:
            self.hands.warm()

    def close(self) -> None:
        self.enhancer.close()
        self.hands.close()

    def reset(self) -> None:
        """Forget what is smoothed over time: the next frame is an unrelated picture."""
        self._states = []
        self.hands.close()  # nor tracked: each picture is searched for hands afresh

    def _latent(self, character):
        latent = self._latents.get(character)
        if latent is None:  # the ArcFace embedding is computed once per character
            assert self.swapper is not None
            photos = getattr(self.characters, "photos", None)
            if photos and len(photos) > 1 and character in photos:
                # Several photos of one person (`render swap --face DIR`): their identities averaged.
                faces = [(p.image, p.landmarks) for p in photos]
                latent = self.swapper.upload_latent(self.swapper.averaged_latent(faces, self.priority))
            else:
                latent = self.swapper.resident_latent(character.image, character.landmarks, self.priority)
            self._latents[character] = latent
        return latent

    def apply(self, packet: FramePacket) -> Image:
        character = self.characters.active
        if character is None or self.swapper is None or not packet.faces:
            self._states = []
            return packet.image
        latent = self._latent(character)
        faces = sorted(packet.faces, key=lambda f: f.box[2] * f.box[3], reverse=True)[: self.cfg.max_faces]
        faces.sort(key=lambda f: f.box[0])  # a stable order left to right for the smoothing
        if len(faces) != len(self._states):
            self._states = [FaceState(blend.LandmarkSteadier(0.0)) for _ in faces]
        frame = own_frame(packet)
        steadied = [state.steady(f.landmarks, self.cfg.steady) for state, f in zip(self._states, faces, strict=True)]
        # Each face is swapped from the frame as the camera gave it (a neighbour's paste may overlap it).
        camera = packet.image.copy() if len(faces) > 1 else frame
        t = packet.t_capture_ns / 1e9
        for i, (face, T, state) in enumerate(zip(faces, steadied, self._states, strict=True)):
            try:
                self._swap_one(frame, camera, face, T, latent, state, t, i)
            except cv2.error as exc:  # a degenerate face box at the frame edge: leave that face as is
                log.debug("swap: a face was skipped: %s", exc)
        if self.cfg.enhance.model != "none":
            frame = self.enhancer.apply(frame, steadied, packet.seq)
        return frame

    def _swap_one(
        self, frame: Image, camera: Image, face: Face, T: np.ndarray, latent, state: FaceState, t: float, index: int
    ) -> None:
        assert self.swapper is not None
        cfg = self.cfg
        landmarks = face.landmarks.copy()
        landmarks[:, :2] = T
        swapped = self.swapper.swapped_crop(camera, landmarks, latent, self.priority)
        if swapped is None:  # no usable face from the model (NaN/black): this face stays as it is
            return
        crop, m = swapped
        box = _face_region(T, frame.shape, SEAMLESS_MARGIN if cfg.blend == "seamless" else 0.0)
        if box is None:
            return
        x0, y0, x1, y1 = box
        rw, rh = x1 - x0, y1 - y0
        to_box = invert(m)
        to_box[:, 2] -= (x0, y0)  # crop -> the box's own coordinates
        patch = cv2.warpAffine(crop, to_box, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        coverage = cast(np.ndarray, cv2.warpAffine(self._coverage, to_box, (rw, rh), flags=cv2.INTER_LINEAR))
        region = camera[y0:y1, x0:x1, :3].copy()
        holes = face_holes(T, face, keep_eyes=False, eye_size=1.0, keep_mouth=cfg.keep_mouth)
        hands = self.hands(index, camera, T) if cfg.occlusion_hands else None
        paste_face(frame, region, box, cast(Image, patch), T, holes, state, t, cfg, coverage=coverage, hands=hands)
