"""Fixed-rate pacing from absolute deadlines, for outputs that must leave at a steady rate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

# More than this many periods late (the machine stalled, the output blocked): start again from
# now instead of sending a burst of frames to catch up.
DEFAULT_MAX_LATE_PERIODS = 3.0


class Pacer:
    """Deadlines at t0 + k * period.

    `wait()` sleeps until the next deadline. Sleeping `period` after each send would drift by the
    time the send took; absolute deadlines do not. When the caller is more than `max_late_periods`
    behind, the schedule restarts from now (a drift reset, counted in `resets`) so the receiver
    never sees a burst.
    """

    def __init__(
        self,
        fps: float,
        *,
        max_late_periods: float = DEFAULT_MAX_LATE_PERIODS,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"pacer fps must be positive, got {fps}")
        self.period = 1.0 / fps
        self.max_late = max_late_periods * self.period
        self._clock = clock
        self._sleep = sleep
        self._next: float | None = None
        self.ticks = 0
        self.resets = 0
        self.late_s = 0.0  # how late the last deadline was met (0 when it was slept up to)

    def reset(self) -> None:
        """Restart the schedule: the next wait() returns at once."""
        self._next = None

    def wait(self, stop: threading.Event | None = None) -> bool:
        """Sleep until the next deadline. Returns False when `stop` was set while waiting."""
        now = self._clock()
        if self._next is None:
            self._next = now
        else:
            self._next += self.period
            if now - self._next > self.max_late:
                self.resets += 1
                self._next = now
        delay = self._next - now
        self.ticks += 1
        if delay <= 0:
            self.late_s = -delay
            return not (stop is not None and stop.is_set())
        self.late_s = 0.0
        if self._sleep is not None:
            self._sleep(delay)
            return not (stop is not None and stop.is_set())
        if stop is not None:
            return not stop.wait(delay)
        time.sleep(delay)
        return True
