"""`facecast bench --soak MINUTES`: the live pipeline, with the config's outputs, for a long time.

A live show lasts hours: resident memory, fps and latency must stay flat. The soak runs the real
daemon at the source's own rate (realtime mode) and reports, per window (5 minutes by default):
delivered fps, end-to-end latency p50/p95/p99, process CPU, resident memory and dropped frames; and
over the whole run the RSS slope in MB/hour, a least-squares fit over regular samples (one
snapshot says nothing about a leak). Latencies come from a listener on the pipeline's delivery,
kept for the current window only, so the soak's own memory stays flat too.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
import psutil

from facecast.bench.run import STALL_S, BenchError, distribution
from facecast.config import Config
from facecast.types import FramePacket

log = logging.getLogger(__name__)

MB = 2**20
SAMPLE_MAX_S = 5.0  # RSS sampled this often (more often for short windows: ten samples per window)
MIN_WINDOW_S = 1.0  # a last, partial window shorter than this is left out
SHORT_SOAK_S = 600.0  # below this the slope is reported with a note saying what it is worth


@dataclass(slots=True)
class SoakOptions:
    minutes: float
    window_s: float = 300.0
    warmup_frames: int = 30


class LatencyTap:
    """Collects each delivered frame's end-to-end latency (ms) for the current window; `cut()` hands
    the window over and starts the next. Called on the last stage's thread: an append under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latency_ms = array("d")
        self.frames_total = 0

    def __call__(self, packet: FramePacket, done_ns: int) -> None:
        with self._lock:
            self._latency_ms.append((done_ns - packet.t_capture_ns) / 1e6)
            self.frames_total += 1

    def cut(self) -> array:
        with self._lock:
            window, self._latency_ms = self._latency_ms, array("d")
        return window


def rss_slope_mb_per_hour(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MB) samples, in MB per hour; None with fewer than 3 samples."""
    if len(samples) < 3:
        return None
    t = np.array([s[0] for s in samples]) / 3600.0
    if np.ptp(t) <= 0:
        return None
    slope, _ = np.polyfit(t, np.array([s[1] for s in samples]), 1)
    return round(float(slope), 3)


class _Window:
    """Counters at the start of a window, to report the window's own figures at its end."""

    def __init__(self, index: int, t0: float, proc: psutil.Process, dropped: int) -> None:
        self.index = index
        self.t0 = t0
        self.cpu0 = _cpu_s(proc)
        self.rss0 = proc.memory_info().rss / MB
        self.dropped0 = dropped

    def close(self, t1: float, start: float, latencies: array, proc: psutil.Process, dropped: int) -> dict[str, Any]:
        duration = t1 - self.t0
        values = np.frombuffer(latencies, dtype=np.float64) if len(latencies) else np.empty(0)
        lat = distribution(values.tolist()) if values.size else distribution([])
        rss1 = proc.memory_info().rss / MB
        return {
            "index": self.index,
            "start_s": round(self.t0 - start, 1),
            "end_s": round(t1 - start, 1),
            "frames": int(values.size),
            "fps": round(values.size / duration, 2) if duration > 0 else None,
            "latency_ms": {k: lat[k] for k in ("p50", "p95", "p99", "max")},
            "cpu_percent": round(100.0 * (_cpu_s(proc) - self.cpu0) / duration, 1) if duration > 0 else None,
            "rss_mb": {"start": round(self.rss0, 1), "end": round(rss1, 1)},
            "dropped": dropped - self.dropped0,
        }


def _cpu_s(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def run_soak(cfg: Config, opts: SoakOptions, system: dict[str, Any], progress=None) -> dict[str, Any]:
    """Run the daemon for `opts.minutes` after a warm-up of `opts.warmup_frames` frames and return the
    soak figures. Raises StartupError when a stage cannot start, BenchError when nothing comes out."""
    from facecast.daemon import Daemon

    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    daemon = Daemon(cfg)
    tap = LatencyTap()
    daemon.pipeline.add_delivery_listener(tap)
    proc = psutil.Process()
    stats, finished = daemon.stats, daemon.pipeline.finished
    duration_s = opts.minutes * 60.0
    sample_s = min(SAMPLE_MAX_S, opts.window_s / 10.0)
    windows: list[dict[str, Any]] = []
    samples: list[tuple[float, float]] = []
    notes: list[str] = []
    workers: dict[str, Any] = {}

    def dropped() -> int:
        return sum(stats.dropped().values())

    try:
        daemon.start()
        outputs = sorted(daemon.output.workers)
        workers = dict(daemon.output.workers)  # the stage lets go of them at stop: keep them for their figures
        _wait_frames(daemon, tap, opts.warmup_frames)
        start = time.monotonic()
        end = start + duration_s
        tap.cut()  # the warm-up's frames are not the soak's
        window = _Window(0, start, proc, dropped())
        next_sample = start
        last_frames, last_change = tap.frames_total, start
        while True:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((round(now - start, 3), round(proc.memory_info().rss / MB, 2)))
                next_sample += sample_s
            if finished.is_set() or now >= end or now >= window.t0 + opts.window_s:
                if now - window.t0 >= MIN_WINDOW_S or not windows:
                    closed = window.close(now, start, tap.cut(), proc, dropped())
                    windows.append(closed)
                    say(
                        f"soak window {closed['index'] + 1}: {closed['start_s']:.0f}-{closed['end_s']:.0f} s, "
                        f"{closed['fps']} fps, latency p95 {closed['latency_ms']['p95']} ms, "
                        f"RSS {closed['rss_mb']['end']} MB"
                    )
                if finished.is_set():
                    notes.append(f"the pipeline stopped after {now - start:.0f} s (the source ended?)")
                    break
                if now >= end:
                    break
                window = _Window(window.index + 1, now, proc, dropped())
            if tap.frames_total != last_frames:
                last_frames, last_change = tap.frames_total, now
            elif now - last_change > STALL_S:
                raise BenchError(f"no frame came out for {STALL_S:.0f} s during the soak")
            finished.wait(max(0.0, min(next_sample, window.t0 + opts.window_s, end) - time.monotonic()))
        measured_s = time.monotonic() - start
        if measured_s < SHORT_SOAK_S:
            notes.append(
                f"measured for {measured_s / 60:.1f} min: an RSS slope over less than "
                f"{SHORT_SOAK_S / 60:.0f} minutes mostly shows warm-up, not a leak"
            )
    finally:
        shutdown = daemon.stop_and_report()
    output_figures = {name: w.snapshot() for name, w in workers.items()}  # after the stop: every frame written
    steady = [s for s in samples if windows and s[0] >= windows[0]["end_s"]] if len(windows) > 1 else []
    reader = daemon.capture.reader
    return {
        "soak": {
            "minutes": opts.minutes,
            "measured_s": round(measured_s, 1),
            "window_s": opts.window_s,
            "warmup_frames": opts.warmup_frames,
            "source": {
                "kind": cfg.capture.source,
                "description": reader.describe(),
                "fps": round(float(reader.fps), 3),
            },
            "effect": cfg.effect.active,
            "outputs": outputs,
            "rss_slope_mb_per_hour": rss_slope_mb_per_hour(samples),
            # After the first window: allocator and encoder warm-up left out.
            "rss_slope_after_first_window_mb_per_hour": rss_slope_mb_per_hour(steady),
            "rss_mb": {
                "start": samples[0][1] if samples else None,
                "end": samples[-1][1] if samples else None,
                "max": max(s[1] for s in samples) if samples else None,
            },
            "rss_samples": [list(s) for s in samples],
            "windows": windows,
            "output_figures": output_figures,
            "shutdown": shutdown.text(),
            "notes": notes,
        },
        "system": system,
    }


def _wait_frames(daemon, tap: LatencyTap, count: int) -> None:
    last, last_change = tap.frames_total, time.monotonic()
    while tap.frames_total < count:
        if daemon.pipeline.finished.wait(0.05):
            raise BenchError(f"the source ended after {tap.frames_total} frames, during the warm-up")
        if tap.frames_total != last:
            last, last_change = tap.frames_total, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            raise BenchError(f"no frame came out for {STALL_S:.0f} s during the warm-up")


def format_soak(data: dict[str, Any]) -> str:
    s = data["soak"]

    def num(v, fmt: str = ".1f") -> str:
        return "-" if v is None else format(v, fmt)

    windows = f"windows of {s['window_s']:g} s"
    lines = [
        f"facecast bench --soak: {s['source']['description']}, effect {s['effect']}, "
        f"outputs: {', '.join(s['outputs']) or 'none'}",
        f"measured   {s['measured_s']:.0f} s after {s['warmup_frames']} warm-up frames, {windows}",
        "",
        f"{'window s':<13} {'fps':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'cpu %':>7} {'RSS MB':>8}"
        f" {'dropped':>8}",
    ]
    for w in s["windows"]:
        lat = w["latency_ms"]
        span = f"{w['start_s']:.0f}-{w['end_s']:.0f}"
        lines.append(
            f"{span:<13} {num(w['fps']):>7} {num(lat['p50'], '.2f'):>8} {num(lat['p95'], '.2f'):>8} "
            f"{num(lat['p99'], '.2f'):>8} {num(w['cpu_percent']):>7} {num(w['rss_mb']['end']):>8} {w['dropped']:>8}"
        )
    rss = s["rss_mb"]
    slope = s["rss_slope_mb_per_hour"]
    line = (
        f"RSS        {num(rss['start'])} -> {num(rss['end'])} MB (max {num(rss['max'])}); slope "
        f"{num(slope, '+.1f')} MB/hour over {len(s['rss_samples'])} samples"
    )
    if s["rss_slope_after_first_window_mb_per_hour"] is not None:
        line += f", {s['rss_slope_after_first_window_mb_per_hour']:+.1f} MB/hour after the first window"
    lines += ["", line]
    for name, o in s["output_figures"].items():
        lines.append(f"output     {name} ({o['type']}): sent {o['sent']}, dropped {o['dropped']}, errors {o['errors']}")
    if s["shutdown"]:
        lines.append(f"shutdown   {s['shutdown']}")
    lines += [f"note       {n}" for n in s["notes"]]
    return "\n".join(lines)
