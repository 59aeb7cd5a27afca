"""The local executor: the job runs in the batch thread that claimed it, on the daemon's own engines,
paced by the live governor (ctx.progress)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from facecast.jobs.runner import JobContext, JobKind


class LocalExecutor:
    name = "local"
    slots = 1  # one job at a time: it shares the machine (and the GPU) with the live pipeline
    max_attempts: int | None = None  # a crash here is the daemon's own: the job is re-queued at the next start

    def start(self) -> None:
        pass

    def unavailable(self) -> str | None:
        return None

    def run(self, kind: JobKind, ctx: JobContext) -> None:
        kind.run(ctx)

    def snapshot(self) -> dict[str, Any]:
        return {"name": self.name, "state": "ready"}

    def workers(self) -> dict[str, Any]:
        return {"executor": self.name, "nodes": [{"node": socket.gethostname(), "alive": True, "resources": {}}]}

    def close(self) -> None:
        pass
