"""The effect stage: runs the active effect. Switching prepares the new effect off the live thread.

An effect's `start()` may take seconds (loading models, building TensorRT engines), so `select()`
starts it on a loader thread while the current effect keeps running; the effect thread switches on
the first frame after the new one is ready. A start that fails is reported once (log line, stats
error) and the request falls back to the effect still on screen; only a new `select` tries again.
Effects with no `start()` of their own switch on the next frame.

Each frame of an effect that runs models on the engine pool is reserved as a whole on the pool's
gate (`PriorityGate.live_frame`), so batch jobs do not slip in between the frame's model calls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import Field

from facecast.configbase import StrictModel
from facecast.effects.animate_liveportrait import AnimateLivePortrait, AnimateLivePortraitConfig
from facecast.effects.animate_mesh import AnimateMesh, AnimateMeshConfig
from facecast.effects.base import Effect
from facecast.effects.debug import DebugConfig, DebugOverlay
from facecast.effects.passthrough import Passthrough
from facecast.effects.swap_inswapper import SwapInswapper, SwapInswapperConfig
from facecast.effects.swap_mesh import SwapMesh, SwapMeshConfig
from facecast.engines.gate import PriorityGate
from facecast.engines.onnxruntime import EngineError
from facecast.engines.pool import EnginePool
from facecast.pipeline.heap import settle_heap
from facecast.pipeline.stage import Stage
from facecast.pipeline.stats import PipelineStats
from facecast.pipeline.work_size import WorkSize
from facecast.types import FramePacket, Image

log = logging.getLogger(__name__)

EffectName = Literal["passthrough", "debug", "animate", "swap"]

# `animate` and `swap` pick an implementation by their `backend` key: `mesh` (CPU, no weights) or a
# neural backend on the engine pool. Adding a backend = its file, its config model in these unions
# and its class in BACKENDS.
AnimateConfig = Annotated[AnimateMeshConfig | AnimateLivePortraitConfig, Field(discriminator="backend")]
SwapConfig = Annotated[SwapMeshConfig | SwapInswapperConfig, Field(discriminator="backend")]
# Each class is called as cls(cfg, characters), or cls(cfg, characters, engine_pool) when neural.
BACKENDS: dict[tuple[str, str], Callable[..., Effect]] = {
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
    if kind == "swap" and cfg.backend == "mesh":  # CPU swap; the engines only for its optional face enhancer
        return cls(cfg, characters, engines)
    if cfg.backend in NEURAL_BACKENDS:
        if engines is None:
            raise ValueError(f"{kind} backend {cfg.backend} needs the engine pool")
        return cls(cfg, characters, engines())
    return cls(cfg, characters)


def build_effects(
    cfg: EffectConfig, stats: PipelineStats | None = None, characters=None, engines=None
) -> dict[str, Effect]:
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


def _frame_gate(effect: Effect) -> PriorityGate | None:
    """The gate of the engine pool an effect runs its models on (the neural backends keep their
    pool as `pool`); None for effects that run no models."""
    pool = getattr(effect, "pool", None)
    return pool.gate if isinstance(pool, EnginePool) else None


def _has_own_start(effect: Effect) -> bool:
    return type(effect).start is not Effect.start


class EffectStage(Stage):
    name = "effect"

    def __init__(
        self,
        effects: dict[str, Effect],
        active: str,
        stats: PipelineStats | None = None,
        work_size: WorkSize | None = None,
    ) -> None:
        """`work_size`: the size an effect that reads the camera frame gets it at (pipeline.work_size);
        None = as captured."""
        if active not in effects:
            raise ValueError(f"unknown effect {active!r}; known: {', '.join(effects)}")
        self.effects = effects
        self.stats = stats  # a failed start is counted there as an "effect.start" error
        self.work_size = work_size or WorkSize()
        self.effect_input_size: tuple[int, int] | None = None  # (w, h) of the frame the effect was last given
        self._gates = {name: _frame_gate(effect) for name, effect in effects.items()}
        self._active = active  # written by the effect thread, under _lock
        self._requested = active
        self._lock = threading.Lock()
        self._started: set[str] = set()  # effects whose start() has run (closed on close())
        self._failed: dict[str, str] = {}  # effect -> why its start failed; a new select clears it
        self._loader: threading.Thread | None = None  # at most one; it loads whatever is requested
        self._loading: str | None = None
        self._closing = False
        # Live controls (facecast.control): set from other threads, applied here before a frame.
        self._frozen = False
        self._held: Image | None = None  # the image repeated while frozen
        self._last: Image | None = None
        self._overlay = False
        self._recalibrate = False
        # Live settings (the `set` action): key -> change, the newest per key; run before a frame.
        self._changes: dict[str, Callable[[], None]] = {}
        self._changes_done = threading.Event()

    @property
    def active(self) -> str:
        return self._active

    @property
    def requested(self) -> str:
        """The effect asked for (== active once it is ready and the effect thread has switched)."""
        return self._requested

    @property
    def loading(self) -> str | None:
        """The effect being started on the loader thread, if any."""
        return self._loading

    @property
    def failed(self) -> dict[str, str]:
        """Effects whose start failed since they were last selected, with the reason."""
        with self._lock:
            return dict(self._failed)

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
        effect thread before its next frame). False when the effect has no neutral pose."""
        if not self.can_recalibrate():
            return False
        with self._lock:
            self._recalibrate = True
        return True

    def change_setting(self, key: str, change: Callable[[], None]) -> threading.Event:
        """Run `change()` (a live setting: facecast.control.settings) in the effect thread before the
        next frame, so no frame sees half a change. A newer change of the same key replaces one not
        yet run. Returns an event set once it has run."""
        with self._lock:
            self._changes[key] = change
            return self._changes_done

    def select(self, name: str) -> None:
        """Switch effect: prepared on the loader thread, switched on the first frame after it is ready."""
        if name not in self.effects:
            raise ValueError(f"unknown effect {name!r}; known: {', '.join(self.effects)}")
        with self._lock:
            self._requested = name
            self._failed.pop(name, None)  # asked for again: its start may be tried again
            # The active effect is started by start() in the effect thread, never here.
            if self._loader is None and name != self._active and not self._ready(name) and not self._closing:
                self._loader = threading.Thread(target=self._load_requested, name="effect-loader", daemon=True)
                self._loader.start()

    def _ready(self, name: str) -> bool:
        return name in self._started or not _has_own_start(self.effects[name])

    def _load_requested(self) -> None:
        """The loader thread: start whatever is requested until it is ready or has failed (a request
        changed while an effect was starting is picked up after it)."""
        while True:
            with self._lock:
                name = self._requested
                if self._closing or name == self._active or self._ready(name) or name in self._failed:
                    self._loader = None
                    self._loading = None
                    return
                self._loading = name
            t0 = time.perf_counter()
            try:
                self.effects[name].start()
            except Exception as exc:
                self._start_failed(name, exc)
                continue
            with self._lock:
                # close() may have run on another thread while start() ran: annotated, so the type
                # checker does not carry over the loop's narrowing of self._closing to False
                closing: bool = self._closing
                if not closing:
                    self._started.add(name)
            log.info("effect %s ready (started in %.1f s)", name, time.perf_counter() - t0)
            settle_heap(f"effect {name} started", collect=False)  # what it loaded stays: out of the collector's way
            if closing:  # the stage closed while this effect was starting: close it here
                self._close_effect(name)

    def _start_failed(self, name: str, exc: Exception) -> None:
        with self._lock:
            self._failed[name] = str(exc)
            if self._requested == name:
                self._requested = self._active  # back to what is on screen
            staying = self._active
        # EngineError says what to do in its message; anything else gets its traceback.
        log.error(
            "effect %s cannot start: %s; staying on %s", name, exc, staying, exc_info=not isinstance(exc, EngineError)
        )
        if self.stats is not None:
            self.stats.record_error("effect.start")

    def start(self) -> None:
        """The configured effect starts here, in the effect thread before the first frame: if it
        cannot start, the daemon stops at start-up with its message."""
        self.effects[self._active].start()
        with self._lock:
            self._started.add(self._active)

    def process(self, packet: FramePacket) -> FramePacket:
        with self._lock:
            requested, previous = self._requested, self._active
            if requested != previous and self._ready(requested):
                self._started.add(requested)
                self._active = requested
            active = self._active
            recalibrate = self._recalibrate and active == requested  # meant for the effect asked for
            if recalibrate:
                self._recalibrate = False
            frozen, overlay = self._frozen, self._overlay
            changes, changed = (self._changes, self._changes_done) if self._changes else ({}, None)
            if changed is not None:
                self._changes, self._changes_done = {}, threading.Event()
        for key, change in changes.items():
            try:
                change()
            except Exception:  # checked before it was queued: a failure here is a bug, said loudly
                log.exception("effect: the live setting %s could not be applied", key)
        if changed is not None:
            changed.set()
        if active != previous:
            log.info("effect: %s -> %s", previous, active)
        effect = self.effects[active]
        recalibrate_effect = getattr(effect, "recalibrate", None)
        if recalibrate and callable(recalibrate_effect):
            recalibrate_effect()
        if frozen and self._last is not None:
            if self._held is None:  # copied once: an effect may reuse its output buffer
                self._held = self._last.copy()
            packet.image = self._held
        else:
            self._held = None
            # An effect that draws on the camera frame gets it at the size the outputs need, brought
            # there once; one that works from the landmarks alone (animate mesh) skips the resize.
            if effect.reads_frame:
                self.work_size.fit(packet)
            self.effect_input_size = (packet.image.shape[1], packet.image.shape[0])
            gate = self._gates[active]
            if gate is None:
                packet.image = self._last = effect.apply(packet)
            else:
                with gate.live_frame():  # batch work waits for the whole frame, not just each call
                    packet.image = self._last = effect.apply(packet)
        if overlay and active != "debug":
            debug = self.effects["debug"]
            assert isinstance(debug, DebugOverlay)  # set_overlay() checked it
            packet.image = debug.draw_over(packet.image, packet)
        return packet

    def close(self) -> None:
        with self._lock:
            self._closing = True
            loader = self._loader
        if loader is not None:
            loader.join(0.5)  # an effect still starting then is closed by the loader when it is done
        with self._lock:
            started = list(self._started)
        for name in started:
            self._close_effect(name)

    def _close_effect(self, name: str) -> None:
        try:
            self.effects[name].close()
        except Exception:
            log.exception("effect %s failed to close", name)
