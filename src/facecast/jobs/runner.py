"""The batch thread: takes jobs from the durable store one at a time and runs them at low priority.

A job writes its output to a hidden temporary name of its own attempt in the destination folder
(`.NAME.JOBID.ATTEMPT.partial.EXT`), so two attempts never share a file. Only a complete output
is published, and only after the runner has confirmed that it still holds the job's lease, by a
link that cannot replace anything (`publish.py`): a file that appeared under the final name
while the job ran (another program, a user) is left untouched, the job fails saying so, and its
result is kept next to it as `NAME.job-JOBID.EXT`. Between jobs (and beside a running one) the
runner sweeps the queue: jobs whose lease ran out, or whose process died, are queued again and
their temporary files removed.

What turns a claimed job into its temporary file is the executor (`executors/`): the batch thread
itself (`local`), or a Ray cluster (`ray`), where `slots` batch threads each hold one job's lease
while a Ray worker renders it; the output comes back here and is published like a local one. A job
whose worker died (`WorkerLost`) is queued again and runs as a new attempt, up to the executor's
`max_attempts`; while the executor cannot take jobs (the cluster is gone) they wait queued.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from facecast.jobs.executors import Executor, WorkerLost
from facecast.jobs.publish import is_same_file, publish_new
from facecast.jobs.store import Job, JobStore, JobStoreBusy

log = logging.getLogger(__name__)


class JobRejected(ValueError):
    """Refused at submit: the reason is for the user (missing file, output folder not allowed...)."""


class JobFailed(RuntimeError):
    """The job cannot complete; the reason is recorded on the job."""


class JobCancelled(Exception):
    pass


class LeaseLost(Exception):
    """Another worker took the job over (our lease ran out): this attempt's result is discarded."""


class JobKind(Protocol):
    name: str

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """The params to store (paths resolved), or JobRejected with the reason they cannot work."""

    def run(self, ctx: JobContext) -> None:
        """Write the output to ctx.temp_output, call ctx.progress(fraction) as it goes."""


@dataclass
class JobContext:
    job: Job
    temp_output: Path
    governor: LiveGovernor | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    lease_lost: bool = False  # set with `cancelled` when another worker took the job over
    should_stop: Callable[[], bool] | None = None  # another way to be told to stop (a Ray worker: ray.cancel)
    detail: str = ""  # where the job is, in words ("shot 2/3, step 5/30"), shown with its progress
    report: dict[str, Any] | None = None  # the job's quality report, stored with it by the lease holder
    _progress: float = 0.0
    _step_started: float = field(default_factory=time.perf_counter)

    @property
    def params(self) -> dict[str, Any]:
        return self.job.params

    def progress(self, fraction: float, detail: str | None = None) -> None:
        """Record progress, give the live pipeline its share of the machine, stop if cancelled."""
        self._progress = max(0.0, min(1.0, fraction))
        if detail is not None:
            self.detail = detail
        if self.governor is not None:
            self.governor.after_step(time.perf_counter() - self._step_started)
        if self.cancelled.is_set() or (self.should_stop is not None and self.should_stop()):
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

    def __init__(
        self,
        live_fps: Callable[[], float],
        min_ratio: float = 0.9,
        live_latency_ms: Callable[[], float | None] | None = None,
        max_latency_ratio: float = 1.5,
        settle_s: float = 2.0,
        warmup_s: float = 3.0,
        max_wait_s: float = 30.0,
    ) -> None:
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
        # Live frames must have flowed warmup_s before their figures count: the frames queued while
        # the models loaded come out in a burst, and a reference fps taken then (measured: 16.9-18.7
        # for a 15 fps source) makes every later figure look like a drop, so the job crawls at the
        # longest pause per step for its whole run.
        self.warmup_s = warmup_s
        self.max_wait_s = max_wait_s  # a live side that never gives figures does not hold jobs forever
        self._created = time.monotonic()
        self._live_since: float | None = None

    def _figures(self) -> tuple[float | None, float | None]:
        fps = self.live_fps()
        latency = self.live_latency_ms() if self.live_latency_ms is not None else None
        return (fps if fps > 0 else None), (latency if latency is not None and latency > 0 else None)

    def idle(self) -> None:
        """The batch thread has no job: remember the live figures once batch work has been quiet a while
        and live frames have flowed past their start-up burst."""
        now = time.monotonic()
        fps, latency = self._figures()
        if fps is not None and self._live_since is None:
            self._live_since = now
        if now - self._quiet_since < self.settle_s or self._live_since is None:
            return
        if fps is not None and now - self._live_since >= self.warmup_s:
            self._idle_figures = (fps, latency)

    def ready(self) -> bool:
        """Whether a job may start: the live figures without batch work are known (or the live side
        has given none for max_wait_s: a pipeline without frames does not hold the queue forever)."""
        return self._idle_figures is not None or time.monotonic() - self._created > self.max_wait_s

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
        pause = min(step_s * self.duty, 1.0)  # capped: a cancel or shutdown waits for the pause
        self.slept_s += pause
        time.sleep(pause)


def temp_output_for(output: Path, job_id: str, attempt: int) -> Path:
    """This attempt's own temporary file, beside the output (same folder: the publish is a link)."""
    return output.with_name(f".{output.stem}.{job_id}.{attempt}.partial{output.suffix}")


def kept_output_for(output: Path, job_id: str) -> Path:
    """Where a result goes when its final name was taken by someone else while the job ran."""
    return output.with_name(f"{output.stem}.job-{job_id}{output.suffix}")


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
    def __init__(
        self,
        store: JobStore,
        kinds: dict[str, JobKind],
        *,
        governor: LiveGovernor | None = None,
        lease_s: float = 30.0,
        poll_s: float = 0.5,
        executor: Executor | None = None,
    ) -> None:
        from facecast.jobs.executors.local import LocalExecutor

        self.store = store
        self.executor: Executor = executor if executor is not None else LocalExecutor()
        self.kinds = kinds
        self.governor = governor
        self.lease_s = lease_s
        self.poll_s = poll_s
        self.sweep_s = min(5.0, lease_s / 2)  # how often expired leases are looked for
        self.owner = owner_id()
        self._running: dict[str, JobContext] = {}  # job id -> its context, one per busy batch thread
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.waiting_for: str | None = None  # why queued jobs are not claimed now (the executor's reason)
        self._sweep_lock = threading.Lock()
        self._next_sweep = 0.0
        self._busy_logged = False

    # -- recovery ----------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Jobs left running by a dead or silent worker go back to the queue; their partial outputs go.
        Run at start and then every `sweep_s` while the runner runs (`sweep`)."""
        with self._sweep_lock:
            self._next_sweep = time.monotonic() + self.sweep_s
            requeued = self.store.requeue_expired()  # lease ran out: the worker died or hangs
            for job in self.store.running():  # a dead process on this host: no need to wait for its lease
                if (
                    job.lease_owner != self.owner
                    and not _owner_alive(job.lease_owner)
                    and self.store.requeue(job.id, owner=job.lease_owner)
                ):
                    requeued.append(job)
        for job in requeued:
            # Only that attempt's file: a new attempt (maybe in another process) writes another name.
            temp_output_for(Path(job.output), job.id, job.attempts).unlink(missing_ok=True)
            _legacy_temp_output_for(Path(job.output), job.id).unlink(missing_ok=True)
            log.info("job %s (%s) was interrupted; it is queued again", job.id, job.kind)
        return [job.id for job in requeued]

    def sweep(self) -> None:
        """`recover()` when its interval has passed (called between jobs and from the lease thread)."""
        if time.monotonic() >= self._next_sweep:
            self.recover()

    # -- running -----------------------------------------------------------------------------------
    @property
    def current(self) -> JobContext | None:
        """The oldest of the jobs running now (the only one with the local executor)."""
        running = list(self._running.values())
        return min(running, key=lambda c: c.job.updated) if running else None

    def run_one(self) -> Job | None:
        """Claim and run the oldest queued job; return it in its final state (None: queue empty, or
        the executor cannot take jobs now: `waiting_for` says why)."""
        self.waiting_for = self.executor.unavailable()
        if self.waiting_for is not None:
            return None
        job = self.store.claim(self.owner, self.lease_s)
        if job is None:
            return None
        output = Path(job.output)
        remote = self.executor.name != "local"  # the live pipeline does not share a remote worker's machine
        ctx = JobContext(job, temp_output_for(output, job.id, job.attempts), None if remote else self.governor)
        self._running[job.id] = ctx
        beat_stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(ctx, beat_stop), name=f"job-{job.id}-lease", daemon=True)
        beat.start()
        if ctx.governor is not None:
            ctx.governor.start_job()
        log.info("job %s (%s) started -> %s", job.id, job.kind, output)
        status, error, lost, published = "failed", None, False, None
        try:
            kind = self.kinds.get(job.kind)
            if kind is None:
                raise JobFailed(f"unknown job kind {job.kind!r}")
            if _exists(output):  # saved by someone else after the job was queued: do not redo the work
                raise JobFailed(
                    f"{output} appeared after the job was queued; it was left untouched "
                    "(retry the job after moving it away)"
                )
            self.executor.run(kind, ctx)
            if not ctx.temp_output.is_file():
                raise JobFailed("the job produced no output")
            if ctx.report is not None:  # stored while we hold the lease, before the output appears
                self.store.record_report(job.id, self.owner, ctx.report)
            published = self._publish(ctx, output)
            status = "done"
        except JobCancelled:
            lost = ctx.lease_lost
            status = "queued" if self._stop.is_set() else "cancelled"  # shutdown: run it again next start
        except LeaseLost:
            lost = True
        except WorkerLost as exc:
            limit = self.executor.max_attempts
            if self._stop.is_set() or exc.cluster_gone or limit is None or job.attempts < limit:
                log.warning("job %s: %s; it is queued again (attempt %d)", job.id, exc, job.attempts)
                status = "queued"
            else:
                error = f"its worker died {job.attempts} times (last: {exc})"
        except JobFailed as exc:
            error = str(exc)
        except Exception as exc:  # a broken input must fail the job, never the daemon
            log.exception("job %s failed", job.id)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if ctx.governor is not None:
                ctx.governor.end_job()
            beat_stop.set()
            beat.join(5)
            ctx.temp_output.unlink(missing_ok=True)
            if lost:
                log.warning(
                    "job %s: another worker took it over (the lease ran out); this attempt's result was discarded",
                    job.id,
                )
            elif status == "queued":
                self.store.requeue(job.id, owner=self.owner)
            elif not self.store.finish(job.id, self.owner, status, error, ctx._progress):  # type: ignore[arg-type]
                # Taken over in the instant between the last renewal and now: a new attempt must find
                # the name free, so withdraw the file this attempt published (only if it is still ours).
                if published is not None and is_same_file(output, published):
                    output.unlink(missing_ok=True)
                log.warning("job %s: another worker took it over before it was recorded as %s", job.id, status)
            self._running.pop(job.id, None)
        final = self.store.get(job.id)
        log.info("job %s %s%s", job.id, final.status, f": {final.error}" if final.error else "")
        return final

    def _publish(self, ctx: JobContext, output: Path) -> os.stat_result:
        """Put the result in place if the job is still ours and the name still free; the lease is
        renewed first, so it cannot run out between this check and the publish."""
        state = self.store.renew(ctx.job.id, self.owner, self.lease_s)
        if state == "lost":
            raise LeaseLost()
        if state == "cancelled":
            raise JobCancelled()
        try:
            published = publish_new(ctx.temp_output, output)
        except FileExistsError:
            kept = kept_output_for(output, ctx.job.id)
            try:
                publish_new(ctx.temp_output, kept)
                where = f"this job's result was kept as {kept.name}"
            except OSError:
                where = "this job's result was discarded"
            raise JobFailed(
                f"{output} appeared while the job ran (another program or job wrote it); "
                f"it was left untouched and {where}"
            ) from None
        except OSError as exc:
            raise JobFailed(f"cannot put the result at {output}: {exc.strerror or exc}") from exc
        return published

    def _heartbeat(self, ctx: JobContext, stop: threading.Event) -> None:
        interval = min(1.0, self.lease_s / 3)
        while True:
            try:
                state = self.store.renew(ctx.job.id, self.owner, self.lease_s, ctx._progress)
                if state != "ours":  # cancelled by the user, or taken over: stop at the next step
                    ctx.lease_lost = state == "lost"
                    ctx.cancelled.set()
                self.sweep()  # other workers' expired leases, while this job runs for minutes
            except JobStoreBusy as exc:  # another process holds the queue: the lease is renewed next time
                log.warning("job %s: %s", ctx.job.id, exc)
            except Exception:
                log.exception("job %s: lease renewal failed", ctx.job.id)
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
        """Start the executor's batch threads (ExecutorUnavailable when it cannot start)."""
        self.executor.start()
        self.recover()
        for slot in range(self.executor.slots):
            name = "batch" if self.executor.slots == 1 else f"batch-{slot}"
            thread = threading.Thread(target=self._loop, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self) -> None:
        _lower_thread_priority()
        while not self._stop.is_set():
            try:
                self.sweep()
                if self.governor is not None and not self.governor.ready():
                    # No job before the live reference figures exist (a job queued at start-up would
                    # otherwise take the start-up burst as its reference).
                    self.governor.idle()
                    self._stop.wait(self.poll_s)
                    continue
                if self.run_one() is None:
                    if self.governor is not None:
                        self.governor.idle()  # the live figures without batch work
                    self._stop.wait(self.poll_s)
                self._busy_logged = False
            except JobStoreBusy as exc:  # another process holds the queue: wait, say it once
                if not self._busy_logged:
                    log.warning("batch runner: %s", exc)
                    self._busy_logged = True
                self._stop.wait(self.poll_s)
            except Exception:  # the store itself failed: log, back off, keep the daemon alive
                log.exception("batch runner error")
                self._stop.wait(5)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        for ctx in list(self._running.values()):
            ctx.cancelled.set()  # stop at the next step; the job is re-queued on restart
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.executor.close()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def snapshot(self) -> dict[str, Any]:
        running = [
            {
                "id": c.job.id,
                "kind": c.job.kind,
                "progress": round(c._progress, 4),
                "detail": c.detail,
                "output": c.job.output,
            }
            for c in sorted(self._running.values(), key=lambda c: c.job.updated)
        ]
        return {
            "queue": self.store.counts(),
            "current": running[0] if running else None,
            "running": running,
            "executor": {**self.executor.snapshot(), "waiting_for": self.waiting_for},
        }

    def workers(self) -> dict[str, Any]:
        """The executor's machines, their resources and the jobs each runs."""
        found = self.executor.workers()
        if self.executor.name == "local":
            for node in found["nodes"]:
                node["jobs"] = sorted(self._running)
        return found


def _legacy_temp_output_for(output: Path, job_id: str) -> Path:
    """The temporary name of versions before attempts had their own (left by a crash before an update)."""
    return output.with_name(f".{output.stem}.{job_id}.partial{output.suffix}")


def _exists(path: Path) -> bool:
    return os.path.lexists(path)  # a dangling symbolic link is a taken name too
