"""The effect stage: runs the active effect; switching effects takes effect on the next frame."""

from __future__ import annotations

import logging
import threading
from typing import Literal

from pydantic import Field

from facecast.configbase import StrictModel
from facecast.effects.base import Effect
from facecast.effects.debug import DebugConfig, DebugOverlay
from facecast.effects.passthrough import Passthrough
from facecast.pipeline.stage import Stage
from facecast.pipeline.stats import PipelineStats
from facecast.types import FramePacket

log = logging.getLogger(__name__)

EffectName = Literal["passthrough", "debug"]


class EffectConfig(StrictModel):
    active: EffectName = Field("passthrough", description="the effect applied to every frame")
    debug: DebugConfig = DebugConfig()


def build_effects(cfg: EffectConfig, stats: PipelineStats | None = None) -> dict[str, Effect]:
    """Every known effect, by the name `effect.active` uses."""

    def live_figures() -> tuple[float, float | None]:
        if stats is None:
            return 0.0, None
        snap = stats.snapshot()
        return snap["fps"], snap["latency_ms"]["p50"]

    return {
        "passthrough": Passthrough(),
        "debug": DebugOverlay(cfg.debug, live_figures if stats is not None else None),
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

    @property
    def active(self) -> str:
        return self._active

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
        if requested != self._active:
            self._ensure_started(requested)
            log.info("effect: %s -> %s", self._active, requested)
            self._active = requested
        packet.image = self.effects[self._active].apply(packet)
        return packet

    def close(self) -> None:
        for name in self._started:
            try:
                self.effects[name].close()
            except Exception:
                log.exception("effect %s failed to close", name)


