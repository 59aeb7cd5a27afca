"""Builds the live pipeline from a Config and runs it until a signal or a limit stops it."""

from __future__ import annotations

import logging
import signal
import threading
import time

from facecast.capture.stage import CaptureStage, make_reader
from facecast.config import Config
from facecast.effects.stage import EffectStage, build_effects
from facecast.outputs.stage import OutputStage
from facecast.pipeline.runner import Pipeline
from facecast.pipeline.stats import PipelineStats
from facecast.tracking.face_mesh import TrackingStage
from facecast.types import STAGE_NAMES

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 2.0


class Daemon:
    """The live pipeline and the handles other parts (control API, bench) use to reach it."""

    def __init__(self, cfg: Config, max_frames: int | None = None) -> None:
        self.cfg = cfg
        self.stats = PipelineStats(STAGE_NAMES, window=cfg.stats.window)
        try:
            reader = make_reader(cfg.capture)
        except OSError as exc:
            from facecast.pipeline.stage import StartupError

            raise StartupError(f"capture: {exc}") from exc
        self.capture = CaptureStage(reader, cfg.capture.reconnect)
        self.tracking = TrackingStage(cfg.tracking)
        self.effect = EffectStage(build_effects(cfg.effect, self.stats), cfg.effect.active)
        self.output = OutputStage(cfg.outputs)
        policy = None if cfg.pipeline.queue_policy == "auto" else cfg.pipeline.queue_policy
        self.pipeline = Pipeline(
            self.capture,
            [self.tracking, self.effect, self.output],
            self.stats,
            queue_capacity=cfg.pipeline.queue_capacity,
            queue_policy=policy,
            watchdog_s=cfg.pipeline.watchdog_s,
            status_interval_s=cfg.stats.interval_s,
            max_frames=max_frames,
        )

    def start(self) -> None:
        self.pipeline.start()

    def stop(self) -> bool:
        return self.pipeline.stop(SHUTDOWN_TIMEOUT_S)


def run_daemon(cfg: Config, frames: int | None = None, seconds: float | None = None) -> int:
    """Run until SIGINT/SIGTERM, the end of a non-looping file, `frames` output frames or `seconds`."""
    daemon = Daemon(cfg, max_frames=frames)
    stop_requested = threading.Event()

    def on_signal(signum, _frame) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop_requested.set()
        daemon.pipeline.finished.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        daemon.start()
        log.info("running; Ctrl+C to stop")
        deadline = None if seconds is None else time.monotonic() + seconds
        while not daemon.pipeline.finished.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                log.info("time limit reached (%.1f s)", seconds)
                break
            daemon.pipeline.finished.wait(0.2 if remaining is None else min(0.2, remaining))
    finally:
        t0 = time.monotonic()
        clean = daemon.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
        log.info("stopped in %.2f s; %s", time.monotonic() - t0, daemon.stats.status_line())
    return 0 if clean else 1
