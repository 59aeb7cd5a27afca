"""Runs a source and a chain of stages on their own threads, joined by bounded queues."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from facecast.pipeline.heap import release_heap, settle_heap
from facecast.pipeline.queues import Closed, FrameQueue, QueuePolicy
from facecast.pipeline.stage import SourceStage, Stage, StartupError
from facecast.pipeline.stats import PipelineStats
from facecast.types import FramePacket

log = logging.getLogger(__name__)

GET_TIMEOUT_S = 0.1  # how often a waiting thread looks at the stop flag
STARTUP_TIMEOUT_S = 120.0
# A source whose produce() keeps raising waits before the next try: from the first to the last,
# doubling, so a broken device cannot spin a core (and the log) at full speed.
SOURCE_ERROR_FIRST_S = 0.05
SOURCE_ERROR_MAX_S = 2.0
_END = object()  # end of stream marker, forwarded down the chain


@dataclass
class _Worker:
    name: str
    thread: threading.Thread = field(init=False)  # set right after: it is handed the worker
    ready: threading.Event
    startup_error: BaseException | None = None
    busy_since: float | None = None  # monotonic time the current packet entered process()
    busy_seq: int = -1
    stuck_since: float | None = None  # busy_since of the packet the watchdog reported


class Pipeline:
    """source -> q -> stage -> q -> stage ... -> last stage.

    The last stage's output is the end of the line: its packets are counted as delivered.
    """

    def __init__(
        self,
        source: SourceStage,
        stages: Sequence[Stage],
        stats: PipelineStats,
        *,
        queue_capacity: int = 2,
        queue_policy: QueuePolicy | None = None,
        watchdog_s: float = 3.0,
        status_interval_s: float = 5.0,
        max_frames: int | None = None,
    ) -> None:
        self.source = source
        self.stages = list(stages)
        self.stats = stats
        policy: QueuePolicy = queue_policy or ("block" if source.lossless else "drop_oldest")
        names = [source.name, *(s.name for s in self.stages)]
        self.queues: list[FrameQueue] = [
            FrameQueue(f"{a}->{b}", queue_capacity, policy) for a, b in itertools.pairwise(names)
        ]
        stats.watch_queues(self.queues)
        self.watchdog_s = watchdog_s
        self.status_interval_s = status_interval_s
        self.max_frames = max_frames
        self._stop = threading.Event()
        self.finished = threading.Event()  # set when the stream ended, the frame limit was hit, or stop()
        self._workers: list[_Worker] = []
        self._monitor: threading.Thread | None = None
        self._delivered = 0
        # Called with (packet, done_ns) for every delivered frame, on the last stage's thread
        # (`facecast bench --soak` keeps its own per-window figures this way). Must be quick.
        self._delivery_listeners: list[Callable[[FramePacket, int], None]] = []

    def add_delivery_listener(self, listener: Callable[[FramePacket, int], None]) -> None:
        """Before start(): `listener(packet, done_ns)` after each delivered frame."""
        self._delivery_listeners.append(listener)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start every thread; return once all stages are open. Raises StartupError otherwise."""
        self._workers = [self._spawn(self.source.name, self._run_source)]
        for i, stage in enumerate(self.stages):
            out_q = self.queues[i + 1] if i + 1 < len(self.queues) else None
            self._workers.append(self._spawn(stage.name, self._run_stage, stage, self.queues[i], out_q))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        for w in self._workers:
            w.ready.wait(max(0.0, deadline - time.monotonic()))
        failed = [w for w in self._workers if w.startup_error is not None]
        if failed:
            self.stop()
            raise StartupError(str(failed[0].startup_error)) from failed[0].startup_error
        settle_heap("start-up")  # every stage is open: what they hold lives as long as the pipeline
        self._monitor = threading.Thread(target=self._run_monitor, name="monitor", daemon=True)
        self._monitor.start()

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop every thread; True when all of them ended within the timeout. The output stage's
        close() (flushing and finalising every output, within its own limit) runs on its thread
        meanwhile: `timeout` must leave it that long."""
        self._stop.set()
        self.source.interrupt()
        for q in self.queues:
            q.close()
        deadline = time.monotonic() + timeout
        for w in self._workers:
            w.thread.join(max(0.0, deadline - time.monotonic()))
        alive = [w.name for w in self._workers if w.thread.is_alive()]
        if alive:
            log.warning("threads still running %.1f s after stop: %s", timeout, ", ".join(alive))
        release_heap()
        self.finished.set()
        return not alive

    def wait(self, timeout: float | None = None) -> bool:
        return self.finished.wait(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- threads -----------------------------------------------------------------------------
    def _spawn(self, name: str, target, *args) -> _Worker:
        worker = _Worker(name=name, ready=threading.Event())
        worker.thread = threading.Thread(target=target, args=(worker, *args), name=name, daemon=True)
        worker.thread.start()
        return worker

    def _open(self, worker: _Worker, stage: Stage | SourceStage) -> bool:
        try:
            stage.start()
            return True
        except Exception as exc:
            worker.startup_error = exc if isinstance(exc, StartupError) else StartupError(f"{stage.name}: {exc}")
            if not isinstance(exc, StartupError):
                log.exception("%s failed to start", stage.name)
            return False
        finally:
            worker.ready.set()

    def _run_source(self, worker: _Worker) -> None:
        source = self.source
        out_q = self.queues[0] if self.queues else None
        if not self._open(worker, source):
            return
        error_wait = SOURCE_ERROR_FIRST_S
        try:
            while not self._stop.is_set():
                worker.busy_since, worker.busy_seq = time.monotonic(), -1
                try:
                    packet = source.produce()
                except Exception:
                    self._count_error(source.name)
                    self._stop.wait(error_wait)
                    error_wait = min(error_wait * 2, SOURCE_ERROR_MAX_S)
                    continue
                finally:
                    worker.busy_since = None
                error_wait = SOURCE_ERROR_FIRST_S
                if packet is None:
                    log.info("%s: end of stream", source.name)
                    self._put(out_q, _END)
                    return
                done = time.perf_counter_ns()
                packet.stage_done_ns[source.name] = done
                packet.stage_busy_ns[source.name] = source.last_read_ns
                # A source's "busy" time is the read itself; pacing sleeps are not charged to it.
                self.stats.record_stage(source.name, 0, source.last_read_ns)
                self._put(out_q, packet)
        finally:
            source.close()

    def _run_stage(self, worker: _Worker, stage: Stage, in_q: FrameQueue, out_q: FrameQueue | None) -> None:
        if not self._open(worker, stage):
            return
        try:
            while not self._stop.is_set():
                try:
                    item = in_q.get(timeout=GET_TIMEOUT_S)
                except Closed:
                    return
                if item is None:
                    continue
                if item is _END:
                    if out_q is None:
                        self.finished.set()
                    else:
                        self._put(out_q, _END)
                    return
                packet: FramePacket = item
                t_get = time.perf_counter_ns()
                worker.busy_since, worker.busy_seq = time.monotonic(), packet.seq
                try:
                    result = stage.process(packet)
                except Exception:
                    self._count_error(stage.name, packet.seq)
                    continue
                finally:
                    worker.busy_since = None
                done = time.perf_counter_ns()
                self.stats.record_stage(stage.name, t_get - packet.last_stamp_ns, done - t_get)
                if result is None:
                    continue
                result.stage_done_ns[stage.name] = done
                result.stage_busy_ns[stage.name] = done - t_get
                if out_q is not None:
                    self._put(out_q, result)
                else:
                    self._deliver(result, done)
        finally:
            stage.close()

    def _deliver(self, packet: FramePacket, done_ns: int) -> None:
        self.stats.record_output(packet, done_ns)
        for listener in self._delivery_listeners:
            listener(packet, done_ns)
        self._delivered += 1
        if self.max_frames is not None and self._delivered >= self.max_frames:
            log.info("frame limit reached (%d frames)", self._delivered)
            self._stop.set()
            self.finished.set()

    def _put(self, q: FrameQueue | None, item: object) -> None:
        if q is None:
            return
        while not self._stop.is_set():
            try:
                if q.put(item, timeout=GET_TIMEOUT_S):
                    return
            except Closed:
                return

    def _count_error(self, stage: str, seq: int = -1) -> None:
        self.stats.record_error(stage)
        n = self.stats.errors[stage]
        # Full traceback for the first few, then one line per 100 so a broken stage cannot flood the log.
        if n <= 3:
            log.exception("%s failed on frame %d (error #%d); the stream goes on", stage, seq, n)
        elif n % 100 == 0:
            log.error("%s has failed on %d frames so far", stage, n)

    def _run_monitor(self) -> None:
        """Watchdog for stuck stages, and the periodic status line."""
        next_status = time.monotonic() + self.status_interval_s
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for w in self._workers:
                since = w.busy_since
                if since is not None and now - since > self.watchdog_s and w.stuck_since != since:
                    w.stuck_since = since
                    self.stats.record_stuck(w.name)
                    log.warning("%s has been stuck for %.1f s (frame %d)", w.name, now - since, w.busy_seq)
                elif w.stuck_since is not None and since != w.stuck_since:
                    log.info("%s is running again after %.1f s", w.name, now - w.stuck_since)
                    w.stuck_since = None
            if self.status_interval_s > 0 and now >= next_status:
                next_status = now + self.status_interval_s
                log.info("%s", self.stats.status_line())
