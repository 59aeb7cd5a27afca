"""The durable job queue on a real SQLite file, and the batch runner with real job kinds."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from facecast.jobs.runner import BatchRunner, JobContext, JobFailed, LiveGovernor, temp_output_for
from facecast.jobs.store import JobStateError, JobStore


class SlowWriter:
    """A job kind for these tests: writes its output in `steps` steps, optionally failing."""

    name = "slow"

    def __init__(self, steps: int = 5, delay: float = 0.05, fail_at: int | None = None) -> None:
        self.steps, self.delay, self.fail_at = steps, delay, fail_at
        self.started = threading.Event()
        self.seen_temp: list[Path] = []

    def validate(self, params):
        return params

    def run(self, ctx: JobContext) -> None:
        self.started.set()
        with ctx.temp_output.open("w") as f:
            for i in range(self.steps):
                if i == self.fail_at:
                    raise JobFailed("the input video is truncated at frame 3")
                f.write(f"frame {i}\n")
                f.flush()
                self.seen_temp.append(ctx.temp_output)
                assert not Path(ctx.job.output).exists()  # never visible under the final name early
                time.sleep(self.delay)
                ctx.progress((i + 1) / self.steps)


def test_the_store_is_durable_wal_and_survives_reopening(tmp_path):
    db = tmp_path / "jobs.sqlite"
    store = JobStore(db)
    job = store.submit("slow", {"a": 1}, str(tmp_path / "out.txt"))
    store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    again = JobStore(db)
    assert again.get(job.id).status == "queued" and again.get(job.id).params == {"a": 1}


def test_claim_finish_cancel_retry_transitions(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    a = store.submit("slow", {}, str(tmp_path / "a"))
    b = store.submit("slow", {}, str(tmp_path / "b"))
    claimed = store.claim("me", 30)
    assert claimed.id == a.id and claimed.status == "running" and claimed.attempts == 1  # oldest first
    assert store.cancel(b.id).status == "cancelled"  # queued: cancelled at once
    assert store.retry(b.id).status == "queued"
    with pytest.raises(JobStateError):
        store.retry(a.id)  # running
    assert store.cancel(a.id).cancel_requested  # running: asked to stop
    assert store.heartbeat(a.id, "me", 30, 0.5) is False  # the worker learns of the cancel
    store.finish(a.id, "me", "cancelled")
    assert store.get(a.id).status == "cancelled" and store.counts()["queued"] == 1


def test_expired_lease_goes_back_to_the_queue(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.submit("slow", {}, str(tmp_path / "x"))
    store.claim("dead-host:1:1", lease_s=0.01)
    time.sleep(0.05)
    assert [j.id for j in store.requeue_expired()] == [job.id]
    assert store.get(job.id).status == "queued"


def test_runner_renames_into_place_only_when_complete(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    kind = SlowWriter()
    out = tmp_path / "clips" / "out.txt"
    out.parent.mkdir()
    job = store.submit("slow", {}, str(out))
    final = BatchRunner(store, {"slow": kind}).run_one()
    assert final.status == "done" and final.progress == 1.0 and final.attempts == 1
    assert out.read_text().count("frame") == 5
    assert kind.seen_temp[0] == temp_output_for(out, job.id, 1) and kind.seen_temp[0].name.startswith(".")
    assert sorted(p.name for p in out.parent.iterdir()) == ["out.txt"]  # no temporary left


def test_a_failing_job_records_the_reason_and_leaves_no_file(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    out = tmp_path / "out.txt"
    store.submit("slow", {}, str(out))
    final = BatchRunner(store, {"slow": SlowWriter(fail_at=3)}).run_one()
    assert final.status == "failed" and final.error == "the input video is truncated at frame 3"
    assert list(tmp_path.glob("*out*")) == []


def test_cancel_a_running_job(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    kind = SlowWriter(steps=200, delay=0.02)
    job = store.submit("slow", {}, str(tmp_path / "out.txt"))
    runner = BatchRunner(store, {"slow": kind}, lease_s=3)
    runner.start()
    try:
        assert kind.started.wait(10)
        store.cancel(job.id)
        deadline = time.monotonic() + 10
        while store.get(job.id).status == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        runner.stop()
    final = store.get(job.id)
    assert final.status == "cancelled" and 0 < final.progress < 1
    assert list(tmp_path.glob("*out*")) == []


def test_stopping_the_daemon_requeues_the_running_job(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite")
    kind = SlowWriter(steps=200, delay=0.02)
    job = store.submit("slow", {}, str(tmp_path / "out.txt"))
    runner = BatchRunner(store, {"slow": kind})
    runner.start()
    assert kind.started.wait(10)
    runner.stop(timeout=5)
    assert store.get(job.id).status == "queued"  # will run again at the next start


def test_governor_slows_batch_work_when_live_fps_drops():
    live = {"fps": 60.0}
    gov = LiveGovernor(lambda: live["fps"], min_ratio=0.9)
    gov.start_job()
    live["fps"] = 45.0  # the job is hurting the live frame rate
    for _ in range(5):
        gov.after_step(0.001)
    high = gov.duty
    live["fps"] = 60.0
    for _ in range(20):
        gov.after_step(0.001)
    assert high > 3 and gov.duty < high / 3
