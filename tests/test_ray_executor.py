"""Jobs on a real Ray cluster (`jobs.executor: ray`).

Ray replaces 127.0.0.1 with the machine's outward address, so the cluster, the daemon and the
driver of this test all run inside a private network namespace made for it (`unshare -n`), where
loopback is the only interface: nothing here can reach another machine. The namespace's work is
one scenario (this file run as a script: a two-node cluster, the daemon on it, jobs submitted
through its API and the `facecast jobs` CLI, a node killed mid-job, a job cancelled); the tests
below check what it recorded, so the cluster starts once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO))  # run as a script: `tests.conftest` importable

from tests.conftest import PORTRAIT, facecast_env, free_port, write_video  # noqa: E402

pytest.importorskip("ray", reason='Ray is not installed: pip install "facecast[ray]"')

SHORT, LONG = 24, 240  # frames of the clips: one quick job, and ones long enough to interrupt
# (the job's progress reaches the daemon about once a second: a 120-frame job, 3 s on a quick machine,
# could go from no progress to done between two reports)
# The daemon's live side: small and cheap, the jobs are what is tested.
LIVE_SIDE = {"capture.source": "synthetic", "capture.width": 320, "capture.height": 240, "capture.fps": 15}
LIVE = [f"--set={k}={v}" for k, v in {**LIVE_SIDE, "effect.active": "passthrough"}.items()]


def _unshare_works() -> str | None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is not installed"
    done = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True, text=True)
    return None if done.returncode == 0 else f"unshare -n is not permitted here: {done.stderr.strip()}"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> dict[str, Any]:
    reason = _unshare_works()
    if reason is not None:
        pytest.skip(reason)
    work = tmp_path_factory.mktemp("ray")
    script = f"ip link set lo up && exec {sys.executable} {Path(__file__)} {work}"
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", script], capture_output=True, text=True, timeout=420, env=facecast_env()
    )
    results = json.loads((work / "results.json").read_text()) if (work / "results.json").exists() else {}
    results["_log"] = done.stdout[-6000:] + done.stderr[-6000:]
    results["_work"] = str(work)
    assert done.returncode == 0 and results.get("finished"), results["_log"]
    return results


def _probe(path: str) -> dict[str, Any]:
    import av

    with av.open(path) as c:
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(path) as c:
        audio = c.streams.audio[0] if c.streams.audio else None
        audio_s = float(audio.duration * audio.time_base) if audio is not None and audio.duration else None
    return {"frames": frames, "audio_s": audio_s}


def test_an_unreachable_cluster_is_a_start_up_error_naming_the_address(scenario):
    error = scenario["unreachable"]
    assert scenario["unreachable_address"] in error and "jobs.ray.address" in error


def test_jobs_submitted_to_the_daemon_complete_on_the_cluster_with_frames_and_audio(scenario):
    job = scenario["first"]
    assert job["status"] == "done" and job["attempts"] == 1, job
    got = _probe(job["output"])
    assert got["frames"] == LONG
    assert got["audio_s"] == pytest.approx(LONG / 24.0, abs=0.05)
    # The work ran in a Ray worker: the daemon's /stats says it is connected to the cluster.
    assert scenario["stats_executor"]["name"] == "ray" and scenario["stats_executor"]["state"] == "connected"


def test_workers_lists_the_nodes_their_resources_and_the_job_each_runs(scenario):
    nodes = scenario["workers_during_job"]["nodes"]
    assert len(nodes) == 2
    worker = next(n for n in nodes if not n["head"])
    assert worker["resources"]["CPU"] == 1 and worker["jobs"] == [scenario["first"]["id"]]
    cli = scenario["workers_cli"]
    assert "executor ray at 127.0.0.1:" in cli and "(head)" in cli  # through the daemon, while nodes change


def test_a_node_killed_mid_job_runs_the_job_again_and_it_completes_once(scenario):
    killed = scenario["killed"]
    assert 0 < killed["progress_at_kill"] < 1
    assert killed["requeued_attempts"] >= 2  # the daemon counted the lost attempt
    job = killed["final"]
    assert job["status"] == "done" and job["attempts"] >= killed["requeued_attempts"], job
    assert _probe(job["output"])["frames"] == LONG
    # Exactly one output: no second copy, no temporary file left behind.
    folder = Path(job["output"]).parent
    assert sorted(p.name for p in folder.iterdir() if Path(job["output"]).stem in p.name) == [Path(job["output"]).name]


def test_a_daemon_killed_while_ray_runs_its_job_runs_it_again_after_restart(scenario):
    restarted = scenario["restarted"]
    assert restarted["orphans"] == []  # the daemon's Ray process did not outlive it
    job = restarted["final"]
    assert job["status"] == "done" and job["attempts"] == 2, job
    assert _probe(job["output"])["frames"] == LONG


def test_when_the_cluster_goes_away_jobs_wait_queued_and_stats_says_so(scenario):
    gone = scenario["cluster_gone"]
    assert gone["daemon_alive"]  # the Ray driver that lost its cluster was the bridge process, not the daemon
    assert gone["executor"]["state"] == "unreachable"
    assert "127.0.0.1:" in gone["executor"]["waiting_for"] and "queued jobs wait" in gone["executor"]["waiting_for"]
    assert gone["job"]["status"] == "queued" and gone["job"]["attempts"] == 0


def test_cancel_stops_the_running_job_on_its_worker(scenario):
    job = scenario["cancelled"]
    assert job["status"] == "cancelled" and 0 < job["progress"] < 1, job
    assert not Path(job["output"]).exists()
    # The actor was kept (the job stopped at a step, the worker did not die): the next job reused it.
    after = scenario["after_cancel"]
    assert after["status"] == "done" and after["attempts"] == 1
    assert _probe(after["output"])["frames"] == SHORT


def test_executor_ray_without_ray_installed_names_the_install_command(tmp_path):
    hide_ray = (
        "import sys, importlib.abc\n"
        "class Hide(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'): raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "from facecast.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_ray, "jobs", "--offline", "--set", "jobs.executor=ray", "workers"],
        capture_output=True,
        text=True,
        timeout=60,
        env=facecast_env(),
        cwd=tmp_path,
    )
    assert done.returncode == 2 and 'pip install "facecast[ray]"' in done.stderr, done.stderr


def test_a_bad_cluster_address_is_a_config_error_naming_the_key():
    from facecast.config import ConfigError, load_config

    with pytest.raises(ConfigError) as info:
        load_config(None, ["jobs.executor=ray", "jobs.ray.address=http://head"])
    assert "jobs.ray.address" in str(info.value) and "http://head" in str(info.value)


def test_bench_jobs_reports_wall_time_and_jobs_per_minute_per_executor(tmp_path):
    """The local half of `facecast bench --jobs N --executor local,ray` (the Ray half needs a cluster)."""
    out = tmp_path / "bench.json"
    bench = "bench --jobs 2 --executor local --effect animate --backend mesh --json".split()
    done = subprocess.run(
        [sys.executable, "-m", "facecast", *bench, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**facecast_env(), "TMPDIR": str(tmp_path)},
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(tmp_path.glob("facecast-bench-jobs-*"))  # the clip, queues and outputs: scratch, removed
    (run,) = json.loads(out.read_text())["runs"]
    assert run["executor"] == "local" and run["done"] == 2 and run["failed"] == 0
    assert run["wall_s"] > 0 and run["jobs_per_min"] == pytest.approx(2 / run["wall_s"] * 60, rel=0.01)
    assert "jobs/min" in done.stdout


# -- the scenario, run inside the network namespace ----------------------------------------------------


class Scenario:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.results: dict[str, Any] = {}
        self.groups: list[int] = []  # process groups started here (each Ray node, the daemon)
        self.port = free_port()
        self.api = free_port()
        self.url = f"http://127.0.0.1:{self.api}"
        # The daemon's Ray driver gives up on a lost cluster after 20 s (its own default, kept unless
        # set): 8 here, to learn sooner that the head was killed. The path taken is the same.
        self.env = {**facecast_env(), "RAY_USAGE_STATS_ENABLED": "0", "RAY_gcs_rpc_server_reconnect_timeout_s": "8"}
        (work / "recordings").mkdir()

    def save(self) -> None:
        (self.work / "results.json").write_text(json.dumps(self.results, indent=1))

    def node(self, name: str, *args: str) -> int:
        """A Ray node in its own process group (`ray start --block`): killing the group kills the node."""
        log = (self.work / f"{name}.log").open("w")
        proc = subprocess.Popen(
            [str(BIN / "ray"), "start", "--block", "--disable-usage-stats", f"--temp-dir={self.work / name}", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=self.env,
        )
        self.groups.append(proc.pid)
        return proc.pid

    def facecast(self, *args: str, address: str | None = None) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "facecast", args[0], *self.sets(address), *args[1:]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.work,
        )

    def sets(self, address: str | None = None) -> list[str]:
        values = {
            "control.port": self.api,
            "jobs.db": self.work / "jobs.sqlite",
            "jobs.lease_s": 5,
            "jobs.input_dirs": f"[{self.work}, {PORTRAIT.parent}]",
            "jobs.output_dirs": f"[{self.work / 'recordings'}]",
            "jobs.executor": "ray",
            "jobs.ray.address": address or f"127.0.0.1:{self.port}",
            "jobs.ray.max_parallel": 1,
            "jobs.ray.connect_timeout_s": 60,
        }
        return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]

    def request(self, method: str, path: str, **kw) -> Any:
        import httpx

        reply = httpx.request(method, self.url + path, timeout=30, **kw)
        assert reply.status_code < 300, reply.text
        return reply.json()

    def submit(self, name: str, clip: Path) -> str:
        params = {"character": str(PORTRAIT), "driving": str(clip), "backend": "mesh"}
        body = {"kind": "animate", "params": params, "output": str(self.work / "recordings" / f"{name}.mp4")}
        return self.request("POST", "/jobs", json=body)["id"]

    def wait(self, job_id: str, until, timeout: float = 180) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.request("GET", f"/jobs/{job_id}")
            if until(job):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} never got there: {job}")

    def daemon(self, log: str = "daemon.log") -> subprocess.Popen:
        """`facecast run` on the cluster, in its own process group; returns once its API answers."""
        daemon = subprocess.Popen(
            [sys.executable, "-m", "facecast", "run", *self.sets(), *LIVE],
            stdout=(self.work / log).open("w"),
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.work,
            start_new_session=True,
        )
        self.groups.append(daemon.pid)
        deadline = time.monotonic() + 120
        while True:
            assert daemon.poll() is None and time.monotonic() < deadline, (self.work / log).read_text()
            try:
                self.request("GET", "/state")
                return daemon
            except Exception:
                time.sleep(0.5)

    def run(self) -> None:
        from facecast.capture.synthetic import synthetic_frames

        # The cluster: a head that runs no jobs (it holds the cluster: killing it ends it) and a worker.
        # Everything below starts while it comes up (this machine is slow to start processes).
        head = self.node("head", "--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false")
        worker_a = self.node("worker-a", f"--address=127.0.0.1:{self.port}", "--num-cpus=1")
        # Nothing listens at `gone`: the start-up error names the address.
        gone = f"127.0.0.1:{free_port()}"
        unreachable = self.facecast("jobs", "--offline", "workers", address=gone)

        short = write_video(
            self.work / "short.mp4", [f.image for f in synthetic_frames(SHORT, 320, 240, 24.0)], 24.0, audio=True
        )
        long = write_video(
            self.work / "long.mp4", [f.image for f in synthetic_frames(LONG, 320, 240, 24.0)], 24.0, audio=True
        )

        daemon = self.daemon()

        # A job through the daemon's API, and the workers while it runs.
        first = self.submit("first", long)  # long enough to be seen running
        self.wait(first, lambda j: j["status"] == "running" and j["progress"] > 0)
        self.results["workers_during_job"] = self.request("GET", "/job-workers")
        self.results["first"] = self.wait(first, lambda j: j["status"] not in ("queued", "running"))
        self.results["stats_executor"] = self.request("GET", "/stats")["jobs"]["executor"]
        workers_cli = self.facecast("jobs", "workers")  # through the daemon's API
        self.results["unreachable"] = unreachable.communicate(timeout=120)[1]
        self.results["unreachable_address"] = gone
        self.save()

        # Cancel a running job; the next job runs on the same actor.
        cancelled = self.submit("cancelled", long)
        self.wait(cancelled, lambda j: j["status"] == "running" and j["progress"] > 0.05)
        self.request("POST", f"/jobs/{cancelled}/cancel")
        self.results["cancelled"] = self.wait(cancelled, lambda j: j["status"] not in ("queued", "running"))
        after = self.submit("after-cancel", short)
        self.results["after_cancel"] = self.wait(after, lambda j: j["status"] not in ("queued", "running"))
        self.save()

        # Kill the worker node (every process of it) mid-job; a new node joins and the job runs again.
        killed = self.submit("killed", long)
        running = self.wait(killed, lambda j: j["status"] == "running" and j["progress"] > 0.05)
        os.killpg(worker_a, signal.SIGKILL)
        requeued = self.wait(killed, lambda j: j["attempts"] >= 2 or j["status"] != "running", timeout=90)
        self.node("worker-b", f"--address=127.0.0.1:{self.port}", "--num-cpus=1")
        final = self.wait(killed, lambda j: j["status"] not in ("queued", "running"), timeout=240)
        self.results["workers_cli"] = workers_cli.communicate(timeout=120)[0]
        self.results["killed"] = {
            "progress_at_kill": running["progress"],
            "requeued_attempts": requeued["attempts"],
            "final": final,
        }
        self.save()

        # The daemon killed (SIGKILL) while Ray runs its job: its Ray process ends with it (so Ray
        # stops the actor), and the restarted daemon queues the job again and completes it.
        import psutil

        restarted = self.submit("restarted", long)
        self.wait(restarted, lambda j: j["status"] == "running" and j["progress"] > 0.05)
        children = psutil.Process(daemon.pid).children(recursive=True)
        daemon.kill()
        daemon.wait(10)
        _, alive = psutil.wait_procs(children, timeout=30)
        daemon = self.daemon("daemon-2.log")
        final = self.wait(restarted, lambda j: j["status"] not in ("queued", "running"))
        self.results["restarted"] = {"orphans": [p.pid for p in alive], "final": final}
        self.save()

        # The whole cluster goes away (the head killed): the daemon and its live pipeline go on, /stats
        # says the cluster is unreachable, and a new job waits queued.
        os.killpg(head, signal.SIGKILL)
        deadline = time.monotonic() + 150
        while self.request("GET", "/stats")["jobs"]["executor"]["state"] != "unreachable":
            assert time.monotonic() < deadline, "the daemon never noticed the cluster was gone"
            time.sleep(1)
        waiting = self.submit("waiting", short)
        while (executor := self.request("GET", "/stats")["jobs"]["executor"])["waiting_for"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.5)
        self.results["cluster_gone"] = {
            "executor": executor,
            "job": self.request("GET", f"/jobs/{waiting}"),
            "daemon_alive": daemon.poll() is None,
            "live_frames": self.request("GET", "/stats").get("frames"),
        }
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
        self.results["finished"] = True
        self.save()

    def close(self) -> None:
        for group in reversed(self.groups):
            try:
                os.killpg(group, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    scenario_run = Scenario(Path(sys.argv[1]))
    try:
        scenario_run.run()
    finally:
        scenario_run.save()
        scenario_run.close()
