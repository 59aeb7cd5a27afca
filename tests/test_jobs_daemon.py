"""Jobs in the running daemon: submitted through its API, run by its batch thread, surviving SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import PORTRAIT, count_frames, free_port, popen_facecast, run_facecast


class Daemon:
    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir, self.port = workdir, port
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def sets(self) -> list[str]:
        return [
            "--set",
            f"control.port={self.port}",
            "--set",
            f"jobs.db={self.workdir / 'jobs.sqlite'}",
            "--set",
            "jobs.lease_s=5",
            "--set",
            f"jobs.input_dirs=[{self.workdir}, {PORTRAIT.parent}]",
        ]

    def start(self) -> None:
        self.proc = popen_facecast(
            "run",
            *self.sets(),
            "--set",
            "capture.source=synthetic",
            "--set",
            "capture.width=320",
            "--set",
            "capture.height=240",
            "--set",
            "capture.fps=15",
            "--set",
            "effect.active=passthrough",
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stdout.read()
            try:
                if httpx.get(self.url + "/state", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise AssertionError("the daemon's API did not come up")

    def job(self, job_id: str) -> dict:
        return httpx.get(f"{self.url}/jobs/{job_id}", timeout=5).json()

    def wait_for(self, job_id: str, predicate, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if predicate(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job never reached the state: {self.job(job_id)}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture
def daemon(tmp_path):
    (tmp_path / "recordings").mkdir()
    d = Daemon(tmp_path, free_port())
    yield d
    d.stop()


def _submit(d: Daemon, video: Path, out: Path) -> str:
    result = run_facecast(
        "jobs",
        *d.sets(),
        "submit",
        "swap",
        "--face",
        str(PORTRAIT),
        "--target",
        str(video),
        "-o",
        str(out),
        cwd=d.workdir,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_submit_through_the_daemon_and_see_progress_in_stats(daemon, synthetic_video):
    daemon.start()
    video = synthetic_video(20, 320, 240)
    out = daemon.workdir / "recordings" / "swapped.mp4"
    job_id = _submit(daemon, video, out)
    done = daemon.wait_for(job_id, lambda j: j["status"] in ("done", "failed"))
    assert done["status"] == "done", done
    assert count_frames(out) == 20
    stats = httpx.get(daemon.url + "/stats", timeout=5).json()
    assert stats["jobs"]["queue"]["done"] == 1
    shown = run_facecast("jobs", *daemon.sets(), "show", job_id, cwd=daemon.workdir)
    assert shown.stdout.split()[1] == "done"


def test_a_job_survives_sigkill_and_completes_exactly_once(daemon, synthetic_video):
    daemon.start()
    video = synthetic_video(150, 320, 240)
    out = daemon.workdir / "recordings" / "long.mp4"
    job_id = _submit(daemon, video, out)
    daemon.wait_for(job_id, lambda j: j["status"] == "running" and j["progress"] > 0.05)
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    assert not out.exists()  # no half-written file under the final name
    daemon.start()  # a new daemon on the same queue
    final = daemon.wait_for(job_id, lambda j: j["status"] in ("done", "failed"), timeout=240)
    assert final["status"] == "done" and final["attempts"] == 2, final
    assert count_frames(out) == 150
    assert sorted(p.name for p in out.parent.iterdir()) == ["long.mp4"]  # the first attempt left nothing


def test_cancel_a_running_job(daemon, synthetic_video):
    daemon.start()
    video = synthetic_video(150, 320, 240)
    out = daemon.workdir / "recordings" / "cancelled.mp4"
    job_id = _submit(daemon, video, out)
    daemon.wait_for(job_id, lambda j: j["status"] == "running" and j["progress"] > 0.02)
    cancelled = run_facecast("jobs", *daemon.sets(), "cancel", job_id, cwd=daemon.workdir)
    assert cancelled.returncode == 0, cancelled.stderr
    final = daemon.wait_for(job_id, lambda j: j["status"] != "running")
    assert final["status"] == "cancelled" and final["progress"] < 1
    assert list(out.parent.iterdir()) == []
    bad = httpx.post(f"{daemon.url}/jobs/{job_id}/cancel", timeout=5)
    assert bad.status_code == 409 and "nothing to cancel" in bad.json()["error"]
    missing = httpx.get(f"{daemon.url}/jobs/nope", timeout=5)
    assert missing.status_code == 404


def test_a_bad_submission_is_a_4xx_with_the_reason(daemon):
    daemon.start()
    r = httpx.post(
        daemon.url + "/jobs",
        json={
            "kind": "swap",
            "params": {"face": str(PORTRAIT), "target": "/nope.mp4"},
            "output": str(daemon.workdir / "recordings" / "z.mp4"),
        },
        timeout=10,
    )
    assert r.status_code == 400
    assert r.json()["error"].startswith(f"target /nope.mp4: no such file in the allowed folders ({daemon.workdir}, ")
    assert httpx.get(daemon.url + "/state", timeout=5).status_code == 200  # the daemon goes on
