"""The pacer: absolute deadlines, no drift, a reset instead of a burst after a stall."""

from __future__ import annotations

import threading
import time

import pytest

from facecast.outputs.pacer import Pacer


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.t += seconds


def test_deadlines_are_absolute_so_work_time_does_not_drift():
    clock = FakeClock()
    pacer = Pacer(50, clock=clock, sleep=clock.sleep)
    returned = []
    for _ in range(20):
        pacer.wait()
        returned.append(clock.t)
        clock.t += 0.007  # the send takes 7 ms: a sleep(period) loop would run at 37 fps
    assert returned == pytest.approx([100.0 + i * 0.02 for i in range(20)])
    assert pacer.resets == 0


def test_a_little_late_catches_up_without_resetting():
    clock = FakeClock()
    pacer = Pacer(50, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.t += 0.03  # one and a half periods late
    pacer.wait()  # the deadline at +0.02 has passed: no sleep
    assert clock.t == pytest.approx(100.03)
    pacer.wait()  # back on the original grid at +0.04
    assert clock.t == pytest.approx(100.04)
    assert pacer.resets == 0


def test_a_long_stall_resets_the_schedule_instead_of_bursting():
    clock = FakeClock()
    pacer = Pacer(50, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.t += 0.5  # 25 periods: the machine stalled
    pacer.wait()
    assert pacer.resets == 1
    stalled_at = clock.t
    pacer.wait()  # one period after the reset, not at once (no burst of catch-up frames)
    assert clock.t == pytest.approx(stalled_at + 0.02)
    pacer.wait()
    assert clock.t == pytest.approx(stalled_at + 0.04)


def test_reset_restarts_from_now():
    clock = FakeClock()
    pacer = Pacer(10, clock=clock, sleep=clock.sleep)
    pacer.wait()
    clock.t += 0.05
    pacer.reset()
    pacer.wait()
    assert clock.t == pytest.approx(100.05)  # at once
    pacer.wait()
    assert clock.t == pytest.approx(100.15)


def test_rejects_a_non_positive_rate():
    with pytest.raises(ValueError):
        Pacer(0)


def test_real_clock_rate_and_stop():
    pacer = Pacer(100)
    t0 = time.perf_counter()
    for _ in range(31):
        pacer.wait()
    elapsed = time.perf_counter() - t0
    assert 0.28 < elapsed < 0.6  # 30 periods of 10 ms; generous upper bound for a shared machine
    stop = threading.Event()
    stop.set()
    assert pacer.wait(stop) is False  # a set stop flag ends the wait
