"""A durable job queue in one SQLite file (WAL, synchronous=FULL).

Every state change is one transaction. A worker holds a job through a lease it renews while it
works; a job whose lease ran out (its process died, even by SIGKILL) goes back to the queue at the
next start, so every job finishes exactly once from the user's point of view (outputs are renamed
into place only when complete, see `runner.py`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Status = Literal["queued", "running", "done", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    output TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, created);
"""


@dataclass(frozen=True, slots=True)
class Job:
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
    lease_owner: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "kind": self.kind, "params": self.params, "output": self.output,
            "status": self.status, "attempts": self.attempts, "progress": round(self.progress, 4),
            "error": self.error, "cancel_requested": self.cancel_requested,
            "created": self.created, "updated": self.updated, "finished": self.finished,
        }


class JobNotFound(KeyError):
    pass


class JobStateError(ValueError):
    """The job is not in a state that allows the operation (e.g. retrying a running job)."""


class JobStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- helpers ---------------------------------------------------------------------------------
    def _tx(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(sql, args).fetchall()
                self._db.execute("COMMIT")
                return rows
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"], kind=row["kind"], params=json.loads(row["params"]), output=row["output"],
            status=row["status"], attempts=row["attempts"], progress=row["progress"], error=row["error"],
            cancel_requested=bool(row["cancel_requested"]), created=row["created"], updated=row["updated"],
            finished=row["finished"], lease_owner=row["lease_owner"],
        )

    # -- queries ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        rows = self._tx("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return self._job(rows[0])

    def list(self, status: Status | None = None, limit: int = 100) -> list[Job]:
        if status is None:
            rows = self._tx("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
        else:
            rows = self._tx("SELECT * FROM jobs WHERE status = ? ORDER BY created DESC LIMIT ?", (status, limit))
        return [self._job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._tx("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        counts = {s: 0 for s in STATUSES}
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    # -- state changes ---------------------------------------------------------------------------
    def submit(self, kind: str, params: dict[str, Any], output: str) -> Job:
        now = time.time()
        job_id = uuid.uuid4().hex[:12]
        self._tx(
            "INSERT INTO jobs (id, kind, params, output, status, created, updated) VALUES (?, ?, ?, ?, 'queued', ?, ?)",
            (job_id, kind, json.dumps(params), output, now, now),
        )
        return self.get(job_id)

    def claim(self, owner: str, lease_s: float) -> Job | None:
        """Take the oldest queued job and lease it to `owner`."""
        now = time.time()
        rows = self._tx(
            """UPDATE jobs SET status = 'running', lease_owner = ?, lease_until = ?, attempts = attempts + 1,
                   updated = ?, error = NULL
               WHERE id = (SELECT id FROM jobs WHERE status = 'queued' ORDER BY created LIMIT 1)
               RETURNING *""",
            (owner, now + lease_s, now),
        )
        return self._job(rows[0]) if rows else None

    def heartbeat(self, job_id: str, owner: str, lease_s: float, progress: float | None = None) -> bool:
        """Renew the lease (and record progress). False if the job is no longer ours or a cancel was asked."""
        now = time.time()
        rows = self._tx(
            """UPDATE jobs SET lease_until = ?, updated = ?, progress = COALESCE(?, progress)
               WHERE id = ? AND status = 'running' AND lease_owner = ? RETURNING cancel_requested""",
            (now + lease_s, now, progress, job_id, owner),
        )
        return bool(rows) and not rows[0]["cancel_requested"]

    def finish(self, job_id: str, owner: str, status: Status, error: str | None = None) -> None:
        now = time.time()
        self._tx(
            """UPDATE jobs SET status = ?, error = ?, progress = CASE WHEN ? = 'done' THEN 1 ELSE progress END,
                   lease_owner = NULL, lease_until = NULL, updated = ?, finished = ?
               WHERE id = ? AND status = 'running' AND lease_owner = ?""",
            (status, error, status, now, now, job_id, owner),
        )

    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled at once. Running: the worker is asked to stop at its next step."""
        job = self.get(job_id)
        if job.status == "queued":
            now = time.time()
            self._tx("UPDATE jobs SET status = 'cancelled', updated = ?, finished = ? WHERE id = ? AND status = 'queued'",
                     (now, now, job_id))
        elif job.status == "running":
            self._tx("UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ?", (time.time(), job_id))
        else:
            raise JobStateError(f"job {job_id} is {job.status}: nothing to cancel")
        return self.get(job_id)

    def retry(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status not in ("failed", "cancelled"):
            raise JobStateError(f"job {job_id} is {job.status}: only failed or cancelled jobs can be retried")
        self._tx(
            """UPDATE jobs SET status = 'queued', error = NULL, progress = 0, cancel_requested = 0,
                   finished = NULL, updated = ? WHERE id = ?""",
            (time.time(), job_id),
        )
        return self.get(job_id)

    def requeue_expired(self, now: float | None = None) -> list[str]:
        """Jobs whose worker stopped renewing its lease (the process died) go back to the queue."""
        now = time.time() if now is None else now
        rows = self._tx(
            """UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated = ?
               WHERE status = 'running' AND lease_until < ? RETURNING id""",
            (now, now),
        )
        return [r["id"] for r in rows]

    def running(self) -> list[Job]:
        return [self._job(r) for r in self._tx("SELECT * FROM jobs WHERE status = 'running'")]

    def requeue(self, job_id: str) -> None:
        """Put a running job back in the queue (its worker is known to be gone)."""
        self._tx(
            """UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated = ?
               WHERE id = ? AND status = 'running'""",
            (time.time(), job_id),
        )
