"""Bounded queues: latest-frame-wins for live input, blocking for files, clean shutdown."""

from __future__ import annotations

import threading
import time

import pytest

from facecast.pipeline.queues import Closed, FrameQueue


def test_drop_oldest_keeps_the_newest_and_counts_drops():
    q = FrameQueue("a->b", capacity=2, policy="drop_oldest")
    for i in range(5):
        q.put(i)
    assert q.dropped == 3
    assert [q.get(0), q.get(0)] == [3, 4]
    assert q.get(timeout=0.01) is None


def test_block_policy_never_drops_and_waits_for_room():
    q = FrameQueue("file", capacity=1, policy="block")
    q.put(1)
    assert q.put(2, timeout=0.05) is False  # full: nothing added, nothing dropped
    got = []
    consumer = threading.Thread(target=lambda: (time.sleep(0.1), got.append(q.get(1))))
    consumer.start()
    assert q.put(2, timeout=2) is True  # room appeared when the consumer took one
    consumer.join()
    assert got == [1] and q.get(0) == 2 and q.dropped == 0


def test_close_wakes_a_waiting_get():
    q = FrameQueue("x", capacity=1)
    errors = []

    def wait():
        try:
            q.get(timeout=5)
        except Closed:
            errors.append("closed")

    t = threading.Thread(target=wait)
    t.start()
    time.sleep(0.05)
    q.close()
    t.join(1)
    assert not t.is_alive() and errors == ["closed"]
    with pytest.raises(Closed):
        q.put(1)


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        FrameQueue("x", capacity=0)
