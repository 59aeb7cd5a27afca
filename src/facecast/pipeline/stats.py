"""Per-stage timing, queue waits, drops, errors and end-to-end latency of the live pipeline.

One `PipelineStats` is shared by the runner threads (which record) and by whoever reads it: the
console status line, the control API and `facecast bench` all call `snapshot()`.

Every stage takes the lock once per frame to record, so the lock guards only appends and copies:
percentiles, medians and rates are computed on copies, after the lock is released.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from facecast.pipeline.queues import FrameQueue
from facecast.types import FramePacket

PERCENTILES = (50, 95, 99)
FPS_WINDOW_S = 2.0


@dataclass(slots=True)
class FrameTiming:
    """One delivered frame, as a trace keeps it. Times are time.perf_counter_ns() values."""

    seq: int
    t_capture_ns: int
    stage_done_ns: dict[str, int]  # when each stage finished with the frame (the last one = delivery)
    stage_busy_ns: dict[str, int]  # time each stage worked on it, queue waits excluded
    faces: int | None  # faces found; None when tracking did not run
    size: tuple[int, int]  # width, height of the delivered image


def percentiles(samples: Iterable[float]) -> dict[str, float | None]:
    values = np.fromiter(samples, dtype=np.float64)
    if values.size == 0:
        return {f"p{p}": None for p in PERCENTILES}
    return {f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True)}


def _rate(times: list[float]) -> float:
    """Frames per second over the last FPS_WINDOW_S of delivery times (seconds, in order)."""
    if len(times) < 2:
        return 0.0
    first = bisect.bisect_left(times, times[-1] - FPS_WINDOW_S)
    span = times[-1] - times[first]
    return (len(times) - 1 - first) / span if span > 0 else 0.0


class PipelineStats:
    def __init__(self, stage_names: Iterable[str], window: int = 600) -> None:
        self.stage_names = tuple(stage_names)
        self.window = window
        self._lock = threading.Lock()
        self._busy_ms: dict[str, deque[float]] = {s: deque(maxlen=window) for s in self.stage_names}
        self._wait_ms: dict[str, deque[float]] = {s: deque(maxlen=window) for s in self.stage_names}
        self._latency_ms: deque[float] = deque(maxlen=window)
        self._output_times: deque[float] = deque(maxlen=max(window, 2))
        self.errors: Counter[str] = Counter()
        self.stuck: Counter[str] = Counter()
        self.frames_out = 0
        self.frames_with_face = 0
        self.frames_tracked = 0
        self.faces_last = 0
        self.started_at = time.monotonic()
        self._queues: list[FrameQueue] = []
        self._drops_at_reset: dict[str, int] = {}
        # Extra figures from plug-ins (e.g. connected NDI receivers), read at snapshot time.
        self._providers: dict[str, Callable[[], Any]] = {}
        # Short texts plug-ins add to the console status line (e.g. "ndi 60.0 fps 1 receiver").
        self._status_parts: list[Callable[[], str]] = []
        # Every delivered frame's timings, only while a trace is on (`facecast bench`); bounded.
        self._trace: deque[FrameTiming] | None = None

    def watch_queues(self, queues: Iterable[FrameQueue]) -> None:
        self._queues = list(queues)

    def add_provider(self, key: str, provider: Callable[[], Any]) -> None:
        self._providers[key] = provider

    def add_status_part(self, part: Callable[[], str]) -> None:
        self._status_parts.append(part)

    def record_stage(self, stage: str, wait_ns: int, busy_ns: int) -> None:
        with self._lock:
            self._wait_ms[stage].append(wait_ns / 1e6)
            self._busy_ms[stage].append(busy_ns / 1e6)

    def record_error(self, stage: str) -> None:
        with self._lock:
            self.errors[stage] += 1

    def record_stuck(self, stage: str) -> None:
        with self._lock:
            self.stuck[stage] += 1

    def record_output(self, packet: FramePacket, done_ns: int) -> None:
        with self._lock:
            self.frames_out += 1
            self._latency_ms.append((done_ns - packet.t_capture_ns) / 1e6)
            self._output_times.append(done_ns / 1e9)
            if self._trace is not None:
                self._trace.append(
                    FrameTiming(
                        packet.seq,
                        packet.t_capture_ns,
                        dict(packet.stage_done_ns),
                        dict(packet.stage_busy_ns),
                        None if packet.faces is None else len(packet.faces),
                        (packet.image.shape[1], packet.image.shape[0]),
                    )
                )
            if packet.faces is not None:
                self.frames_tracked += 1
                self.faces_last = len(packet.faces)
                if packet.faces:
                    self.frames_with_face += 1

    def start_trace(self, max_frames: int) -> None:
        """Keep the timings of every delivered frame from now on (the last `max_frames` of them).

        Unlike the percentile window, a trace lets a benchmark cover exactly the frames it measured,
        frame by frame. `reset()` leaves it alone.
        """
        with self._lock:
            self._trace = deque(maxlen=max_frames)

    def trace(self) -> list[FrameTiming]:
        """The traced frames in delivery order (empty when no trace was started)."""
        with self._lock:
            return list(self._trace or ())

    def reset(self) -> None:
        """Forget every sample (e.g. after a benchmark's warm-up); counters restart from zero."""
        with self._lock:
            for d in (*self._busy_ms.values(), *self._wait_ms.values(), self._latency_ms, self._output_times):
                d.clear()
            self.errors.clear()
            self.stuck.clear()
            self.frames_out = self.frames_with_face = self.frames_tracked = 0
            self.started_at = time.monotonic()
            self._drops_at_reset = {q.name: q.dropped for q in self._queues}

    def fps(self) -> float:
        with self._lock:
            times = list(self._output_times)
        return _rate(times)

    def dropped(self) -> dict[str, int]:
        return {q.name: q.dropped - self._drops_at_reset.get(q.name, 0) for q in self._queues}

    def recent_latency_ms(self, frames: int = 30) -> float | None:
        """Median end-to-end latency of the last `frames` delivered frames: the batch governor's
        signal, quicker to react than the p50 of the whole window."""
        with self._lock:
            recent = list(itertools.islice(reversed(self._latency_ms), frames))
        return float(np.median(recent)) if recent else None

    def live_figures(self) -> tuple[float, float | None]:
        """fps and end-to-end latency p50 only: cheap enough for an overlay drawn on every frame."""
        with self._lock:
            times = list(self._output_times)
            latency = list(self._latency_ms)
        return _rate(times), (float(np.median(latency)) if latency else None)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:  # copies only: the figures are computed after the lock is released
            busy = {s: list(self._busy_ms[s]) for s in self.stage_names}
            wait = {s: list(self._wait_ms[s]) for s in self.stage_names}
            latency = list(self._latency_ms)
            times = list(self._output_times)
            frames, with_face, tracked = self.frames_out, self.frames_with_face, self.frames_tracked
            faces, errors, stuck = self.faces_last, dict(self.errors), dict(self.stuck)
            started_at = self.started_at
        snap: dict[str, Any] = {
            "frames": frames,
            "fps": round(_rate(times), 2),
            "latency_ms": percentiles(latency),
            "stages": {s: {**percentiles(busy[s]), "wait": percentiles(wait[s])} for s in self.stage_names},
            "tracked_ratio": (with_face / tracked) if tracked else 0.0,
            "faces": faces,
            "errors": errors,
            "stuck": stuck,
            "uptime_s": round(time.monotonic() - started_at, 1),
        }
        snap["dropped"] = self.dropped()
        for key, provider in self._providers.items():
            try:
                snap[key] = provider()
            except Exception as exc:  # a plug-in's figure must never break the stats
                snap[key] = f"unavailable: {exc}"
        return snap

    def status_line(self) -> str:
        s = self.snapshot()

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        stage_part = " ".join(f"{name}={ms(v['p50'])}" for name, v in s["stages"].items())
        drops = sum(s["dropped"].values())
        errors = sum(s["errors"].values())
        return (
            f"{s['fps']:.1f} fps | latency p50 {ms(s['latency_ms']['p50'])} ms p95 {ms(s['latency_ms']['p95'])} ms"
            f" | stage p50 ms: {stage_part} | faces {s['faces']} | dropped {drops} | errors {errors}"
            f" | frames {s['frames']}"
        ) + "".join(f" | {text}" for text in self._status_texts() if text)

    def _status_texts(self) -> list[str]:
        texts = []
        for part in self._status_parts:
            try:
                texts.append(part())
            except Exception as exc:  # a plug-in's text must never break the status line
                texts.append(f"unavailable: {exc}")
        return texts
