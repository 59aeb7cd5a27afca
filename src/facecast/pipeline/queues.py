"""Bounded queues between live stages, with an explicit policy for a full queue."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Generic, Literal, TypeVar

T = TypeVar("T")

QueuePolicy = Literal["drop_oldest", "block"]


class Closed(Exception):
    """Raised by put/get once the queue has been closed for shutdown."""


class FrameQueue(Generic[T]):
    """A small bounded FIFO.

    ``drop_oldest`` (live sources): a put on a full queue discards the oldest item and counts it, so
    a slow consumer always gets the newest frame and latency stays one queue deep.
    ``block`` (files, batch work): a put waits for room, so no frame is ever lost.
    """

    def __init__(self, name: str, capacity: int, policy: QueuePolicy = "drop_oldest") -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        self.name = name
        self.capacity = capacity
        self.policy: QueuePolicy = policy
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0
        self.put_count = 0

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Add an item. Returns False only when a blocking put timed out (nothing was added)."""
        with self._cond:
            if self._closed:
                raise Closed(self.name)
            if len(self._items) >= self.capacity:
                if self.policy == "drop_oldest":
                    self._items.popleft()
                    self.dropped += 1
                else:
                    deadline = None if timeout is None else time.monotonic() + timeout
                    while len(self._items) >= self.capacity and not self._closed:
                        remaining = None if deadline is None else deadline - time.monotonic()
                        if remaining is not None and remaining <= 0:
                            return False
                        self._cond.wait(remaining)
                    if self._closed:
                        raise Closed(self.name)
            self._items.append(item)
            self.put_count += 1
            self._cond.notify_all()
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Take the oldest item; None when nothing arrived within the timeout."""
        with self._cond:
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._items:
                if self._closed:
                    raise Closed(self.name)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """Wake every waiter; later puts raise Closed, gets drain what is left and then raise."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return n

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)
