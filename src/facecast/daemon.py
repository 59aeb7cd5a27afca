"""Builds the live pipeline from a Config and runs it until a signal or a limit stops it."""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from facecast.capture.stage import CaptureStage, make_reader
from facecast.characters.library import CharacterLibrary
from facecast.config import Config
from facecast.control.actions import Controls
from facecast.control.service import ControlSurfaces
from facecast.effects.stage import EffectStage, build_effects
from facecast.engines.onnxruntime import EngineError
from facecast.engines.pool import EnginePool
from facecast.jobs.executors import ExecutorUnavailable, make_executor
from facecast.jobs.service import JobService, default_kinds
from facecast.outputs.stage import OutputStage
from facecast.outputs.worker import OutputReport
from facecast.pipeline.runner import Pipeline
from facecast.pipeline.stage import StartupError
from facecast.pipeline.stats import PipelineStats
from facecast.pipeline.work_size import WorkSize
from facecast.threads import apply_threads, plan_threads
from facecast.tracking.face_mesh import TrackingStage
from facecast.types import STAGE_NAMES

log = logging.getLogger(__name__)

THREADS_STOP_S = 2.0  # the pipeline's own threads, beyond the outputs' limit (pipeline.shutdown_timeout_s)
CONTROL_STOP_S = 2.0  # the control API, once everything else has stopped (a quit request gets its answer)


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What stopping the daemon finalised: each output closed in time (with the files it finished),
    or named as still busy at the limit."""

    clean: bool  # every thread ended within its limit
    seconds: float
    outputs: list[OutputReport] = field(default_factory=list)

    def text(self) -> str:
        parts = [r.describe() for r in self.outputs if r.files or not r.finished]
        closed = [r.name for r in self.outputs if r.finished and not r.files]
        if closed:
            parts.append(f"closed {', '.join(closed)}")
        return f"stopped in {self.seconds:.1f} s" + (f": {'; '.join(parts)}" if parts else "")


class Daemon:
    """The live pipeline and the handles other parts (control API, bench) use to reach it."""

    def __init__(self, cfg: Config, max_frames: int | None = None) -> None:
        self.cfg = cfg
        self.threads = apply_threads(plan_threads(cfg.threads))  # every pool sized once, deliberately
        self.stats = PipelineStats(STAGE_NAMES, window=cfg.stats.window)
        try:
            reader = make_reader(cfg.capture)
        except OSError as exc:
            raise StartupError(f"capture: {exc}") from exc
        self.capture = CaptureStage(reader, cfg.capture.reconnect)
        self.tracking = TrackingStage(cfg.tracking)
        self.characters = build_library(cfg)
        self._engines: EnginePool | None = None
        try:
            effects = build_effects(cfg.effect, self.stats, self.characters, self.engines)
        except EngineError as exc:  # missing weights, GPU asked for and absent: say so at start-up
            raise StartupError(f"effect: {exc}") from exc
        # The effect works at the size the running outputs need (pipeline.work_size), followed live.
        work_size = WorkSize(cfg.pipeline.work_size, cfg.outputs, running=lambda: self.output.workers)
        self.effect = EffectStage(effects, cfg.effect.active, stats=self.stats, work_size=work_size)
        self.output = OutputStage(
            cfg.outputs,
            self.stats,
            lossless=self.capture.lossless,
            watchdog_s=cfg.pipeline.watchdog_s,
            close_timeout_s=cfg.pipeline.shutdown_timeout_s,
        )
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
        self._stop_lock = threading.Lock()
        self._shutdown: ShutdownReport | None = None  # set once stop_and_report() has finished
        self.controls = Controls(self)  # the live actions: hotkeys, control API, `facecast ctl`
        self.jobs: JobService | None = None  # offline video jobs, run by the batch thread
        if cfg.jobs.enabled:
            self.jobs = JobService(
                cfg.jobs,
                default_kinds(cfg, self.engines),
                live_fps=self.stats.fps,
                live_latency_ms=self.stats.recent_latency_ms,
                executor=make_executor(cfg),
            )
            self.stats.add_provider("jobs", self.jobs.snapshot)
            try:  # connect now: a wrong jobs.ray.address is a start-up error, before the live path starts
                self.jobs.runner.executor.start()
            except ExecutorUnavailable as exc:
                raise StartupError(f"jobs: {exc}") from exc

    def engines(self) -> EnginePool:
        """The one engine pool (loaded on first use): live effects and batch jobs share its sessions."""
        if self._engines is None:
            engine = self.cfg.engine
            if not engine.cpu_threads:
                engine = engine.model_copy(update={"cpu_threads": self.threads.onnxruntime})
            self._engines = EnginePool(self.cfg.models.resolved_dir(), engine)
            self.stats.add_provider("engines", self._engines.loaded)
        return self._engines

    def start(self) -> None:
        self.pipeline.start()
        if self.jobs is not None:
            self.jobs.runner.start()  # after the live path: a queued job never delays the first frame

    def request_stop(self, reason: str) -> None:
        """Ask `run_daemon` to stop (quit action); returns at once."""
        log.info("stop requested: %s", reason)
        self.pipeline.finished.set()

    @property
    def stopping(self) -> bool:
        return self.pipeline.finished.is_set()

    def stop(self) -> bool:
        """Stop everything (see stop_and_report); True when every thread ended in time."""
        return self.stop_and_report().clean

    def stop_and_report(self) -> ShutdownReport:
        """Stop the batch thread and the pipeline; every output writes what it was given and closes
        (recordings finalised) within pipeline.shutdown_timeout_s. Safe to call from several threads
        (the quit action, the main loop): the first does it, the others wait for it and get the same
        report of what was finalised."""
        with self._stop_lock:
            if self._shutdown is None:
                t0 = time.monotonic()
                self.pipeline.finished.set()
                if self.jobs is not None:
                    self.jobs.runner.stop(timeout=0.5)  # a running job is queued again for the next start
                clean = self.pipeline.stop(self.cfg.pipeline.shutdown_timeout_s + THREADS_STOP_S)
                outputs = list(self.output.report)
                clean = clean and all(r.finished for r in outputs)
                self._shutdown = ShutdownReport(clean, round(time.monotonic() - t0, 3), outputs)
            return self._shutdown

    def still_closing(self) -> list[str]:
        """The outputs still closing (while stop() runs): name and what each is doing."""
        return [f"{r.name} ({r.doing})" for r in self.output.report_now() if not r.finished]


def unfinished_writers() -> list[str]:
    """Output threads still running after the daemon stopped: past the shutdown limit (a hung
    device or flush). They are not daemon threads, so the interpreter would wait for them forever."""
    main = threading.main_thread()
    return [t.name for t in threading.enumerate() if t is not main and not t.daemon and t.name.startswith("output.")]


def build_library(cfg: Config) -> CharacterLibrary:
    """The character library the effects share. Refused files are logged; the daemon goes on."""
    from facecast.assets import CHARACTERS_DIR

    folder = cfg.characters.dir or CHARACTERS_DIR
    library = CharacterLibrary(folder, cfg.characters)
    library.load_all()
    if library.active is None and cfg.effect.active in ("animate", "swap"):
        log.error(
            "characters: no usable character in %s; %s shows nothing until one is added "
            "(facecast character check FILE says why an image is refused)",
            folder,
            cfg.effect.active,
        )
    return library


def run_daemon(cfg: Config, frames: int | None = None, seconds: float | None = None) -> int:
    """Run until SIGINT/SIGTERM, the end of a non-looping file, `frames` output frames or `seconds`."""
    daemon = Daemon(cfg, max_frames=frames)
    stop_requested = threading.Event()

    def on_signal(signum, _frame) -> None:
        name = signal.Signals(signum).name
        if stop_requested.is_set():
            busy = daemon.still_closing()
            log.warning(
                "%s received: already stopping; waiting for %s (at most %.0f s in all, pipeline.shutdown_timeout_s)",
                name,
                ", ".join(busy) or "the outputs",
                cfg.pipeline.shutdown_timeout_s,
            )
            return
        log.info("%s received: stopping", name)
        stop_requested.set()
        daemon.pipeline.finished.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    surfaces = None
    try:
        surfaces = ControlSurfaces(daemon)  # checks the hotkey bindings, takes the API port
        daemon.start()
        surfaces.start()
        log.info("running; Ctrl+C to stop")
        deadline = None if seconds is None else time.monotonic() + seconds
        while not daemon.pipeline.finished.is_set():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                log.info("time limit reached (%.1f s)", seconds)
                break
            daemon.pipeline.finished.wait(0.2 if remaining is None else min(0.2, remaining))
    finally:
        stop_requested.set()  # a signal from here on means "already stopping"
        # The pipeline and every output first, while the control API still answers: /state shows
        # `stopping`, and a quit request gets the report of what was finalised before it closes.
        report = daemon.stop_and_report()
        if surfaces is not None:
            surfaces.stop(CONTROL_STOP_S)
        for s, handler in previous.items():
            signal.signal(s, handler)
        log.info("%s", daemon.stats.status_line())
        log.info("%s", report.text())
    return 0 if report.clean else 1
