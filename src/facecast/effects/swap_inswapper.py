"""`swap` with backend `inswapper`: InsightFace's swapper on the shared engine pool."""

from __future__ import annotations

import weakref
from typing import Literal

from pydantic import Field

from facecast.configbase import StrictModel
from facecast.effects.base import Effect
from facecast.effects.enhancer import EnhanceConfig, FaceEnhancerStep
from facecast.engines.gate import Priority
from facecast.engines.pool import EnginePool
from facecast.neural import faceswap
from facecast.types import FramePacket, Image


class SwapInswapperConfig(StrictModel):
    backend: Literal["inswapper"] = Field(
        "inswapper", description="inswapper_128 + ArcFace on the engine pool (non-commercial licence)"
    )
    max_faces: int = Field(
        4, ge=1, le=8, description="faces swapped per frame (tracking.max_faces limits how many are tracked)"
    )
    keep_mouth: bool = Field(True, description="show the target's own mouth interior when it speaks")
    enhance: EnhanceConfig = EnhanceConfig()


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
        self.priority: Priority = "live"  # "batch" when a job renders with it: live frames go first on the engines
        self.offline = False  # render and jobs: the enhancer runs on every frame, synchronously
        self.enhancer = FaceEnhancerStep(cfg.enhance, lambda: pool)

    def start(self) -> None:
        self.swapper = faceswap.InSwapper(self.pool)
        self.enhancer.start(self.offline, self.priority)

    def close(self) -> None:
        self.enhancer.close()

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
            return packet.image
        latent = self._latent(character)
        frame = packet.image.copy()
        faces = packet.faces[: self.cfg.max_faces]
        for face in faces:
            self.swapper.swap_face(
                frame, face.landmarks, latent, keep_mouth=self.cfg.keep_mouth, priority=self.priority
            )
        if self.cfg.enhance.model != "none":
            frame = self.enhancer.apply(frame, [face.landmarks for face in faces], packet.seq)
        return frame
