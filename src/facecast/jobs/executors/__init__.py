"""Where a claimed job runs: one file per backend (`local.py`: the batch thread itself; `ray.py`: a
Ray cluster). The runner (`runner.py`) claims, leases, publishes and records; an executor only turns
a job into the file at `ctx.temp_output`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from facecast.jobs.runner import JobContext, JobKind


class ExecutorUnavailable(RuntimeError):
    """The executor cannot run jobs at all (its package is missing, its cluster unreachable at start)."""


class WorkerLost(RuntimeError):
    """The process or machine running the job went away mid-job: the job is run again.

    `cluster_gone`: the whole cluster went away (not the job's fault: no attempt limit applies)."""

    def __init__(self, reason: str, cluster_gone: bool = False) -> None:
        super().__init__(reason)
        self.cluster_gone = cluster_gone


class Executor(Protocol):
    name: str
    slots: int  # jobs it runs at once (the batch threads the runner starts)
    max_attempts: int | None  # a job whose worker died this many times fails; None = no limit

    def start(self) -> None:
        """Connect (ExecutorUnavailable with the reason when it cannot)."""

    def unavailable(self) -> str | None:
        """None when jobs can be claimed now; else why they wait (the runner leaves them queued)."""

    def run(self, kind: JobKind, ctx: JobContext) -> None:
        """Write the job's output to ctx.temp_output; report ctx progress; honour ctx.cancelled
        (JobCancelled), JobFailed for the user, WorkerLost when the worker went away."""

    def snapshot(self) -> dict[str, Any]:
        """What /stats shows about the executor."""

    def workers(self) -> dict[str, Any]:
        """The machines that run jobs, their resources and the jobs each runs."""

    def close(self) -> None: ...


def make_executor(cfg) -> Executor:
    """The executor `jobs.executor` names, for the daemon's Config (not started)."""
    if cfg.jobs.executor == "ray":
        from facecast.jobs.executors.ray import RayExecutor

        return RayExecutor(cfg)
    from facecast.jobs.executors.local import LocalExecutor

    return LocalExecutor()
