"""A durable job queue in one SQLite file (WAL, synchronous=FULL).

Every state change is one short write transaction. Each thread that writes (the batch thread, a
job's lease thread, API requests) uses a connection of its own, so one waiting for another
process's lock never holds the others up beyond their own wait (`WRITE_BUSY_S`, then
JobStoreBusy). Reads never take the write lock: they run on read-only connections of their own (in
WAL mode a reader sees the last committed state while another connection, or another process,
writes), so the control API lists jobs while `facecast jobs` or a second daemon holds the queue.
A worker holds a job through a lease it renews while it works; a job whose lease ran out (its
process died, even by SIGKILL) goes back to the queue at the next sweep (`runner.py`), so every job
finishes exactly once from the user's point of view. At most one queued or running job writes a
given output path (checked in the same transaction that queues the job).
"""

from __future__ import annotations

import builtins
import json
import os
import queue
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

Status = Literal["queued", "running", "done", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "done", "failed", "cancelled")
ACTIVE: tuple[Status, ...] = ("queued", "running")  # states in which a job still owns its output path
LeaseState = Literal["ours", "cancelled", "lost"]

# How long a call waits for another connection's lock before giving up with JobStoreBusy. Writes
# are one short transaction each, so a longer wait means another process holds the queue; reads
# only wait in the rare moments WAL readers need a lock (recovery after a crash).
WRITE_BUSY_S = 5.0
READ_BUSY_S = 1.0

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
            "id": self.id,
            "kind": self.kind,
            "params": self.params,
            "output": self.output,
            "status": self.status,
            "attempts": self.attempts,
            "progress": round(self.progress, 4),
            "error": self.error,
            "cancel_requested": self.cancel_requested,
            "created": self.created,
            "updated": self.updated,
            "finished": self.finished,
        }


class JobNotFound(KeyError):
    pass


class JobStateError(ValueError):
    """The job is not in a state that allows the operation (e.g. retrying a running job)."""


class OutputInUse(JobStateError):
    """Another queued or running job already writes this output path."""


class JobStoreBusy(RuntimeError):
    """Another process held the queue's lock longer than we wait; nothing was changed."""


def output_key(path: str) -> str:
    """The form two output paths are compared in: normalised, and case-folded where the usual file
    systems ignore case (Windows, macOS)."""
    key = os.path.normcase(os.path.normpath(path))
    return key.casefold() if sys.platform == "darwin" else key


T = TypeVar("T")


class JobStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # guards the list of connections
        # Idle connections, one per concurrent writer or reader; each is used by one thread at a time.
        self._writers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        db = self._connect(WRITE_BUSY_S)
        try:
            with self._busy_is_an_error():
                db.execute("PRAGMA journal_mode=WAL")  # persistent: every later connection is in WAL mode
                db.executescript(_SCHEMA)
        finally:
            self._writers.put(db)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    # -- helpers ---------------------------------------------------------------------------------
    @contextmanager
    def _busy_is_an_error(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise JobStoreBusy(
                    f"the job queue {self.path} is locked by another process; try again in a moment"
                ) from exc
            raise

    def _connect(self, busy_s: float) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=busy_s)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA synchronous=FULL")  # per connection: a committed job survives a power cut
        with self._lock:
            if self._closed:
                conn.close()
                raise sqlite3.ProgrammingError("the job store is closed")
            self._connections.append(conn)
        return conn

    @staticmethod
    def _idle(pool: queue.SimpleQueue[sqlite3.Connection]) -> sqlite3.Connection | None:
        try:
            return pool.get_nowait()
        except queue.Empty:
            return None

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` in one write transaction (BEGIN IMMEDIATE: the lock is taken before any read)."""
        db = self._idle(self._writers) or self._connect(WRITE_BUSY_S)
        try:
            with self._busy_is_an_error():
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(db)
                    db.execute("COMMIT")
                    return result
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
        finally:
            self._writers.put(db)

    def _tx(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        return self._write(lambda db: db.execute(sql, args).fetchall())

    def _reader(self) -> sqlite3.Connection:
        conn = self._idle(self._readers)
        if conn is None:
            conn = self._connect(READ_BUSY_S)
            conn.execute("PRAGMA query_only = ON")  # a reader never writes, so it never waits for the write lock
        return conn

    def _read(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        """A plain SELECT in autocommit mode: WAL gives it a snapshot without the write lock."""
        conn = self._reader()
        try:
            with self._busy_is_an_error():
                return conn.execute(sql, args).fetchall()
        finally:
            self._readers.put(conn)

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"],
            kind=row["kind"],
            params=json.loads(row["params"]),
            output=row["output"],
            status=row["status"],
            attempts=row["attempts"],
            progress=row["progress"],
            error=row["error"],
            cancel_requested=bool(row["cancel_requested"]),
            created=row["created"],
            updated=row["updated"],
            finished=row["finished"],
            lease_owner=row["lease_owner"],
        )

    # -- queries ---------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return self._job(rows[0])

    def list(self, status: Status | None = None, limit: int = 100) -> list[Job]:
        if status is None:
            rows = self._read("SELECT * FROM jobs ORDER BY created DESC LIMIT ?", (limit,))
        else:
            rows = self._read("SELECT * FROM jobs WHERE status = ? ORDER BY created DESC LIMIT ?", (status, limit))
        return [self._job(r) for r in rows]

    def counts(self) -> dict[str, int]:
        rows = self._read("SELECT status, COUNT(*) AS n FROM jobs GROUP BY status")
        counts: dict[str, int] = {s: 0 for s in STATUSES}
        counts.update({r["status"]: r["n"] for r in rows})
        return counts

    def running(self) -> builtins.list[Job]:
        return [self._job(r) for r in self._read("SELECT * FROM jobs WHERE status = 'running'")]

    # -- state changes ---------------------------------------------------------------------------
    @staticmethod
    def _output_owner(db: sqlite3.Connection, output: str, other_than: str | None = None) -> sqlite3.Row | None:
        """The queued or running job that writes `output` (inside a write transaction: no race)."""
        key = output_key(output)
        rows = db.execute("SELECT id, status, output FROM jobs WHERE status IN ('queued', 'running')").fetchall()
        return next((r for r in rows if r["id"] != other_than and output_key(r["output"]) == key), None)

    def submit(self, kind: str, params: dict[str, Any], output: str) -> Job:
        """Queue a job. OutputInUse when another queued or running job writes the same path."""

        def insert(db: sqlite3.Connection) -> sqlite3.Row:
            owner = self._output_owner(db, output)
            if owner is not None:
                raise OutputInUse(
                    f"output {output} is already the output of job {owner['id']} ({owner['status']}); "
                    "choose another name or cancel that job"
                )
            now = time.time()
            return db.execute(
                "INSERT INTO jobs (id, kind, params, output, status, created, updated) "
                "VALUES (?, ?, ?, ?, 'queued', ?, ?) RETURNING *",
                (uuid.uuid4().hex[:12], kind, json.dumps(params), output, now, now),
            ).fetchone()

        return self._job(self._write(insert))

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
        return self.renew(job_id, owner, lease_s, progress) == "ours"

    def renew(self, job_id: str, owner: str, lease_s: float, progress: float | None = None) -> LeaseState:
        """Renew the lease: "ours", "cancelled" (still ours, but the user asked to stop) or "lost"
        (the lease ran out and the job was given back to the queue, or it was finished elsewhere)."""
        now = time.time()
        rows = self._tx(
            """UPDATE jobs SET lease_until = ?, updated = ?, progress = COALESCE(?, progress)
               WHERE id = ? AND status = 'running' AND lease_owner = ? RETURNING cancel_requested""",
            (now + lease_s, now, progress, job_id, owner),
        )
        if not rows:
            return "lost"
        return "cancelled" if rows[0]["cancel_requested"] else "ours"

    def record_report(self, job_id: str, owner: str, report: dict[str, Any]) -> bool:
        """Keep a post step's report with a running job we hold, in its params as "report" (shown by
        `facecast jobs show`); False, and nothing changed, when the job is no longer ours."""
        rows = self._tx(
            """UPDATE jobs SET params = json_set(params, '$.report', json(?)), updated = ?
               WHERE id = ? AND status = 'running' AND lease_owner = ? RETURNING id""",
            (json.dumps(report), time.time(), job_id, owner),
        )
        return bool(rows)

    def finish(
        self, job_id: str, owner: str, status: Status, error: str | None = None, progress: float | None = None
    ) -> bool:
        """Record the end of a job we hold (and how far it got); False, and nothing changed, when it is
        no longer ours."""
        now = time.time()
        rows = self._tx(
            """UPDATE jobs SET status = ?, error = ?,
                   progress = CASE WHEN ? = 'done' THEN 1 ELSE COALESCE(?, progress) END,
                   lease_owner = NULL, lease_until = NULL, updated = ?, finished = ?
               WHERE id = ? AND status = 'running' AND lease_owner = ? RETURNING id""",
            (status, error, status, progress, now, now, job_id, owner),
        )
        return bool(rows)

    def cancel(self, job_id: str) -> Job:
        """Queued: cancelled at once. Running: the worker is asked to stop at its next step."""

        def change(db: sqlite3.Connection) -> sqlite3.Row:
            row = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            now = time.time()
            if row["status"] == "queued":
                sql = "UPDATE jobs SET status = 'cancelled', updated = ?, finished = ? WHERE id = ? RETURNING *"
                return db.execute(sql, (now, now, job_id)).fetchone()
            if row["status"] == "running":
                sql = "UPDATE jobs SET cancel_requested = 1, updated = ? WHERE id = ? RETURNING *"
                return db.execute(sql, (now, job_id)).fetchone()
            raise JobStateError(f"job {job_id} is {row['status']}: nothing to cancel")

        return self._job(self._write(change))

    def retry(self, job_id: str) -> Job:
        """Queue a failed or cancelled job again (refused while another job writes its output)."""

        def change(db: sqlite3.Connection) -> sqlite3.Row:
            row = db.execute("SELECT status, output FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            if row["status"] not in ("failed", "cancelled"):
                raise JobStateError(f"job {job_id} is {row['status']}: only failed or cancelled jobs can be retried")
            owner = self._output_owner(db, row["output"], other_than=job_id)
            if owner is not None:
                raise OutputInUse(
                    f"job {owner['id']} ({owner['status']}) now writes {row['output']}: "
                    f"job {job_id} cannot be queued again with the same output"
                )
            return db.execute(
                """UPDATE jobs SET status = 'queued', error = NULL, progress = 0, cancel_requested = 0,
                       finished = NULL, updated = ? WHERE id = ? RETURNING *""",
                (time.time(), job_id),
            ).fetchone()

        return self._job(self._write(change))

    def requeue_expired(self, now: float | None = None) -> builtins.list[Job]:
        """Jobs whose worker stopped renewing its lease (the process died or hangs) go back to the
        queue; returned as they were (with the attempt whose temporary file is left behind)."""
        now = time.time() if now is None else now

        def change(db: sqlite3.Connection) -> builtins.list[sqlite3.Row]:
            expired = db.execute("SELECT * FROM jobs WHERE status = 'running' AND lease_until < ?", (now,)).fetchall()
            db.execute(
                """UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated = ?
                   WHERE status = 'running' AND lease_until < ?""",
                (now, now),
            )
            return expired

        return [self._job(r) for r in self._write(change)]

    def requeue(self, job_id: str, owner: str | None = None) -> bool:
        """Put a running job back in the queue: its worker is gone (`owner` = the dead holder, checked
        in the same transaction) or it is our own job stopped by a shutdown."""
        now = time.time()
        if owner is None:
            rows = self._tx(
                """UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated = ?
                   WHERE id = ? AND status = 'running' RETURNING id""",
                (now, job_id),
            )
        else:
            rows = self._tx(
                """UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated = ?
                   WHERE id = ? AND status = 'running' AND lease_owner = ? RETURNING id""",
                (now, job_id, owner),
            )
        return bool(rows)
