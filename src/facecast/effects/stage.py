"""The effect stage: runs the active effect; switching effects takes effect on the next frame."""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Literal, Union

from pydantic import Field

from facecast.configbase import StrictModel
from facecast.effects.animate_mesh import AnimateMesh, AnimateMeshConfig
from facecast.effects.base import Effect
from facecast.effects.debug import DebugConfig, DebugOverlay
from facecast.effects.passthrough import Passthrough
from facecast.effects.swap_mesh import SwapMesh, SwapMeshConfig
from facecast.effects.animate_liveportrait import AnimateLivePortrait, AnimateLivePortraitConfig
from facecast.effects.swap_inswapper import SwapInswapper, SwapInswapperConfig
from facecast.pipeline.stage import Stage
from facecast.pipeline.stats import PipelineStats
from facecast.types import FramePacket, Image

log = logging.getLogger(__name__)

EffectName = Literal["passthrough", "debug", "animate", "swap"]

# `animate` and `swap` pick an implementation by their `backend` key: `mesh` (CPU, no weights) or a
# neural backend on the engine pool. Adding a backend = its file, its config model in these unions
# and its class in BACKENDS.
AnimateConfig = Annotated[Union[AnimateMeshConfig, AnimateLivePortraitConfig], Field(discriminator="backend")]
SwapConfig = Annotated[Union[SwapMeshConfig, SwapInswapperConfig], Field(discriminator="backend")]
BACKENDS: dict[tuple[str, str], type[Effect]] = {
    ("animate", "mesh"): AnimateMesh,
    ("animate", "liveportrait"): AnimateLivePortrait,
    ("swap", "mesh"): SwapMesh,
    ("swap", "inswapper"): SwapInswapper,
}
NEURAL_BACKENDS = {"liveportrait", "inswapper"}


class EffectConfig(StrictModel):
    active: EffectName = Field("animate", description="the effect applied to every frame")
    debug: DebugConfig = DebugConfig()
    animate: AnimateConfig = AnimateMeshConfig()
    swap: SwapConfig = SwapMeshConfig()


class _NoCharacters:
    """Stands in for the character library when none is given (animate/swap then show nothing)."""

    active = None

    def characters(self) -> list:
        return []


def make_effect(kind: str, cfg, characters, engines=None) -> Effect:
    """The `animate` or `swap` effect for its configured backend. `engines`: a callable returning the
    shared EnginePool (called only for a neural backend, so the CPU path never loads onnxruntime)."""
    cls = BACKENDS[(kind, cfg.backend)]
    if cfg.backend in NEURAL_BACKENDS:
        if engines is None:
            raise ValueError(f"{kind} backend {cfg.backend} needs the engine pool")
        return cls(cfg, characters, engines())
    return cls(cfg, characters)


def build_effects(cfg: EffectConfig, stats: PipelineStats | None = None, characters=None,
                  engines=None) -> dict[str, Effect]:
    """Every known effect, by the name `effect.active` uses. `characters`: the CharacterLibrary;
    `engines`: () -> EnginePool for the neural backends."""
    library = characters if characters is not None else _NoCharacters()

    def live_figures() -> tuple[float, float | None]:
        if stats is None:
            return 0.0, None
        return stats.live_figures()

    return {
        "passthrough": Passthrough(),
        "debug": DebugOverlay(cfg.debug, live_figures if stats is not None else None),
        "animate": make_effect("animate", cfg.animate, library, engines),
        "swap": make_effect("swap", cfg.swap, library, engines),
    }


class EffectStage(Stage):
    name = "effect"

    def __init__(self, effects: dict[str, Effect], active: str) -> None:
        if active not in effects:
            raise ValueError(f"unknown effect {active!r}; known: {', '.join(effects)}")
        self.effects = effects
        self._active = active
        self._requested = active
        self._lock = threading.Lock()
        self._started: set[str] = set()
        # Live controls (facecast.control): set from other threads, applied here before a frame.
        self._frozen = False
        self._held: Image | None = None  # the image repeated while frozen
        self._last: Image | None = None
        self._overlay = False
        self._recalibrate = False

    @property
    def active(self) -> str:
        return self._active

    @property
    def requested(self) -> str:
        """The effect the next frame gets (== active once the effect thread has switched)."""
        return self._requested

    @property
    def frozen(self) -> bool:
        return self._frozen

    def set_frozen(self, on: bool) -> None:
        """Freeze frame: repeat the last output image (the effect is not run) until unfrozen."""
        with self._lock:
            self._frozen = on

    @property
    def overlay(self) -> bool:
        return self._overlay

    def set_overlay(self, on: bool) -> None:
        """Draw the debug overlay (landmarks, pose, fps) on top of whatever effect is active."""
        if on and not isinstance(self.effects.get("debug"), DebugOverlay):
            raise ValueError("the debug overlay is not available")
        with self._lock:
            self._overlay = on

    def can_recalibrate(self, name: str | None = None) -> bool:
        return callable(getattr(self.effects[name or self._requested], "recalibrate", None))

    def recalibrate(self) -> bool:
        """Ask the effect to take the current pose as neutral (its `recalibrate()`, called in the
        effect thread before the next frame). False when the effect has no neutral pose."""
        if not self.can_recalibrate():
            return False
        with self._lock:
            self._recalibrate = True
        return True

    def select(self, name: str) -> None:
        """Switch effect; the effect thread picks it up before the next frame."""
        if name not in self.effects:
            raise ValueError(f"unknown effect {name!r}; known: {', '.join(self.effects)}")
        with self._lock:
            self._requested = name

    def start(self) -> None:
        self._ensure_started(self._active)

    def _ensure_started(self, name: str) -> None:
        if name not in self._started:
            self.effects[name].start()
            self._started.add(name)

    def process(self, packet: FramePacket) -> FramePacket:
        with self._lock:
            requested = self._requested
            frozen, overlay, recalibrate = self._frozen, self._overlay, self._recalibrate
            self._recalibrate = False
        if requested != self._active:
            self._ensure_started(requested)
            log.info("effect: %s -> %s", self._active, requested)
            self._active = requested
        effect = self.effects[self._active]
        if recalibrate and callable(getattr(effect, "recalibrate", None)):
            effect.recalibrate()
        if frozen and self._last is not None:
            if self._held is None:  # copied once: an effect may reuse its output buffer
                self._held = self._last.copy()
            packet.image = self._held
        else:
            self._held = None
            packet.image = self._last = effect.apply(packet)
        if overlay and self._active != "debug":
            packet.image = self.effects["debug"].draw_over(packet.image, packet)
        return packet

    def close(self) -> None:
        for name in self._started:
            try:
                self.effects[name].close()
            except Exception:
                log.exception("effect %s failed to close", name)


