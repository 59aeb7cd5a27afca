"""Live inference goes before batch work on a shared engine.

Kernels already running cannot be pre-empted, so the gate works cooperatively: batch calls wait
while a live call is waiting or running, and live calls never wait for batch work (they may overlap
a batch call already in flight).

The effect stage also reserves each live frame as a whole (`live_frame()` around one frame's
effect, every model call in it): a frame's calls are separated by CPU work (crops, motion maths,
paste-back), and a batch call that slipped into such a gap would delay the frame's next call by a
whole batch call. So batch calls also wait while a live frame is reserved. Calls made outside a
frame (render, warm-up) keep the per-call rule.

When live frames come back to back (the effect stage always busy), reserving frames alone would
starve batch work for good; a batch call that has already waited through one whole frame therefore
waits only for live calls. Batch work then gets about one call per live frame, and the governor in
jobs/runner.py slows it further when the live figures suffer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

Priority = Literal["live", "batch"]


class PriorityGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._live_calls = 0  # live calls waiting or running
        self._live_frames = 0  # live frames reserved right now
        self._frames_ended = 0  # lets a waiting batch call see that a whole frame went by
        # Counters for stats and tests.
        self.live_frames = 0  # frames reserved in all
        self.batch_waits = 0  # how often batch work had to step aside
        self.batch_wait_s = 0.0  # time batch work spent stepping aside

    @contextmanager
    def live_frame(self) -> Iterator[None]:
        """Reserve the engines for one live frame (the effect stage wraps one effect.apply in it)."""
        with self._cond:
            self._live_frames += 1
            self.live_frames += 1
        try:
            yield
        finally:
            with self._cond:
                self._live_frames -= 1
                self._frames_ended += 1
                self._cond.notify_all()

    @contextmanager
    def enter(self, priority: Priority = "live") -> Iterator[None]:
        """Around one model call."""
        if priority == "live":
            with self._cond:
                self._live_calls += 1
            try:
                yield
            finally:
                with self._cond:
                    self._live_calls -= 1
                    self._cond.notify_all()
            return
        with self._cond:
            frames_before = self._frames_ended
            if self._must_wait(frames_before):
                self.batch_waits += 1
                start = time.perf_counter()
                while self._must_wait(frames_before):
                    self._cond.wait()
                self.batch_wait_s += time.perf_counter() - start
        yield

    def _must_wait(self, frames_before: int) -> bool:
        frame_in_the_way = self._live_frames > 0 and self._frames_ended == frames_before
        return self._live_calls > 0 or frame_in_the_way

    @property
    def live_busy(self) -> bool:
        with self._cond:
            return self._live_calls > 0 or self._live_frames > 0

    def snapshot(self) -> dict[str, float]:
        with self._cond:
            return {
                "live_frames": self.live_frames,
                "batch_waits": self.batch_waits,
                "batch_wait_s": round(self.batch_wait_s, 3),
            }
