"""Keeping Python's cyclic garbage collector off the live path's latency.

A full collection walks every object the process holds: after start-up that is over 100 000
(MediaPipe's graph wrappers, pydantic models, numpy and OpenCV modules, the characters), about
100 ms of one core with the GIL held on our 2-core machine, so every stage stalls at once and a
handful of frames is late or dropped. In a steady pipeline those objects live for the whole run:
`gc.freeze()` moves them to a permanent generation the collector never walks again (measured: a full
collection 98 ms before, 0.004 ms after). Full collections are rare in steady streaming (none in
150 s of a running daemon) but do run after loads that leave many new objects behind. Young
objects (per-frame packets) are still collected as usual, and so is everything created later. When
the pipeline stops, `release_heap()` hands the frozen objects back to the collector (a process that
runs several pipelines, tests and the bench, gets their garbage back).
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)


def settle_heap(why: str, collect: bool = True) -> None:
    """Collect what is garbage now, then freeze every object still alive (start-up is over: they
    live as long as the pipeline). Later calls walk only what was created since the last one.
    `collect=False` while frames flow: a collection holds the GIL (about 100 ms after a model
    loaded, every stage stalled), a freeze alone is a list splice; the little garbage it keeps is
    bounded by one load."""
    t0 = time.perf_counter()
    if collect:
        gc.collect()
    gc.freeze()
    if log.isEnabledFor(logging.DEBUG):  # get_freeze_count() walks every frozen object, GIL held
        log.debug(
            "heap settled after %s: %d objects frozen in %.1f ms",
            why,
            gc.get_freeze_count(),
            1000 * (time.perf_counter() - t0),
        )


def release_heap() -> None:
    """The pipeline has stopped: what was frozen may be garbage now; let the collector see it."""
    gc.unfreeze()


__all__ = ["release_heap", "settle_heap"]
