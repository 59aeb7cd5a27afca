"""The job endpoints of the control API: submit, list, show, cancel, retry.

Every job-store call runs in a worker thread, never on the event loop that serves /state and the
WebSocket, and through its own small limiters: a write may wait seconds for the queue's lock
while another process holds it, and however many such requests arrive, they hold at most
`STORE_WRITERS` threads and never starve the thread pool the other routes use (reads, which WAL
never blocks, have their own `STORE_READERS`). The request models are the kinds' own parameter
models (the same checks as `facecast jobs --offline`), and every status a route can answer is in
its `responses`, so the OpenAPI schema says what the handlers really do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio
import anyio.to_thread
from fastapi import Body, FastAPI, Query
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from facecast.jobs.kinds.generate import GenerateParams
from facecast.jobs.kinds.replace import ReplaceParams
from facecast.jobs.kinds.video_effect import AnimateParams, SwapParams
from facecast.jobs.runner import JobRejected
from facecast.jobs.service import JobService
from facecast.jobs.store import JobNotFound, JobStateError, JobStoreBusy, Status
from facecast.postprocess.hook import PostParams

MAX_LIST = 1000
STORE_READERS = 8  # job-store reads at once
STORE_WRITERS = 2  # job-store writes (each may wait for the queue's lock) at once; more wait without a thread
# A video file name (the suffixes check_output accepts); JSON Schema regexes have no (?i).
OUTPUT_PATTERN = r"\.([mM][pP]4|[mM][oO][vV]|[mM][kK][vV])$"
JobId = Annotated[str, PathParam(min_length=1, max_length=64, description="the id `POST /jobs` returned")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    output: str = Field(
        min_length=5,
        max_length=4096,
        pattern=OUTPUT_PATTERN,
        description="output video path (.mp4, .mov, .mkv), inside one of jobs.output_dirs",
    )


# Each kind's own params plus the post steps every kind accepts (postprocess/hook.py).
class AnimateJobParams(AnimateParams, PostParams):
    pass


class SwapJobParams(SwapParams, PostParams):
    pass


class GenerateJobParams(GenerateParams, PostParams):
    pass


class ReplaceJobParams(ReplaceParams, PostParams):
    pass


class AnimateJob(_Request):
    kind: Literal["animate"]
    params: AnimateJobParams


class SwapJob(_Request):
    kind: Literal["swap"]
    params: SwapJobParams


class GenerateJob(_Request):
    kind: Literal["generate"]
    params: GenerateJobParams


class ReplaceJob(_Request):
    kind: Literal["replace"]
    params: ReplaceJobParams


JobRequest = Annotated[AnimateJob | SwapJob | GenerateJob | ReplaceJob, Body(discriminator="kind")]


class JobOut(BaseModel):
    id: str
    kind: str
    params: dict[str, Any]
    output: str
    status: Status
    attempts: int
    progress: float
    error: str | None
    cancel_requested: bool
    created: float
    updated: float
    finished: float | None
    detail: str = Field("", description="where a running job is, in words (e.g. shot 2/3, step 5/30)")


class CurrentJob(BaseModel):
    id: str
    kind: str
    progress: float
    detail: str = Field("", description="where the job is, in words")
    output: str


class JobList(BaseModel):
    jobs: list[JobOut] = Field(description="newest first")
    queue: dict[str, int] = Field(description="how many jobs are in each state")
    current: CurrentJob | None = Field(description="the job this daemon's batch thread runs now")


class ErrorBody(BaseModel):
    error: str


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "refused: the reason says what is wrong (missing input, output taken...)",
        404: "no such job",
        409: "jobs are disabled in this daemon, or the job is not in a state that allows this",
        422: "the request does not match this schema",
        503: "another process holds the job queue's lock; nothing was changed, try again",
    }
    return {s: {"model": ErrorBody, "description": what[s]} for s in statuses}


T = TypeVar("T")


class _StoreThreads:
    """Where job-store calls run: worker threads, at most so many at once per kind of call."""

    def __init__(self) -> None:
        self._limiters: dict[str, anyio.CapacityLimiter] = {}

    async def run(self, kind: Literal["read", "write"], work: Callable[[], T]) -> T:
        if kind not in self._limiters:  # made on the server's event loop, on first use
            self._limiters[kind] = anyio.CapacityLimiter(STORE_READERS if kind == "read" else STORE_WRITERS)
        return await anyio.to_thread.run_sync(work, limiter=self._limiters[kind])


def add_job_routes(app: FastAPI, service: Callable[[], JobService | None]) -> None:
    threads = _StoreThreads()

    def svc() -> JobService:
        s = service()
        if s is None:
            raise _Problem(409, "jobs are disabled in this daemon (jobs.enabled: false)")
        return s

    @app.exception_handler(_Problem)
    async def _problem(request, exc: _Problem) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(JobStoreBusy)
    async def _busy(request, exc: JobStoreBusy) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.post(
        "/jobs",
        status_code=201,
        response_model=JobOut,
        responses=_errors(400, 409, 422, 503),
        summary="Queue an offline video job (validated now, run by the batch thread)",
    )
    async def submit(body: JobRequest) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            try:
                params = body.params.model_dump(exclude_none=True)
                return svc().submit(body.kind, params, body.output).as_dict()
            except JobRejected as exc:
                raise _Problem(400, str(exc)) from None

        return await threads.run("write", work)

    @app.get("/jobs", response_model=JobList, responses=_errors(409, 422, 503), summary="Recent jobs, newest first")
    async def list_jobs(
        status: Status | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST, description=f"at most this many jobs (1-{MAX_LIST})")] = 50,
    ) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            s = svc()
            return {"jobs": [j.as_dict() for j in s.store.list(status, limit)], **s.snapshot()}

        return await threads.run("read", work)

    @app.get(
        "/jobs/{job_id}",
        response_model=JobOut,
        responses=_errors(404, 409, 422, 503),
        summary="One job: status, progress, output, error",
    )
    async def show(job_id: JobId) -> dict[str, Any]:
        def work() -> dict[str, Any]:
            s = svc()
            job = _get(s, job_id).as_dict()
            running = {r["id"]: r for r in s.snapshot().get("running", [])}
            return {**job, "detail": running[job_id]["detail"]} if job_id in running else job

        return await threads.run("read", work)

    @app.post(
        "/jobs/{job_id}/cancel",
        response_model=JobOut,
        responses=_errors(404, 409, 422, 503),
        summary="Cancel a queued job, or stop a running one at its next frame",
    )
    async def cancel(job_id: JobId) -> dict[str, Any]:
        return await threads.run("write", lambda: _change(svc(), job_id, "cancel"))

    @app.get(
        "/job-workers",
        responses=_errors(409, 503),
        summary="The machines that run jobs (Ray nodes with jobs.executor: ray), their resources and jobs",
    )
    async def workers() -> dict[str, Any]:
        def work() -> dict[str, Any]:
            from facecast.jobs.executors import ExecutorUnavailable

            try:
                return svc().runner.workers()
            except ExecutorUnavailable as exc:
                raise _Problem(503, str(exc)) from None

        return await threads.run("read", work)

    @app.post(
        "/jobs/{job_id}/retry",
        response_model=JobOut,
        responses=_errors(404, 409, 422, 503),
        summary="Queue a failed or cancelled job again",
    )
    async def retry(job_id: JobId) -> dict[str, Any]:
        return await threads.run("write", lambda: _change(svc(), job_id, "retry"))


class _Problem(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def _get(service: JobService, job_id: str):
    try:
        return service.store.get(job_id)
    except JobNotFound:
        raise _Problem(404, f"no job {job_id}") from None


def _change(service: JobService, job_id: str, what: Literal["cancel", "retry"]) -> dict[str, Any]:
    try:
        return getattr(service.store, what)(job_id).as_dict()
    except JobNotFound:
        raise _Problem(404, f"no job {job_id}") from None
    except JobStateError as exc:
        raise _Problem(409, str(exc)) from None
