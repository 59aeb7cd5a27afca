"""The face enhancer step of `swap`: a restoration model (neural/enhance.py) over each swapped face.

Offline (render, jobs: priority "batch") every frame is enhanced, synchronously. Live, the model
would cost the frame rate (GFPGAN: 28-90 ms a face on a good GPU), so it runs on its own thread:
the effect hands it the newest aligned face (latest wins: an older one waiting is replaced, never
queued) and goes on; each frame gets the residual (enhanced minus raw) of the last face the
enhancer finished, re-aligned to the face's current 5 points, so the detail follows the tracked
face between enhancements. Its model calls have batch priority on the engine gate: they step aside
for the live frame's own model calls (the inswapper's), so enhancing does not delay the swap.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.engines.base import Engine
from facecast.engines.gate import Priority
from facecast.engines.onnxruntime import EngineError
from facecast.engines.pool import ModelsMissing
from facecast.models.registry import PLACED_BY_HAND
from facecast.neural import enhance
from facecast.types import Image

log = logging.getLogger(__name__)

EnhancerModel = Literal["none", "gfpgan_1.4", "codeformer", "gpen_bfr_256", "gpen_bfr_512", "restoreformer_pp"]


class EnhanceConfig(StrictModel):
    model: EnhancerModel = Field(
        "none",
        description="face restoration after the swap: none | gfpgan_1.4 | codeformer | gpen_bfr_256 | "
        "gpen_bfr_512 | restoreformer_pp (facecast models download NAME)",
    )
    blend: float = Field(0.8, ge=0.0, le=1.0, description="1 = the enhanced face, 0 = the raw swap")
    fidelity: float = Field(0.5, ge=0.0, le=1.0, description="CodeFormer's fidelity weight: 1 = closer to the input")
    live: Literal["async", "every_frame"] = Field(
        "async",
        description="async = enhance the frames it can take, carry its detail onto the others (keeps the fps) | "
        "every_frame = wait for it on every frame (slow)",
    )


class FaceEnhancerStep:
    """Runs the configured enhancer over the faces of a swapped frame (see the module's text)."""

    def __init__(self, cfg: EnhanceConfig, engines=None) -> None:
        self.cfg = cfg
        self.engines = engines  # () -> EnginePool, called in start() only when a model is configured
        self.spec: enhance.EnhancerSpec | None = None
        self.engine: Engine | None = None
        self.synchronous = True
        self.priority: Priority = "live"
        self.mask: np.ndarray | None = None
        # Counters (bench, tests): frames the model really ran on, frames that got carried detail.
        self.enhanced_frames = 0
        self.carried_frames = 0
        self.bad_outputs = 0
        self._latest: list[enhance.Enhanced | None] = []  # per face, the newest finished enhancement
        self._pending: tuple[list[Image], int] | None = None  # the newest faces waiting for the worker
        self._cond = threading.Condition()
        self._stop = False
        self._worker: threading.Thread | None = None

    def start(self, offline: bool = False, priority: Priority = "live") -> None:
        """Load the model (on the effect's loader thread); live, start the worker thread. `offline`
        (render, jobs): every frame is enhanced, its calls made with `priority`."""
        if self.cfg.model == "none":
            return
        if self.engines is None:
            raise EngineError(f"enhance.model {self.cfg.model} needs the engine pool, and this swap was given none")
        pool = self.engines()
        self.spec = enhance.ENHANCERS[self.cfg.model]
        path = pool.path_of(self.spec.key)
        if not path.is_file():
            known = PLACED_BY_HAND[self.spec.key]
            raise ModelsMissing(
                f"enhance.model {self.cfg.model} needs {path} ({known.source}; {known.licence}). facecast does "
                "not download it (it knows no verified checksum for it): place the ONNX file there yourself"
            )
        self.engine = pool.get(self.spec.key)
        self.mask = enhance.paste_mask(self.spec.size)
        self.synchronous = offline or self.cfg.live == "every_frame"
        self.priority = priority
        if not self.synchronous and self._worker is None:
            self._stop = False
            self._worker = threading.Thread(target=self._run, name=f"enhancer:{self.spec.key}", daemon=True)
            self._worker.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None

    def stats(self) -> dict[str, int | str]:
        return {
            "model": self.cfg.model,
            "mode": "every_frame" if self.synchronous else "async",
            "enhanced_frames": self.enhanced_frames,
            "carried_frames": self.carried_frames,
            "bad_outputs": self.bad_outputs,
        }

    def apply(self, frame: Image, faces: list[np.ndarray], seq: int) -> Image:
        """`faces`: the landmarks of each swapped face in `frame`. Draws on `frame` in place."""
        if self.spec is None or self.engine is None or self.mask is None or not faces:
            return frame
        size = self.spec.size
        blend = self.cfg.blend  # read per frame: a live setting
        if self.synchronous:
            done = 0
            for landmarks in faces:
                crop, _ = enhance.align(frame, landmarks, size)
                result = enhance.enhance_crop(self.engine, self.spec, crop, self.cfg.fidelity, self.priority, seq)
                if result is None:
                    self.bad_outputs += 1
                    continue
                enhance.paste_residual(frame, landmarks, result, blend, self.mask)
                done += 1
            self.enhanced_frames += done > 0
            return frame
        crops = [enhance.align(frame, landmarks, size)[0] for landmarks in faces]
        with self._cond:
            if len(self._latest) != len(faces):
                self._latest = [None] * len(faces)  # faces came or went: old detail belongs to nobody
            self._pending = (crops, seq)  # replaces an older one still waiting
            self._cond.notify()
            latest = list(self._latest)
        carried = False
        for landmarks, result in zip(faces, latest, strict=True):
            if result is not None:
                enhance.paste_residual(frame, landmarks, result, blend, self.mask)
                carried = carried or result.seq != seq
        self.carried_frames += carried
        return frame

    def _run(self) -> None:
        assert self.spec is not None and self.engine is not None
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                assert self._pending is not None
                crops, seq = self._pending
                self._pending = None
            try:
                results = [
                    enhance.enhance_crop(self.engine, self.spec, crop, self.cfg.fidelity, "batch", seq)
                    for crop in crops
                ]
            except Exception:  # one failed call must not end the thread: log it and wait for the next face
                log.exception("enhancer %s failed on frame %d", self.spec.key, seq)
                continue
            with self._cond:
                self.bad_outputs += sum(r is None for r in results)
                if len(self._latest) == len(results):
                    self._latest = [
                        new if new is not None else old for new, old in zip(results, self._latest, strict=True)
                    ]
                    self.enhanced_frames += 1
