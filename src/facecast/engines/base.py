"""What every engine backend offers (onnxruntime.py, torch_engine.py), and the figures it keeps.

An engine is one loaded model. `run(feeds, priority, keep_on_device)` is the only call that runs it;
`upload(array)` makes a device-resident copy of a tensor that is reused across calls (per-character
tensors), so only what really changes each frame crosses the bus. Each engine counts its own calls
(milliseconds, for `facecast bench`) and the host<->device bytes it moved.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from facecast.engines.contracts import ModelContract, Precision
from facecast.engines.gate import Priority


@dataclass
class CallStats:
    """Wall time of the last `window` calls of one model, and how many calls ran in all."""

    window: int = 2048
    calls: int = 0
    _ms: deque = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ms: float) -> None:
        with self._lock:  # an append and a counter: nothing computed under the lock
            self.calls += 1
            self._ms.append(ms)
            if len(self._ms) > self.window:
                self._ms.popleft()

    def samples(self) -> np.ndarray:
        with self._lock:
            return np.array(self._ms, dtype=np.float64)

    def reset(self) -> None:
        with self._lock:
            self.calls = 0
            self._ms.clear()


@dataclass
class TransferStats:
    """Bytes copied host -> device (h2d) and device -> host (d2h) by one engine."""

    h2d_bytes: int = 0
    d2h_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, h2d: int = 0, d2h: int = 0) -> None:
        if h2d or d2h:
            with self._lock:
                self.h2d_bytes += h2d
                self.d2h_bytes += d2h

    def reset(self) -> None:
        with self._lock:
            self.h2d_bytes = self.d2h_bytes = 0


class Engine(Protocol):
    contract: ModelContract
    providers: list[str]
    precision: Precision
    on_gpu: bool
    call_stats: CallStats
    transfers: TransferStats

    def run(
        self, feeds: dict[str, Any], priority: Priority = "live", keep_on_device: tuple[str, ...] = ()
    ) -> dict[str, Any]: ...

    def upload(self, array: np.ndarray) -> Any: ...

    def warmup(self) -> None: ...
