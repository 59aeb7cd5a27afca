"""The batch thread: takes jobs from the durable store one at a time and runs them at low priority.

A job writes its output to a hidden temporary name in the destination folder; only a complete
output is renamed into place, so no half-written file is ever visible under the final name, and a
job re-run after a crash simply overwrites its own temporary file.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import psutil

from facecast.jobs.store import Job, JobStore
from facecast.media.video import publish

log = logging.getLogger(__name__)


class JobRejected(ValueError):
    """Refused at submit: the reason is for the user (missing file, output folder not allowed...)."""


class JobFailed(RuntimeError):
    """The job cannot complete; the reason is recorded on the job."""


class JobCancelled(Exception):
    pass


class JobKind(Protocol):
    name: str

    def validate(self, params: dict[str, Any]) -> None:
        """Raise JobRejected with the reason when the params cannot work."""

    def run(self, ctx: JobContext) -> None:
        """Write the output to ctx.temp_output, call ctx.progress(fraction) as it goes."""


@dataclass
class JobContext:
    job: Job
    temp_output: Path
    governor: LiveGovernor | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    _progress: float = 0.0
    _step_started: float = field(default_factory=time.perf_counter)

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    def progress(self, fraction: float) -> None:
        """Record progress, give the live pipeline its share of the machine, stop if cancelled."""
        self._progress = max(0.0, min(1.0, fraction))
        if self.governor is not None:
            self.governor.after_step(time.perf_counter() - self._step_started)
        if self.cancelled.is_set():
            raise JobCancelled()
        self._step_started = time.perf_counter()


class LiveGovernor:
    """Keeps the live pipeline near its figures without batch work: the fps at `min_ratio` of its
    rate or better, and the end-to-end latency p50 under `max_latency_ratio` times its value.

    The reference figures are measured without batch work: taken while the batch thread is idle
    (`idle()`, once it has been quiet `settle_s`, so frames slowed by the last job have left the
    window), and kept while jobs run back to back. A job that starts before any idle measurement
    (queued at start-up) takes them when it starts. After each batch step the batch thread sleeps
    `duty * step time`; the duty grows while either figure is off target and shrinks again when
    both have headroom (cooperative: a running step is never interrupted)."""

    def __init__(self, live_fps: Callable[[], float], min_ratio: float = 0.9,
                 live_latency_ms: Callable[[], float | None] | None = None, max_latency_ratio: float = 1.5,
                 settle_s: float = 2.0) -> None:
        self.live_fps = live_fps
        self.live_latency_ms = live_latency_ms  # recent end-to-end latency p50; None = fps only
        self.min_ratio = min_ratio
        self.max_latency_ratio = max_latency_ratio
        self.settle_s = settle_s
        self.baseline: float | None = None  # live fps without batch work
        self.baseline_latency_ms: float | None = None
        self.duty = 1.0
        self.slept_s = 0.0
        self.backoffs = {"fps": 0, "latency": 0}  # steps after which the duty grew, by cause
        self._quiet_since = time.monotonic()
        self._idle_figures: tuple[float, float | None] | None = None

    def _figures(self) -> tuple[float | None, float | None]:
        fps = self.live_fps()
        latency = self.live_latency_ms() if self.live_latency_ms is not None else None
        return (fps if fps > 0 else None), (latency if latency is not None and latency > 0 else None)

    def idle(self) -> None:
        """The batch thread has no job: remember the live figures once batch work has been quiet a while."""
        if time.monotonic() - self._quiet_since < self.settle_s:
            return
        fps, latency = self._figures()
        if fps is not None:
            self._idle_figures = (fps, latency)

    def start_job(self) -> None:
        if self._idle_figures is not None:
            self.baseline, self.baseline_latency_ms = self._idle_figures
        else:
            self.baseline, self.baseline_latency_ms = self._figures()

    def end_job(self) -> None:
        self._quiet_since = time.monotonic()

    def after_step(self, step_s: float) -> None:
        if self.baseline is None:  # no live frames yet when the job started
            self.baseline, self.baseline_latency_ms = self._figures()
            return
        fps, latency = self._figures()
        ratio = (fps or 0.0) / self.baseline
        fps_low, fps_ok = ratio < self.min_ratio + 0.03, ratio > self.min_ratio + 0.07
        latency_high, latency_ok = False, True
        if self.baseline_latency_ms is not None and latency is not None:
            budget = self.baseline_latency_ms * self.max_latency_ratio
            latency_high, latency_ok = latency > budget * 0.97, latency < budget * 0.9
        if fps_low or latency_high:
            self.duty = min(self.duty * 1.5 + 0.1, 20.0)
            self.backoffs["fps" if fps_low else "latency"] += 1
        elif fps_ok and latency_ok:
            self.duty = max(self.duty * 0.85, 0.2)
        pause = step_s * self.duty
        self.slept_s += pause
        time.sleep(min(pause, 1.0))


def temp_output_for(output: Path, job_id: str) -> Path:
    return output.with_name(f".{output.stem}.{job_id}.partial{output.suffix}")


def _lower_thread_priority() -> None:
    """Nice the calling thread (Linux: setpriority on a thread id affects only that thread)."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass


def owner_id() -> str:
    me = psutil.Process()
    return f"{socket.gethostname()}:{me.pid}:{int(me.create_time())}"


def _owner_alive(owner: str | None) -> bool:
    """Is the process that holds a lease still running? Only decidable on this host."""
    if not owner:
        return False
    host, _, rest = owner.partition(":")
    if host != socket.gethostname():
        return True  # another machine: let its lease expire
    pid_text, _, created = rest.partition(":")
    try:
        proc = psutil.Process(int(pid_text))
        return int(proc.create_time()) == int(created)
    except (ValueError, psutil.Error):
        return False


class BatchRunner:
    def __init__(self, store: JobStore, kinds: dict[str, JobKind], *, governor: LiveGovernor | None = None,
                 lease_s: float = 30.0, poll_s: float = 0.5) -> None:
        self.store = store
        self.kinds = kinds
        self.governor = governor
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.owner = owner_id()
        self.current: JobContext | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- recovery ----------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """At start: jobs left running by a dead process go back to the queue; their partial outputs go."""
        requeued = self.store.requeue_expired()
        for job in self.store.running():
            if job.lease_owner != self.owner and not _owner_alive(job.lease_owner):
                self.store.requeue(job.id)
                requeued.append(job.id)
        for job_id in requeued:
            job = self.store.get(job_id)
            temp_output_for(Path(job.output), job.id).unlink(missing_ok=True)
            log.info("job %s (%s) was interrupted; it is queued again", job.id, job.kind)
        return requeued

    # -- running -----------------------------------------------------------------------------------
    def run_one(self) -> Job | None:
        """Claim and run the oldest queued job; return it in its final state (None: queue empty)."""
        job = self.store.claim(self.owner, self.lease_s)
        if job is None:
            return None
        output = Path(job.output)
        ctx = JobContext(job, temp_output_for(output, job.id), self.governor)
        self.current = ctx
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(ctx, beat_stop), name=f"job-{job.id}-lease", daemon=True)
        beat.start()
        if self.governor is not None:
            self.governor.start_job()
        log.info("job %s (%s) started -> %s", job.id, job.kind, output)
        status, error = "failed", None
        try:
            kind = self.kinds.get(job.kind)
            if kind is None:
                raise JobFailed(f"unknown job kind {job.kind!r}")
            kind.run(ctx)
            if not ctx.temp_output.is_file():
                raise JobFailed("the job produced no output")
            publish(ctx.temp_output, output)
            status = "done"
        except JobCancelled:
            status = "queued" if self._stop.is_set() else "cancelled"  # shutdown: run it again next start
        except JobFailed as exc:
            error = str(exc)
        except Exception as exc:  # a broken input must fail the job, never the daemon
            log.exception("job %s failed", job.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if self.governor is not None:
                self.governor.end_job()
            beat_stop.set()
            beat.join(5)
            ctx.temp_output.unlink(missing_ok=True)
            if status == "queued":
                self.store.requeue(job.id)
            else:
                self.store.finish(job.id, self.owner, status, error)  # type: ignore[arg-type]
            self.current = None
        final = self.store.get(job.id)
        log.info("job %s %s%s", job.id, final.status, f": {final.error}" if final.error else "")
        return final

    def _heartbeat(self, ctx: JobContext, stop: threading.Event) -> None:
        interval = min(1.0, self.lease_s / 3)
        while True:
            still_ours = self.store.heartbeat(ctx.job.id, self.owner, self.lease_s, ctx._progress)
            if not still_ours:
                ctx.cancelled.set()
            if stop.wait(interval):
                return

    def run_until_empty(self) -> list[Job]:
        done = []
        while not self._stop.is_set():
            job = self.run_one()
            if job is None:
                break
            done.append(job)
        return done

    # -- the batch thread ----------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="batch", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        _lower_thread_priority()
        while not self._stop.is_set():
            try:
                if self.run_one() is None:
                    if self.governor is not None:
                        self.governor.idle()  # the live figures without batch work
                    self._stop.wait(self.poll_s)
            except Exception:  # the store itself failed: log, back off, keep the daemon alive
                log.exception("batch runner error")
                self._stop.wait(5)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self.current is not None:
            self.current.cancelled.set()  # stop at the next step; the job is re-queued on restart
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> dict[str, Any]:
        ctx = self.current
        return {
            "queue": self.store.counts(),
            "current": None if ctx is None else {
                "id": ctx.job.id, "kind": ctx.job.kind, "progress": round(ctx._progress, 4), "output": ctx.job.output,
            },
        }
