"""Loads each model once and shares it between the live path and the batch thread.

Loading a model takes seconds (building a TensorRT engine: minutes), so no lock anyone else needs
is held while one loads: each model has its own load in flight, a second thread asking for the same
model waits for that one load, and calls to other models (or their loads) never wait for it.
Loaded engines sit in a copy-on-write dict that is read without a lock. `prefetch()` starts loads
on a loader thread so the live path can keep running and pick an engine up with `ready()` once it
is there.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from facecast.engines.base import Engine
from facecast.engines.contracts import CONTRACTS, Precision
from facecast.engines.gate import PriorityGate
from facecast.engines.onnxruntime import EngineConfig, EngineError, OnnxEngine, default_device_note

log = logging.getLogger(__name__)

Slot = tuple[str, Precision | None]  # (model key, precision asked for; None = the configured default)


class ModelsMissing(EngineError):
    """Model files an effect needs are not in models.dir; the message has the command to run."""


@dataclass(eq=False)
class _Load:
    """One model being loaded; the threads that asked for it too wait on `done`."""

    done: threading.Event = field(default_factory=threading.Event)
    engine: Engine | None = None
    error: BaseException | None = None


class EnginePool:
    def __init__(self, models_dir: Path, cfg: EngineConfig) -> None:
        self.models_dir = Path(models_dir)
        self.cfg = cfg
        self.gate = PriorityGate()
        self._engines: dict[Slot, Engine] = {}  # replaced whole on every load, never changed in place
        self._loads: dict[Slot, _Load] = {}
        self._lock = threading.Lock()  # guards _loads, _engines' replacement and the warnings; never held while loading
        self._warned_cpu = False
        self._warned_replicas: set[Path] = set()

    def path_of(self, key: str) -> Path:
        return self.models_dir / CONTRACTS[key].file

    def require(self, keys: list[str], model_set: str) -> None:
        missing = [CONTRACTS[k].file for k in keys if not self.path_of(k).is_file()]
        if missing:
            raise ModelsMissing(
                f"{model_set} needs {', '.join(missing)} in {self.models_dir}. "
                f"Run: facecast models download {model_set}"
            )

    def ready(self, key: str, precision: Precision | None = None) -> Engine | None:
        """The engine if it is loaded, else None at once: never loads, never waits."""
        engines = self._engines
        engine = engines.get((key, precision))
        if engine is None and precision is not None:
            default = engines.get((key, None))
            if default is not None and default.precision == precision:
                return default  # the default session already runs at that precision (CPU, CUDA: FP32)
        return engine

    def get(self, key: str, precision: Precision | None = None) -> Engine:
        """The shared engine for a model, loaded (and warmed up) on first use. Blocks while it loads:
        the live path uses `prefetch` + `ready` instead."""
        engine = self.ready(key, precision)
        if engine is not None:
            return engine
        slot: Slot = (key, precision)
        with self._lock:
            engine = self.ready(key, precision)  # finished while we took the lock
            if engine is not None:
                return engine
            load = self._loads.get(slot)
            loading_elsewhere = load is not None
            if load is None:
                load = self._loads[slot] = _Load()
        if loading_elsewhere:
            load.done.wait()
            if load.error is not None:
                raise load.error
            assert load.engine is not None
            return load.engine
        try:
            load.engine = self._load(key, precision)
        except BaseException as exc:
            load.error = exc
            raise
        finally:
            with self._lock:
                if load.engine is not None:
                    self._engines = {**self._engines, slot: load.engine}
                del self._loads[slot]
            load.done.set()
        return load.engine

    def prefetch(self, keys: list[str], precision: Precision | None = None) -> Future[list[Engine]]:
        """Load `keys` on a loader thread and return at once. The future holds the engines, or the
        first load error (also logged here, so nobody has to wait on it to hear about it)."""
        future: Future[list[Engine]] = Future()
        already = [self.ready(k, precision) for k in keys]
        if all(e is not None for e in already):
            future.set_result([e for e in already if e is not None])
            return future

        def load_all() -> None:
            future.set_running_or_notify_cancel()
            try:
                future.set_result([self.get(k, precision) for k in keys])
            except BaseException as exc:
                log.error("loading %s (%s) failed: %s", ", ".join(keys), precision or "default precision", exc)
                future.set_exception(exc)

        threading.Thread(target=load_all, name=f"engine-loader:{keys[0]}", daemon=True).start()
        return future

    def engines(self) -> dict[str, Engine]:
        """Every loaded engine, "key:precision" -> engine (for bench and stats; takes no lock)."""
        return {f"{k}:{p or e.precision}": e for (k, p), e in self._engines.items()}

    def loaded(self) -> dict[str, list[str]]:
        """model key -> providers really in use (for stats, doctor and bench)."""
        return {name: e.providers for name, e in self.engines().items()}

    # -- loading -------------------------------------------------------------------------------------
    def _engine_class(self) -> type:
        if self.cfg.device == "torch":  # the PyTorch engine (torch_engine.py), imported only when asked for
            try:
                from facecast.engines.torch_engine import TorchEngine
            except ImportError as exc:
                raise EngineError(f"engine.device is 'torch' but the torch engine cannot be loaded ({exc})") from exc
            return TorchEngine
        return OnnxEngine

    def _load(self, key: str, precision: Precision | None) -> Engine:
        path = self.path_of(key)
        if not path.is_file():
            raise ModelsMissing(f"model file missing: {path}")
        engine: Engine = self._engine_class()(CONTRACTS[key], path, self.cfg, self.gate, precision)
        if self.cfg.warmup:
            engine.warmup()
        self._warn_once(engine, path)
        return engine

    def _warn_once(self, engine: Engine, path: Path) -> None:
        note = default_device_note(engine.providers) if self.cfg.device == "auto" else None
        mark = _replica_mark(engine, path)
        with self._lock:
            warn_cpu = note is not None and not self._warned_cpu
            self._warned_cpu = self._warned_cpu or warn_cpu
            file = path.resolve()
            warn_replica = mark is not None and file not in self._warned_replicas
            if warn_replica:
                self._warned_replicas.add(file)
        if warn_cpu:
            log.warning(note)
        if warn_replica:
            log.warning(
                "%s is a full-size replica with random weights (facecast models replicas), not a model: "
                "its output is noise. Download the real weights with: facecast models download",
                path,
            )


def _replica_mark(engine: Engine, path: Path) -> str | None:
    """The replica mark of a loaded model file (see facecast.models.replicas), as the engine read it
    while loading: onnx.load here would parse the whole file again, holding the GIL for up to a
    second on a 500 MB model and stalling the live thread."""
    if hasattr(engine, "replica"):
        return engine.replica
    from facecast.models.replicas import replica_note

    return replica_note(path)
