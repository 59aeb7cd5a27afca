"""The job endpoints of the control API: submit, list, show, cancel, retry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from facecast.jobs.runner import JobRejected
from facecast.jobs.service import JobService
from facecast.jobs.store import JobNotFound, JobStateError


class JobRequest(BaseModel):
    kind: Literal["animate", "swap", "generate"]
    params: dict[str, Any] = Field(description="animate: character, driving[, backend]; swap: face, target[, backend]; "
                                               "generate: character, prompt[, model, frames, steps, width, height, fps, seed]")
    output: str = Field(description="output video path, inside one of jobs.output_dirs")


def add_job_routes(app: FastAPI, service: Callable[[], JobService | None]) -> None:
    def svc() -> JobService:
        s = service()
        if s is None:
            raise _Problem(409, "jobs are disabled in this daemon (jobs.enabled: false)")
        return s

    @app.exception_handler(_Problem)
    async def _problem(request, exc: _Problem) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.post("/jobs", status_code=201, summary="Queue an offline video job (validated now, run by the batch thread)")
    def submit(body: JobRequest) -> dict[str, Any]:
        try:
            return svc().submit(body.kind, body.params, body.output).as_dict()
        except JobRejected as exc:
            raise _Problem(400, str(exc)) from None

    @app.get("/jobs", summary="Recent jobs, newest first")
    def list_jobs(status: Literal["queued", "running", "done", "failed", "cancelled"] | None = None,
                  limit: int = 50) -> dict[str, Any]:
        s = svc()
        return {"jobs": [j.as_dict() for j in s.store.list(status, limit)], **s.snapshot()}

    @app.get("/jobs/{job_id}", summary="One job: status, progress, output, error")
    def show(job_id: str) -> dict[str, Any]:
        return _get(svc(), job_id).as_dict()

    @app.post("/jobs/{job_id}/cancel", summary="Cancel a queued job, or stop a running one at its next frame")
    def cancel(job_id: str) -> dict[str, Any]:
        return _change(svc(), job_id, "cancel")

    @app.post("/jobs/{job_id}/retry", summary="Queue a failed or cancelled job again")
    def retry(job_id: str) -> dict[str, Any]:
        return _change(svc(), job_id, "retry")


class _Problem(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def _get(service: JobService, job_id: str):
    try:
        return service.store.get(job_id)
    except JobNotFound:
        raise _Problem(404, f"no job {job_id}") from None


def _change(service: JobService, job_id: str, what: str) -> dict[str, Any]:
    _get(service, job_id)
    try:
        return getattr(service.store, what)(job_id).as_dict()
    except JobStateError as exc:
        raise _Problem(409, str(exc)) from None
