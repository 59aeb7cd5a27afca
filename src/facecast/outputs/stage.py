"""The output stage: hands each frame to every enabled output, each running on its own thread.

`process()` never waits for an output (except a recording fed by a file, which must not lose a
frame): a slow NDI receiver, a virtual camera nobody reads or a recorder that fell behind cannot
stall capture, inference or the other outputs. See outputs/worker.py for the per-output thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from facecast.outputs.base import Output, OutputUnavailable
from facecast.outputs.ndi import NdiOutput, NdiOutputConfig
from facecast.outputs.null import NullOutput, NullOutputConfig
from facecast.outputs.preview import PreviewOutput, PreviewOutputConfig
from facecast.outputs.record import RecordOutput, RecordOutputConfig
from facecast.outputs.spout import SpoutOutput, SpoutOutputConfig
from facecast.outputs.virtualcam import VirtualCamOutput, VirtualCamOutputConfig
from facecast.outputs.worker import OutputReport, OutputWorker
from facecast.pipeline.stage import Stage, StartupError
from facecast.pipeline.stats import PipelineStats
from facecast.types import FramePacket

log = logging.getLogger(__name__)

# The `type` key picks the backend; adding an output = a file with its config + class, and a line here.
# Backend libraries (NDIlib, SpoutGL, pyvirtualcam) are imported by their output's open(), so a
# missing one is a start-up error for that output only, never an import error for the daemon.
OutputConfig = Annotated[
    PreviewOutputConfig
    | RecordOutputConfig
    | NullOutputConfig
    | NdiOutputConfig
    | SpoutOutputConfig
    | VirtualCamOutputConfig,
    Field(discriminator="type"),
]
# Each class is called as cls(name, its config).
OUTPUT_CLASSES: dict[str, Callable[[str, Any], Output]] = {
    "preview": PreviewOutput,
    "record": RecordOutput,
    "null": NullOutput,
    "ndi": NdiOutput,
    "spout": SpoutOutput,
    "virtualcam": VirtualCamOutput,
}

OPEN_TIMEOUT_S = 30.0  # an output that has not opened by then is a start-up error
CLOSE_TIMEOUT_S = 60.0  # default for pipeline.shutdown_timeout_s: every output together, at shutdown
ABANDON_GRACE_S = 1.0  # after the limit, how long an output told to give up (a remux) gets to do so
CONTROL_OPEN_TIMEOUT_S = 10.0  # an output started from the live controls


def build_output(name: str, cfg) -> Output:
    return OUTPUT_CLASSES[cfg.type](name, cfg)


class OutputStage(Stage):
    name = "output"

    def __init__(
        self,
        configs: dict,
        stats: PipelineStats | None = None,
        *,
        lossless: bool = False,
        watchdog_s: float = 3.0,
        outputs: dict[str, Output] | None = None,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        """`configs`: name -> output config (the `outputs:` section). `outputs`: ready-made Output
        objects used instead (tools and tests). `lossless`: the source is a file, so a recording
        waits instead of dropping frames. `close_timeout_s`: how long closing may take, all outputs
        together (`pipeline.shutdown_timeout_s`): queued frames written, encoders flushed, remuxes."""
        self.configs = configs
        self.stats = stats
        self.lossless = lossless
        self.watchdog_s = watchdog_s
        self.close_timeout_s = close_timeout_s
        self.report: list[OutputReport] = []  # filled by close(): what each output finished, or not
        self._closing: list[OutputWorker] = []
        self._given = outputs
        self.workers: dict[str, OutputWorker] = {}
        self._control_lock = threading.Lock()
        self._stopped: list[OutputWorker] = []  # stopped by set_enabled, still closing
        self._closed = False
        if stats is not None:
            stats.add_provider("outputs", self.snapshot)
            stats.add_status_part(self.status_text)

    @property
    def outputs(self) -> dict[str, Output]:
        return {name: w.output for name, w in self.workers.items()}

    def _enabled_outputs(self) -> dict[str, Output]:
        if self._given is not None:
            return dict(self._given)
        return {name: build_output(name, cfg) for name, cfg in self.configs.items() if cfg.enabled}

    def start(self) -> None:
        candidates = {
            name: OutputWorker(output, stats=self.stats, lossless=self.lossless)
            for name, output in self._enabled_outputs().items()
        }
        for worker in candidates.values():
            worker.start()  # every output opens at the same time, each on its own thread
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        problems: list[str] = []
        for name, worker in candidates.items():
            kind = worker.output.kind
            if not worker.ready.wait(max(0.0, deadline - time.monotonic())):
                problems.append(f"output {name} ({kind}) did not open within {OPEN_TIMEOUT_S:.0f} s")
                worker.stop()
                continue
            exc = worker.open_error
            if exc is None:
                self.workers[name] = worker
                log.info("output %s (%s) ready%s", name, kind, _rate_note(worker.output))
            elif isinstance(exc, OutputUnavailable):
                log.warning("output %s (%s) skipped: %s", name, kind, exc)
            else:
                problems.append(f"output {name} ({kind}) cannot start: {exc}")
        if problems:
            self.close()
            raise StartupError("; ".join(problems))
        if not self.workers:
            log.warning("no output is active: frames are processed and then discarded")

    def process(self, packet: FramePacket) -> FramePacket:
        now = time.monotonic()
        for worker in self.workers.values():
            worker.offer(packet)
            self._watch(worker, now)
        return packet

    def _watch(self, worker: OutputWorker, now: float) -> None:
        """Say so when an output spends seconds in one write (a hung device or driver)."""
        busy = worker.busy_for(now)
        if busy > self.watchdog_s and not worker.stuck_reported:
            worker.stuck_reported = True
            if self.stats is not None:
                self.stats.record_stuck(f"output.{worker.name}")
            log.warning("output %s has been stuck in one write for %.1f s; the other outputs go on", worker.name, busy)
        elif busy == 0.0 and worker.stuck_reported:
            worker.stuck_reported = False
            log.info("output %s is sending again", worker.name)

    # -- live controls (facecast.control): start/stop one output by name while the stream runs --
    def status(self) -> dict[str, dict[str, Any]]:
        """Every configured output: its type, whether it runs now, and its file when it has one."""
        workers = self.workers
        kinds = {name: cfg.type for name, cfg in self.configs.items()}
        kinds.update({name: w.output.kind for name, w in workers.items() if name not in kinds})
        status: dict[str, dict[str, Any]] = {}
        for name, kind in kinds.items():
            worker = workers.get(name)
            info: dict[str, Any] = {"type": kind, "enabled": worker is not None}
            if worker is not None:
                info["state"] = worker.state
                path = getattr(worker.output, "path", None)
                if path is not None:
                    info["path"] = str(path)
            status[name] = info
        return status

    def set_enabled(self, name: str, on: bool) -> None:
        """Start or stop the output `name` (its key under `outputs:`). KeyError: no such output.
        Starting one that cannot open here raises why (OutputUnavailable...) and changes nothing.
        A stopped output closes on its own thread (a recording flushes and is finalised)."""
        with self._control_lock:
            if self._closed:
                raise RuntimeError("the daemon is stopping")
            worker = self.workers.get(name)
            if on == (worker is not None):
                return
            if worker is not None:  # on is False: stop it
                # A new dict, not a change in place: process() may be iterating the old one.
                self.workers = {n: w for n, w in self.workers.items() if n != name}
                worker.stop(time.monotonic() + self.close_timeout_s)
                self._stopped.append(worker)
                log.info("output %s stopped", name)
                return
            worker = OutputWorker(build_output(name, self.configs[name]), stats=self.stats, lossless=self.lossless)
            worker.start()
            if not worker.ready.wait(CONTROL_OPEN_TIMEOUT_S):
                worker.stop()
                self._stopped.append(worker)
                raise TimeoutError(f"it did not open within {CONTROL_OPEN_TIMEOUT_S:.0f} s")
            if worker.open_error is not None:
                raise worker.open_error
            self.workers = {**self.workers, name: worker}
            log.info("output %s (%s) started%s", name, worker.output.kind, _rate_note(worker.output))

    def status_text(self) -> str:
        """For the console status line: the live senders' rates and receivers, and any output down."""
        return ", ".join(w.status_text() for w in list(self.workers.values()) if w.status_text())

    def snapshot(self) -> dict[str, Any]:
        """Per output: state, send rate, new/repeated/dropped frames, errors, reopens, latency from
        capture to send, and the backend's own figures (NDI: receivers)."""
        return {name: worker.snapshot() for name, worker in list(self.workers.items())}

    def close(self) -> None:
        """Stop every output and wait until each has written what it was given and closed (a
        recording finalised), all within `close_timeout_s`; one still busy then is named in the log
        and told to give up. `report` says what each one finished."""
        with self._control_lock:
            self._closed = True
            workers, self.workers = list(self.workers.values()) + self._stopped, {}
        # Outputs stopped earlier that have already finished were reported when they stopped.
        pending = [w for w in workers if w.alive]
        self._closing = pending
        deadline = time.monotonic() + self.close_timeout_s
        for worker in pending:
            worker.stop(deadline)
        for worker in pending:
            worker.join(max(0.0, deadline - time.monotonic()))
        late = [w for w in pending if w.alive]
        for worker in late:
            log.error(
                "output %s did not finish closing within %g s (pipeline.shutdown_timeout_s): %s; giving up on it",
                worker.name,
                self.close_timeout_s,
                worker.report().doing,
            )
            worker.abandon()
        for worker in late:
            worker.join(ABANDON_GRACE_S)
        self.report = [w.report() for w in pending]

    def report_now(self) -> list[OutputReport]:
        """While close() runs: where each output stands (for a second Ctrl+C)."""
        return [w.report() for w in list(self._closing)]


def _rate_note(output: Output) -> str:
    if output.delivery == "paced":
        return f", {output.fps:g} fps paced (repeats the last frame when none is new)"
    if output.delivery == "every":
        return ", every frame in order"
    return ""
