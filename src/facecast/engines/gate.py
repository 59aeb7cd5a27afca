"""Live inference goes before batch work on a shared engine.

Kernels already running cannot be pre-empted, so the gate works cooperatively: batch work waits
while any live call is waiting or running, and live calls never wait for batch work to finish
queueing (they may overlap a batch call already in flight).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator, Literal

Priority = Literal["live", "batch"]


class PriorityGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._live = 0  # live calls waiting or running
        self.batch_waits = 0  # how often batch work had to step aside (for stats and tests)

    @contextmanager
    def enter(self, priority: Priority = "live") -> Iterator[None]:
        if priority == "live":
            with self._cond:
                self._live += 1
            try:
                yield
            finally:
                with self._cond:
                    self._live -= 1
                    self._cond.notify_all()
            return
        with self._cond:
            if self._live:
                self.batch_waits += 1
            while self._live:
                self._cond.wait()
        yield

    @property
    def live_busy(self) -> bool:
        with self._cond:
            return self._live > 0
