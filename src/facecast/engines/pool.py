"""Loads each model once and shares it between the live path and the batch thread."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from facecast.engines.contracts import CONTRACTS, Precision
from facecast.engines.gate import PriorityGate
from facecast.engines.onnxruntime import EngineConfig, EngineError, OnnxEngine, default_device_note

log = logging.getLogger(__name__)


class ModelsMissing(EngineError):
    """Model files an effect needs are not in models.dir; the message has the command to run."""


class EnginePool:
    def __init__(self, models_dir: Path, cfg: EngineConfig) -> None:
        self.models_dir = Path(models_dir)
        self.cfg = cfg
        self.gate = PriorityGate()
        self._engines: dict[tuple[str, Precision | None], OnnxEngine] = {}
        self._lock = threading.Lock()
        self._warned_cpu = False

    def path_of(self, key: str) -> Path:
        return self.models_dir / CONTRACTS[key].file

    def require(self, keys: list[str], model_set: str) -> None:
        missing = [CONTRACTS[k].file for k in keys if not self.path_of(k).is_file()]
        if missing:
            raise ModelsMissing(
                f"{model_set} needs {', '.join(missing)} in {self.models_dir}. "
                f"Run: facecast models download {model_set}"
            )

    def get(self, key: str, precision: Precision | None = None) -> OnnxEngine:
        """The shared engine for a model (loaded and warmed up on first use)."""
        with self._lock:
            engine = self._engines.get((key, precision))
            if engine is None:
                path = self.path_of(key)
                if not path.is_file():
                    raise ModelsMissing(f"model file missing: {path}")
                engine = OnnxEngine(CONTRACTS[key], path, self.cfg, self.gate, precision)
                if self.cfg.warmup:
                    engine.warmup()
                self._engines[(key, precision)] = engine
                note = default_device_note(engine.providers)
                if note and not self._warned_cpu and self.cfg.device == "auto":
                    log.warning(note)
                    self._warned_cpu = True
            return engine

    def loaded(self) -> dict[str, list[str]]:
        """model key -> providers really in use (for stats, doctor and bench)."""
        with self._lock:
            return {f"{k}:{p or e.precision}": e.providers for (k, p), e in self._engines.items()}
