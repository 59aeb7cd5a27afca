"""One thread per output: its own frame slot or queue, its own pacer, its own failures.

The output stage hands every frame to each worker without waiting (`offer`); a worker that is slow,
blocked in a receiver's socket or reopening after a failure delays nobody but itself.

Worker threads are not daemon threads: the interpreter waits for them instead of killing a
recording mid-flush. Stopping is bounded by a deadline the stage gives (`pipeline.shutdown_timeout_s`);
a worker that sees the main thread gone (the program is exiting without having stopped it) stops
by itself, so nothing is left running forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from facecast.media.video import WrittenVideo
from facecast.outputs.base import Output, OutputUnavailable
from facecast.outputs.pacer import Pacer
from facecast.pipeline.queues import Closed, FrameQueue
from facecast.pipeline.stats import PipelineStats, percentiles
from facecast.types import FramePacket

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often a waiting worker looks at its stop flag
EVERY_QUEUE_FRAMES = 32  # `every` outputs (recording): about half a second of frames at 60 fps
REOPEN_FIRST_S = 0.5
REOPEN_MAX_S = 8.0
STOP_S = 60.0  # at stop, when no deadline is given: queued frames written, file closed within this
RATE_WINDOW_S = 2.0
# A paced output whose input comes at about its own rate waits up to this fraction of a period past
# a deadline for a frame that is due. Two 60 fps clocks with a little jitter would otherwise keep
# swapping a repeat and a drop (visible judder) whenever frames arrive close to the deadlines.
GRACE_PERIODS = 0.3


@runtime_checkable
class WritesFiles(Protocol):
    """An output that finishes files (a recording): it says which, and can be told to give up."""

    def written(self) -> list[WrittenVideo]: ...

    def abandon(self) -> None: ...


@dataclass(slots=True)
class OutputReport:
    """What one output did when it was stopped: closed in time (and which files it finished), or not."""

    name: str
    kind: str
    finished: bool
    close_s: float
    files: list[WrittenVideo] = field(default_factory=list)
    doing: str = ""  # when not finished: what it was still doing

    def describe(self) -> str:
        if not self.finished:
            return f"output {self.name} ({self.kind}) did not finish in time: {self.doing}"
        if self.files:
            return ", ".join(f"finalised {f.describe()}" for f in self.files)
        return f"{self.name} closed"


class LatestSlot:
    """Holds the newest packet only. `put` never blocks; a packet replaced before anyone took it
    is counted in `replaced`. `take` returns each packet at most once, newest first, so what comes
    out is always in the order it went in."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._packet: FramePacket | None = None
        self._fresh = False
        self.replaced = 0
        self._last_put = 0.0
        self.interval_s = 0.0  # smoothed time between puts: how fast frames come in

    def put(self, packet: FramePacket) -> None:
        now = time.perf_counter()
        with self._cond:
            if self._fresh:
                self.replaced += 1
            self._packet, self._fresh = packet, True
            if self._last_put:
                gap = now - self._last_put
                self.interval_s = gap if not self.interval_s else 0.9 * self.interval_s + 0.1 * gap
            self._last_put = now
            self._cond.notify_all()

    def take(self, timeout: float = 0.0) -> FramePacket | None:
        """The newest packet not taken yet; None when none arrived within `timeout` seconds."""
        with self._cond:
            if not self._fresh and timeout > 0:
                self._cond.wait_for(lambda: self._fresh, timeout)
            if not self._fresh:
                return None
            self._fresh = False
            return self._packet

    def discard(self) -> int:
        with self._cond:
            n = int(self._fresh)
            self._fresh = False
            return n


class OutputWorker:
    """Runs one Output on its own thread: open, then frames by its delivery mode, then close.

    A write that raises is logged and counted; the output is closed and reopened with back-off
    (0.5 s doubling to 8 s) while the others go on. open() and close() run on this thread too, so
    outputs may hold thread-bound resources (an OpenGL context for Spout).
    """

    def __init__(
        self,
        output: Output,
        *,
        stats: PipelineStats | None = None,
        lossless: bool = False,
        queue_frames: int = EVERY_QUEUE_FRAMES,
        reopen_first_s: float = REOPEN_FIRST_S,
        reopen_max_s: float = REOPEN_MAX_S,
    ) -> None:
        self.output = output
        output.source_lossless = lossless
        self.name = output.name
        self.delivery = output.delivery
        self.stats = stats
        self.reopen_first_s = reopen_first_s
        self.reopen_max_s = reopen_max_s
        self._slot = LatestSlot()
        # A recording of a file must not lose a frame: the pipeline waits for it. A live source
        # must never wait for a recorder: the oldest queued frame is dropped (and counted).
        self._queue: FrameQueue[FramePacket] = FrameQueue(
            f"output.{self.name}", queue_frames, "block" if lossless else "drop_oldest"
        )
        self._pacer: Pacer | None = None
        self._stop = threading.Event()
        self._deadline = 0.0  # monotonic time by which a stopping worker must have closed its output
        self._stopped_at: float | None = None
        self._ended_at: float | None = None
        self._files_before_stop = 0
        self.ready = threading.Event()
        self.open_error: BaseException | None = None
        self.state = "starting"
        self._thread = threading.Thread(target=self._run, name=f"output.{self.name}", daemon=False)
        self._last: FramePacket | None = None
        self._healthy = False
        self._backoff = reopen_first_s
        self._reopen_at = 0.0
        self._down_since = 0.0
        self.busy_since: float | None = None  # monotonic time the current write started
        self.stuck_reported = False
        self._warned_drops = 0
        # counters (written by the worker thread only)
        self.sent = 0
        self.fresh = 0
        self.repeated = 0
        self.discarded = 0  # frames thrown away while the output was down
        self.errors = 0
        self.reopens = 0
        self._lock = threading.Lock()
        self._latency_ms: deque[float] = deque(maxlen=600)
        self._send_times: deque[float] = deque(maxlen=960)

    # -- called by the output stage ------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def offer(self, packet: FramePacket) -> None:
        """Hand a frame over. Never waits, except for an `every` output fed by a file (lossless)."""
        if self.delivery == "every":
            while not self._stop.is_set():
                try:
                    if self._queue.put(packet, timeout=POLL_S):
                        break
                except Closed:
                    return
            dropped = self._queue.dropped
            if dropped > self._warned_drops and (self._warned_drops == 0 or dropped >= self._warned_drops + 100):
                self._warned_drops = dropped
                log.warning(
                    "output %s cannot keep up: %d frames dropped so far (a lighter preset or a smaller size helps)",
                    self.name,
                    dropped,
                )
        else:
            self._slot.put(packet)

    def stop(self, deadline: float | None = None) -> None:
        """Ask the thread to finish by `deadline` (monotonic; default STOP_S from now): an `every`
        output first writes every frame still queued, then the output is closed (a recording flushes
        its encoder and is finalised). A second call keeps the first deadline."""
        if self._stop.is_set():
            return
        self._stopped_at = time.monotonic()
        self._deadline = deadline if deadline is not None else self._stopped_at + STOP_S
        if isinstance(self.output, WritesFiles):
            self._files_before_stop = len(self.output.written())
        self._stop.set()

    def join(self, timeout: float) -> bool:
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def abandon(self) -> None:
        """The deadline has passed: ask the output to give up what it can give up (a remux)."""
        if isinstance(self.output, WritesFiles):
            self.output.abandon()

    def report(self) -> OutputReport:
        """After stop(): closed or not, how long closing took, the files finished since the stop."""
        finished = not self._thread.is_alive()
        start = self._stopped_at
        close_s = 0.0 if start is None else (self._ended_at or time.monotonic()) - start
        files = self.output.written()[self._files_before_stop :] if isinstance(self.output, WritesFiles) else []
        doing = ""
        if not finished:
            path = getattr(self.output, "path", None)
            doing = f"{self.state}{f' {path}' if path is not None else ''}"
        return OutputReport(self.name, self.output.kind, finished, round(close_s, 3), files, doing)

    @property
    def dropped(self) -> int:
        return self._slot.replaced + self._queue.dropped + self.discarded

    def busy_for(self, now: float) -> float:
        since = self.busy_since
        return 0.0 if since is None else now - since

    def send_rate(self) -> float:
        with self._lock:
            times = list(self._send_times)
        if len(times) < 2:
            return 0.0
        recent = [t for t in times if t >= times[-1] - RATE_WINDOW_S]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def status_text(self) -> str:
        """A few words for the console status line; empty for a healthy window or recording."""
        if self.state != "running":
            return f"{self.name} {self.state}"
        if self.delivery != "paced":
            return ""
        text = f"{self.name} {self.send_rate():.1f} fps"
        receivers = self.output.stats().get("receivers")
        if receivers is not None:
            text += f" {receivers} receiver{'' if receivers == 1 else 's'}"
        return text

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            latency = percentiles(self._latency_ms)
        snap: dict[str, Any] = {
            "type": self.output.kind,
            "delivery": self.delivery,
            "state": self.state,
            "fps": round(self.send_rate(), 2),
            "sent": self.sent,
            "new": self.fresh,
            "repeated": self.repeated,
            "dropped": self.dropped,
            "errors": self.errors,
            "reopens": self.reopens,
            "latency_ms": latency,
        }
        if self.delivery == "paced":
            snap["target_fps"] = self.output.fps
            snap["pacer_resets"] = self._pacer.resets if self._pacer else 0
        try:
            snap.update(self.output.stats())
        except Exception as exc:  # a figure must never break the stats
            snap["extra"] = f"unavailable: {exc}"
        return snap

    # -- the thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self.output.open()
        except BaseException as exc:  # reported by the stage: skipped (unavailable) or start-up error
            self.open_error = exc
            self.state = "unavailable" if isinstance(exc, OutputUnavailable) else "failed"
            self.ready.set()
            return
        if self.delivery == "paced":
            if self.output.fps <= 0:
                self.open_error = ValueError(f"output {self.name}: a paced output needs fps > 0")
                self.state = "failed"
                self._close_output()
                self.ready.set()
                return
            self._pacer = Pacer(self.output.fps)
        self._healthy = True
        self.state = "running"
        self.ready.set()
        try:
            while self._keep_going():
                if not self._healthy:
                    self._reopen()
                    continue
                packet, fresh = self._next()
                if packet is not None:
                    self._send(packet, fresh)
        finally:
            if self._healthy:
                self.state = "closing"
                self._close_output()
            self._ended_at = time.monotonic()
            self.state = "stopped"
            self._log_summary()

    def _keep_going(self) -> bool:
        if not self._stop.is_set():
            if threading.main_thread().is_alive():
                return True
            log.warning("output %s: the program is exiting without stopping it; closing it now", self.name)
            self.stop()
        # Stopping: an `every` output (a recording) writes what is still queued, within the deadline.
        if self.delivery == "every" and self._healthy and len(self._queue) > 0:
            if time.monotonic() < self._deadline:
                self.state = "writing queued frames"
                return True
            log.warning("output %s: %d queued frames not written (stop deadline reached)", self.name, len(self._queue))
        return False

    def _next(self) -> tuple[FramePacket | None, bool]:
        if self.delivery == "every":
            try:
                timeout = 0.0 if self._stop.is_set() else POLL_S
                return self._queue.get(timeout=timeout), True
            except Closed:
                return None, False
        if self.delivery == "latest":
            return self._slot.take(POLL_S), True
        # paced
        assert self._pacer is not None
        if self._last is None:  # nothing sent yet: the schedule starts with the first frame
            packet = self._slot.take(POLL_S)
            if packet is not None:
                self._pacer.reset()
                self._pacer.wait(self._stop)
            return packet, True
        if not self._pacer.wait(self._stop):
            return None, False
        packet = self._slot.take(0.0)
        period = self._pacer.period
        if packet is None and 0 < self._slot.interval_s < 1.25 * period:
            packet = self._slot.take(GRACE_PERIODS * period)  # due any moment: worth a short wait
        if packet is None:
            return self._last, False  # nothing new at the deadline: repeat the last frame
        return packet, True

    def _send(self, packet: FramePacket, fresh: bool) -> None:
        self.busy_since = time.monotonic()
        try:
            self.output.write(packet)
        except Exception:
            self.busy_since = None
            self._failed(packet.seq)
            return
        self.busy_since = None
        done_ns = time.perf_counter_ns()
        self.sent += 1
        if fresh:
            self.fresh += 1
        else:
            self.repeated += 1
        with self._lock:
            self._send_times.append(done_ns / 1e9)
            if fresh:
                self._latency_ms.append((done_ns - packet.t_capture_ns) / 1e6)
        self._last = packet
        self._backoff = self.reopen_first_s

    def _failed(self, seq: int) -> None:
        self.errors += 1
        if self.stats is not None:
            self.stats.record_error(f"output.{self.name}")
        if self.errors <= 3:
            log.exception(
                "output %s failed on frame %d (error #%d); reopening it in %.1f s, the other outputs go on",
                self.name,
                seq,
                self.errors,
                self._backoff,
            )
        elif self.errors % 100 == 0:
            log.error("output %s has failed %d times so far", self.name, self.errors)
        self._close_output()
        self._healthy = False
        self.state = "reopening"
        self._down_since = time.monotonic()
        self._reopen_at = self._down_since + self._backoff

    def _reopen(self) -> None:
        # While down, frames keep arriving: throw them away (counted) so nobody waits for us.
        while not self._stop.is_set():
            self.discarded += self._slot.discard() + self._queue.clear()
            remaining = self._reopen_at - time.monotonic()
            if remaining <= 0:
                break
            self._stop.wait(min(POLL_S, remaining))
        if self._stop.is_set():
            return
        try:
            self.output.open()
        except Exception as exc:
            self._backoff = min(self._backoff * 2, self.reopen_max_s)
            self._reopen_at = time.monotonic() + self._backoff
            log.warning("output %s: reopening failed (%s); next try in %.1f s", self.name, exc, self._backoff)
            return
        self._healthy = True
        self.state = "running"
        self.reopens += 1
        if self._pacer is not None:
            self._pacer.reset()
        log.info("output %s reopened after %.1f s", self.name, time.monotonic() - self._down_since)

    def _close_output(self) -> None:
        try:
            self.output.close()
        except Exception:
            log.exception("output %s failed to close", self.name)

    def _log_summary(self) -> None:
        if not self.sent and not self.errors:
            return
        lat = self.snapshot()["latency_ms"]
        p50 = "-" if lat["p50"] is None else f"{lat['p50']:.1f}"
        log.info(
            "output %s: sent %d frames (%d new, %d repeated), dropped %d, errors %d, reopens %d; latency p50 %s ms",
            self.name,
            self.sent,
            self.fresh,
            self.repeated,
            self.dropped,
            self.errors,
            self.reopens,
            p50,
        )
