"""Job outputs a live show can trust: one job per output path (also across processes), a publish that
never replaces a file the runner did not create, nothing published by a runner that lost its lease,
temporary names of their own per attempt, expired leases (a SIGKILLed worker) re-queued while the
runner runs, and inputs confined to the configured folders. Real SQLite files, real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from facecast.config import load_config
from facecast.jobs.runner import BatchRunner, JobContext, JobRejected, kept_output_for, temp_output_for
from facecast.jobs.service import JobService, default_kinds
from facecast.jobs.store import JobStore, OutputInUse
from tests.conftest import REPO, facecast_env


class Writer:
    """A job kind that writes `text` to its temporary file; `before_publish` runs after the write."""

    name = "write"

    def __init__(self, text: str = "result", before_publish=None) -> None:
        self.text = text
        self.before_publish = before_publish
        self.temps: list[Path] = []

    def validate(self, params):
        return params

    def run(self, ctx: JobContext) -> None:
        self.temps.append(ctx.temp_output)
        ctx.temp_output.write_text(self.text)
        if self.before_publish is not None:
            self.before_publish(ctx)


def _service(tmp_path: Path, kind: Writer) -> JobService:
    cfg = load_config(None, [f"jobs.db={tmp_path / 'jobs.sqlite'}", f"jobs.output_dirs=[{tmp_path / 'out'}]"])
    return JobService(cfg.jobs, {"write": kind})


# -- one job per output path ----------------------------------------------------------------------


def test_a_second_job_writing_the_same_output_is_refused_until_the_first_ends(tmp_path):
    (tmp_path / "out" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "out")
    service = _service(tmp_path, Writer())
    first = service.submit("write", {}, str(tmp_path / "out" / "clip.mp4"))
    # The same file written three other ways: with `..`, through a symbolic link, relative to the cwd.
    for same in (tmp_path / "out" / "sub" / ".." / "clip.mp4", tmp_path / "link" / "clip.mp4"):
        with pytest.raises(JobRejected, match=f"already the output of job {first.id} \\(queued\\)"):
            service.submit("write", {}, str(same))
    os.chdir(tmp_path)
    with pytest.raises(JobRejected, match="already the output of job"):
        service.submit("write", {}, "out/clip.mp4")
    service.submit("write", {}, str(tmp_path / "out" / "other.mp4"))  # another name is fine
    service.store.cancel(first.id)
    second = service.submit("write", {}, str(tmp_path / "out" / "clip.mp4"))  # the first no longer writes it
    with pytest.raises(OutputInUse, match=f"job {second.id} \\(queued\\) now writes"):
        service.store.retry(first.id)  # nor can it be queued again beside the second
    assert [j.status for j in service.store.list()].count("queued") == 2


_SUBMIT = textwrap.dedent("""
    import sys, time
    from facecast.jobs.store import JobStore, OutputInUse
    store = JobStore(sys.argv[1])
    while time.time() < float(sys.argv[3]):  # start together
        time.sleep(0.001)
    try:
        print(store.submit("write", {}, sys.argv[2]).id)
    except OutputInUse:
        print("refused")
""")


def test_processes_submitting_the_same_output_at_once_get_one_job(tmp_path):
    db, out = tmp_path / "jobs.sqlite", str(tmp_path / "clip.mp4")
    JobStore(db).close()  # the schema exists before they race
    start = time.time() + 3
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _SUBMIT, str(db), out, str(start)],
            cwd=REPO,
            env=facecast_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    answers = sorted(p.communicate(timeout=60)[0].strip() for p in procs)
    assert answers.count("refused") == 3, answers
    assert [j.output for j in JobStore(db).list()] == [out]


# -- publishing -----------------------------------------------------------------------------------


def test_a_file_that_appears_while_the_job_runs_is_never_replaced(tmp_path):
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    kind = Writer("the job's result", before_publish=lambda ctx: out.write_text("the user's own file"))
    service = _service(tmp_path, kind)
    job = service.submit("write", {}, str(out))
    final = service.runner.run_one()
    assert final.status == "failed"
    kept = kept_output_for(out, job.id)
    assert final.error == (
        f"{out} appeared while the job ran (another program or job wrote it); it was left "
        f"untouched and this job's result was kept as {kept.name}"
    )
    assert out.read_text() == "the user's own file"
    assert kept.read_text() == "the job's result"
    assert sorted(p.name for p in out.parent.iterdir()) == sorted([out.name, kept.name])  # no temporary left


def test_a_file_that_appears_before_the_job_starts_fails_it_without_running_it(tmp_path):
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    kind = Writer()
    service = _service(tmp_path, kind)
    service.submit("write", {}, str(out))
    out.write_text("saved meanwhile")
    final = service.runner.run_one()
    assert final.status == "failed" and "appeared after the job was queued" in final.error
    assert kind.temps == [] and out.read_text() == "saved meanwhile"


def test_a_runner_that_lost_its_lease_publishes_nothing_and_the_new_attempt_wins(tmp_path):
    """Runner A stalls past its lease; the queue gives the job to runner B (attempt 2, its own temporary
    name), which publishes. When A wakes up with its result, the publish check finds the job is no
    longer A's: its result is discarded and B's output stays."""
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    a_wrote, a_resume = threading.Event(), threading.Event()

    def stall(ctx: JobContext) -> None:
        a_wrote.set()
        assert a_resume.wait(30)

    kind_a, kind_b = Writer("from A", before_publish=stall), Writer("from B")
    service = _service(tmp_path, kind_a)
    job = service.submit("write", {}, str(out))
    runner_a = service.runner
    runner_b = BatchRunner(JobStore(tmp_path / "jobs.sqlite"), {"write": kind_b})
    runner_b.owner = "another-host:1:1"
    result_a: list = []
    thread_a = threading.Thread(target=lambda: result_a.append(runner_a.run_one()))
    thread_a.start()
    try:
        assert a_wrote.wait(30)
        # A's lease runs out (as if it had hung for lease_s); the job is queued again and B takes it.
        [expired] = runner_b.store.requeue_expired(now=time.time() + 3600)
        assert expired.id == job.id and expired.attempts == 1
        final_b = runner_b.run_one()
        assert final_b.status == "done" and final_b.attempts == 2
        assert kind_a.temps[0].exists()  # both attempts were writing at once, under their own names
        assert kind_a.temps == [temp_output_for(out, job.id, 1)] and kind_b.temps == [temp_output_for(out, job.id, 2)]
    finally:
        a_resume.set()
        thread_a.join(30)
    assert result_a[0].status == "done" and result_a[0].attempts == 2  # B's record, untouched by A
    assert out.read_text() == "from B"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # A's temporary file is gone too


# -- leases expire while the runner runs ------------------------------------------------------------

_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from facecast.jobs.runner import owner_id, temp_output_for
    from facecast.jobs.store import JobStore
    store = JobStore(sys.argv[1])
    job = store.claim(owner_id(), lease_s=float(sys.argv[2]))
    temp_output_for(Path(job.output), job.id, job.attempts).write_text("half a video")
    print(job.id, flush=True)
    time.sleep(600)
""")


def test_a_sigkilled_workers_job_is_run_again_while_the_runner_runs(tmp_path):
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    kind = Writer("complete")
    service = _service(tmp_path, kind)
    job = service.submit("write", {}, str(out))
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(tmp_path / "jobs.sqlite"), "3600"],
        cwd=REPO,
        env=facecast_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    runner = BatchRunner(service.store, {"write": kind}, lease_s=4, poll_s=0.1)
    try:
        assert worker.stdout.readline().strip() == job.id  # another worker process holds the job (lease: 1 h)
        runner.start()
        stale = temp_output_for(out, job.id, 1)
        assert stale.exists() and service.store.get(job.id).status == "running"
        time.sleep(runner.sweep_s + 0.5)
        assert service.store.get(job.id).status == "running"  # its worker is alive: the job stays with it
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        deadline = time.monotonic() + 30
        while service.store.get(job.id).status != "done" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        runner.stop(timeout=5)
        if worker.poll() is None:
            worker.kill()
    final = service.store.get(job.id)
    assert final.status == "done" and final.attempts == 2
    assert out.read_text() == "complete" and not stale.exists()


def test_an_expired_lease_of_a_worker_on_another_machine_is_run_again_while_the_runner_runs(tmp_path):
    out = tmp_path / "out" / "clip.mp4"
    out.parent.mkdir()
    kind = Writer("complete")
    service = _service(tmp_path, kind)
    job = service.submit("write", {}, str(out))
    service.store.claim("another-host:4242:1", lease_s=2.0)  # its process cannot be checked: wait for the lease
    runner = BatchRunner(service.store, {"write": kind}, lease_s=2, poll_s=0.1)
    runner.start()
    try:
        assert service.store.get(job.id).status == "running"  # not expired at start: left to its worker
        deadline = time.monotonic() + 20
        while service.store.get(job.id).status != "done" and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        runner.stop(timeout=5)
    assert service.store.get(job.id).status == "done" and out.read_text() == "complete"


# -- inputs stay inside the configured folders --------------------------------------------------------


@pytest.fixture
def kinds(tmp_path):
    (tmp_path / "inputs").mkdir()
    (tmp_path / "models" / "ltx").mkdir(parents=True)
    (tmp_path / "private" / "pipeline").mkdir(parents=True)
    (tmp_path / "private" / "secret.png").write_bytes(b"not for jobs")
    cfg = load_config(
        None,
        [
            f"jobs.input_dirs=[{tmp_path / 'inputs'}]",
            f"models.dir={tmp_path / 'models'}",
            f"characters.dir={tmp_path / 'characters'}",
        ],
    )
    return default_kinds(cfg)


def _refusal(kind, params: dict) -> str:
    with pytest.raises(JobRejected) as info:
        kind.validate(params)
    return str(info.value)


def test_inputs_outside_the_allowed_folders_get_the_same_answer_whether_they_exist_or_not(tmp_path, kinds):
    inside = tmp_path / "inputs"
    (inside / "escape.png").symlink_to(tmp_path / "private" / "secret.png")
    paths = {
        "exists outside": tmp_path / "private" / "secret.png",
        "missing outside": tmp_path / "private" / "nothing.png",
        "dot-dot": inside / ".." / "private" / "secret.png",
        "link inside to outside": inside / "escape.png",
        "missing inside": inside / "nothing.png",
        "system file": Path("/etc/hostname"),
    }
    answers = {}
    for what, path in paths.items():
        message = _refusal(kinds["swap"], {"face": str(path), "target": str(path)})
        answers[what] = message.replace(str(path), "PATH")
    assert len(set(answers.values())) == 1, answers
    assert (
        answers["exists outside"] == f"face PATH: no such file in the allowed folders ({inside}, "
        f"{tmp_path / 'characters'}; jobs.input_dirs)"
    )


def test_generate_model_folders_must_be_inside_models_dir_or_the_allowlist(tmp_path, kinds):
    portrait = tmp_path / "inputs" / "me.png"
    portrait.write_bytes(b"checked later")
    base = {"character": str(portrait), "prompt": "waves"}
    outside = [tmp_path / "private" / "pipeline", tmp_path / "private" / "nothing", Path("/usr/lib")]
    answers = {_refusal(kinds["generate"], {**base, "model": str(m)}).replace(str(m), "M") for m in outside}
    assert answers == {
        f"model folder M: no such folder in the allowed folders ({tmp_path / 'models'}; "
        "models.dir, jobs.generate_model_dirs)"
    }
    allowed = tmp_path / "models" / "ltx"
    assert kinds["generate"].models.folder(str(allowed), "model folder") == allowed  # what validate() then reads
