"""The Ray executor (`jobs.executor: ray`): each claimed job runs on a Ray cluster.

The daemon's job store stays the record of truth: a batch thread claims the job and holds its lease
as with the local executor, this file has a Ray worker render it, the output file comes back and the
runner publishes it (temporary name, link, only while the lease is ours).

Ray lives in a child process of its own (the *bridge*, `bridge_main`), never in the daemon: a Ray
driver whose cluster goes away terminates its own process, and that must not be the process running
the live pipeline. The bridge reads the job's input files, puts them in Ray's object store (files
inside `jobs.ray.shared_dir` are read by the workers from the same path instead), runs the job on an
actor (`JobWorker`: one per running job, kept between jobs with its engines loaded, asking for a
GPU when the job runs on one, CPUs otherwise) and writes the returned bytes to the job's temporary
file. Actors are never restarted by Ray (`max_restarts=0`): a worker or node that dies mid-job is
reported as `WorkerLost`, and the runner queues the job again as a new attempt. Cancelling sends
`ray.cancel`; the worker sees it (`is_canceled()`) at the job's next progress step.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import multiprocessing
import os
import queue
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facecast.jobs.executors import ExecutorUnavailable, WorkerLost
from facecast.jobs.runner import JobCancelled, JobContext, JobFailed

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from facecast.jobs.runner import JobKind

log = logging.getLogger(__name__)

INSTALL = 'pip install "facecast[ray]"'
# The params of each kind that name input files, sent to the worker (a generate job's model folder
# is not sent: it must exist at the same path on the worker, like models.dir).
INPUT_FILES: dict[str, tuple[str, ...]] = {
    "animate": ("character", "driving"),
    "swap": ("face", "target"),
    "generate": ("character",),
}
GPU_DEVICES = ("tensorrt", "cuda", "torch")
CANCEL_WAIT_S = 15.0  # how long a cancelled job waits for its worker to stop before giving up on it
REQUEST_TIMEOUT_S = 15.0


def require_ray() -> None:
    """ExecutorUnavailable naming the install command when Ray is not installed."""
    try:
        found = importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ExecutorUnavailable(f"jobs.executor is ray but Ray is not installed: {INSTALL}")


def wants_gpu(kind: str, params: dict[str, Any], cfg) -> bool | None:
    """Does this job run on a GPU: True, False, or None = if the cluster has GPUs (device auto)."""
    if kind == "generate":
        device = cfg.jobs.generate_device
        return None if device == "auto" else device == "cuda"
    if kind in ("animate", "swap"):
        backend = params.get("backend") or getattr(cfg.effect, kind).backend
        if backend == "mesh":  # landmark warp on the CPU: no model, no GPU
            return False
    device = cfg.engine.device
    return None if device == "auto" else device in GPU_DEVICES


def _probe_address(address: str, timeout: float = 3.0) -> None:
    """A plain TCP connection to the head first: a wrong address fails in seconds, with the reason."""
    if address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ExecutorUnavailable(
            f"cannot reach the Ray cluster at {address} (jobs.ray.address): {exc.strerror or exc}; "
            f"is `ray start --head --port={port}` running there?"
        ) from None


class RayExecutor:
    name = "ray"

    def __init__(self, cfg) -> None:
        self.cfg = cfg  # the daemon's Config: the workers build their job kinds from it
        self.settings = cfg.jobs.ray
        self.slots = self.settings.max_parallel
        self.max_attempts: int | None = self.settings.max_attempts
        self._bridge: _Bridge | None = None
        self._connect_lock = threading.Lock()
        self._next_try = 0.0
        self._error: str | None = None
        self._started = False

    # -- connection --------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect (the daemon does it at start-up, the runner again: the second call keeps the first)."""
        require_ray()
        self._started = True
        if self._bridge is None or not self._bridge.alive:
            self._connect()

    def _connect(self) -> None:
        address = self.settings.address
        try:
            _probe_address(address)
            bridge_settings = {
                "address": address,
                "config": self.cfg.model_dump(mode="json"),
                "shared_dir": str(self.settings.shared_dir) if self.settings.shared_dir else None,
                "cpus_per_job": self.settings.cpus_per_job,
                "gpus_per_job": self.settings.gpus_per_job,
                "resources": dict(self.settings.resources),
            }
            self._bridge = _Bridge(bridge_settings, self.settings.connect_timeout_s)
            self._error = None
            log.info("jobs: connected to the Ray cluster at %s (%s)", address, self._bridge.info)
        except ExecutorUnavailable as exc:
            self._error = str(exc)
            raise

    def unavailable(self) -> str | None:
        bridge = self._bridge
        if bridge is not None and bridge.alive:
            return None
        if bridge is not None and self._error is None:
            self._error = f"lost the Ray cluster at {self.settings.address}: {bridge.ended}"
            log.warning("jobs: %s; jobs wait queued, trying again every %.0f s", self._error, self.settings.reconnect_s)
        if self._started and time.monotonic() >= self._next_try and self._connect_lock.acquire(blocking=False):
            try:  # in a batch thread: waiting here never holds up the live pipeline
                self._next_try = time.monotonic() + self.settings.reconnect_s
                self._connect()
                return None
            except ExecutorUnavailable:
                pass
            finally:
                self._connect_lock.release()
        return f"{self._error or 'not connected to the Ray cluster'}; queued jobs wait"

    # -- jobs ----------------------------------------------------------------------------------------
    def _spec(self, ctx: JobContext) -> dict[str, Any]:
        job = ctx.job
        if job.kind not in INPUT_FILES:
            raise JobFailed(f"job kind {job.kind!r} cannot run on Ray: its input files are not declared (INPUT_FILES)")
        shared = self.settings.shared_dir.expanduser().resolve() if self.settings.shared_dir else None
        send = {}
        for key in INPUT_FILES[job.kind]:
            path = Path(job.params[key])
            if shared is None or not path.resolve().is_relative_to(shared):
                send[key] = str(path)
        return {
            "job": job.as_dict(),
            "send": send,
            "temp_output": str(ctx.temp_output),
            "gpu": wants_gpu(job.kind, job.params, self.cfg),
        }

    def run(self, kind: JobKind, ctx: JobContext) -> None:
        bridge = self._bridge
        if bridge is None or not bridge.alive:
            raise WorkerLost("the Ray cluster is unreachable", cluster_gone=True)
        job_id = ctx.job.id
        replies = bridge.submit(job_id, self._spec(ctx))
        cancel_deadline: float | None = None
        try:
            while True:
                if ctx.cancelled.is_set() and cancel_deadline is None:
                    bridge.send(("cancel", job_id))  # ray.cancel; the worker stops at its next step
                    cancel_deadline = time.monotonic() + CANCEL_WAIT_S
                try:
                    message = replies.get(timeout=0.2)
                except queue.Empty:
                    if cancel_deadline is not None and time.monotonic() > cancel_deadline:
                        raise JobCancelled() from None  # its result, if any, is never published
                    continue
                what = message[0]
                if what == "progress":
                    ctx._progress = max(0.0, min(1.0, float(message[1])))
                    ctx.detail = str(message[2])
                elif what == "done":
                    ctx.report = message[1]
                    return
                elif what == "failed":
                    raise JobFailed(message[1])
                elif what == "cancelled":
                    raise JobCancelled()
                elif what == "lost":
                    raise WorkerLost(message[1], cluster_gone=message[2])
        finally:
            bridge.forget(job_id)

    # -- what the daemon shows -------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        bridge = self._bridge
        connected = bridge is not None and bridge.alive
        state = "connected" if connected else ("not started" if not self._started else "unreachable")
        return {"name": self.name, "address": self.settings.address, "state": state, "error": self._error}

    def workers(self) -> dict[str, Any]:
        bridge = self._bridge
        if bridge is None or not bridge.alive:
            raise ExecutorUnavailable(self._error or f"not connected to the Ray cluster at {self.settings.address}")
        return {"executor": self.name, "address": self.settings.address, "nodes": bridge.request("workers")}

    def close(self) -> None:
        if self._bridge is not None:
            self._bridge.close()
        self._started = False


class _Bridge:
    """The daemon's end of the bridge process: sends requests, routes its replies to the waiting job."""

    def __init__(self, settings: dict[str, Any], timeout: float) -> None:
        spawn = multiprocessing.get_context("spawn")  # no fork of a threaded daemon
        self.conn, child = spawn.Pipe()
        self.proc = spawn.Process(target=bridge_main, args=(child, settings), name="facecast-ray", daemon=True)
        self.proc.start()
        child.close()
        address = settings["address"]
        try:
            if not self.conn.poll(timeout):
                raise ExecutorUnavailable(
                    f"cannot reach the Ray cluster at {address} (jobs.ray.address): "
                    f"no answer within {timeout:.0f} s (jobs.ray.connect_timeout_s)"
                )
            first = self.conn.recv()
        except (EOFError, OSError):
            first = ("error", f"the Ray process ended (exit code {self.proc.exitcode})")
        except ExecutorUnavailable:
            self._end()
            raise
        if first[0] != "ready":
            self._end()
            raise ExecutorUnavailable(f"cannot use the Ray cluster at {address} (jobs.ray.address): {first[1]}")
        self.info: dict[str, Any] = first[1]
        self.ended: str | None = None
        self._send_lock = threading.Lock()
        self._jobs: dict[str, queue.SimpleQueue[tuple]] = {}
        self._requests: dict[int, queue.SimpleQueue[tuple]] = {}
        self._ids = itertools.count()
        self._reader = threading.Thread(target=self._read, name="jobs-ray-bridge", daemon=True)
        self._reader.start()

    @property
    def alive(self) -> bool:
        return self.ended is None

    def send(self, message: tuple) -> None:
        try:
            with self._send_lock:
                self.conn.send(message)
        except (OSError, ValueError) as exc:
            self._lost(f"the Ray process is gone ({exc})")

    def submit(self, job_id: str, spec: dict[str, Any]) -> queue.SimpleQueue[tuple]:
        replies: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._jobs[job_id] = replies
        self.send(("run", job_id, spec))
        if not self.alive:
            replies.put(("lost", self.ended, True))
        return replies

    def forget(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def request(self, what: str) -> Any:
        request_id = next(self._ids)
        replies: queue.SimpleQueue[tuple] = queue.SimpleQueue()
        self._requests[request_id] = replies
        try:
            self.send((what, request_id))
            try:
                reply = replies.get(timeout=REQUEST_TIMEOUT_S)
            except queue.Empty:
                raise ExecutorUnavailable(f"the Ray cluster did not answer within {REQUEST_TIMEOUT_S:.0f} s") from None
        finally:
            self._requests.pop(request_id, None)
        if reply[0] == "error":
            raise ExecutorUnavailable(reply[1])
        return reply[1]

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self._lost(f"the Ray process ended (exit code {self.proc.exitcode}; the cluster went away?)")
                return
            what, key = message[0], message[1]
            if what == "reply":
                waiting = self._requests.get(key)
                if waiting is not None:
                    waiting.put(message[2])
            else:
                replies = self._jobs.get(key)
                if replies is not None:
                    replies.put((what, *message[2:]))

    def _lost(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        for replies in list(self._jobs.values()):
            replies.put(("lost", reason, True))
        for waiting in list(self._requests.values()):
            waiting.put(("error", reason))

    def close(self) -> None:
        self.send(("stop", 0))
        self.proc.join(3)
        self._end()

    def _end(self) -> None:
        if self.proc.is_alive():
            self.proc.terminate()  # its actors die with it: Ray kills the actors of a driver that left
            self.proc.join(3)
        if self.proc.is_alive():
            self.proc.kill()
        self.conn.close()


# -- the bridge process ------------------------------------------------------------------------------


def bridge_main(conn: Connection, settings: dict[str, Any]) -> None:
    """The Ray driver: runs in its own process, answers the daemon over `conn` until told to stop."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s facecast-ray %(levelname)s %(message)s")
    # A driver that loses its cluster ends its own process: sooner than Ray's default minute, so
    # the daemon learns it soon and its jobs wait queued.
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", "20")
    try:
        import ray

        # Workers' own output stays in each node's Ray log folder; a job's error comes back with the job.
        ray.init(address=settings["address"], logging_level=logging.WARNING, namespace="facecast", log_to_driver=False)
        nodes = [n for n in ray.nodes() if n["Alive"]]
        info = {"nodes": len(nodes), "resources": ray.cluster_resources()}
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", info))
    driver = _Driver(conn, settings)
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the daemon is gone: so are we (and, with us, our actors)
                break
            what = message[0]
            if what == "stop":
                break
            if what == "run":
                threading.Thread(target=driver.run, args=message[1:], name=f"job-{message[1]}", daemon=True).start()
            elif what == "cancel":
                driver.cancel(message[1])
            elif what == "workers":
                threading.Thread(target=driver.workers, args=(message[1],), daemon=True).start()
    finally:
        os._exit(0)  # ray.shutdown() can wait on a cluster that is gone; the actors end with this driver


class _Driver:
    """Inside the bridge process: the actor pool and one thread per running job."""

    def __init__(self, conn: Connection, settings: dict[str, Any]) -> None:
        import ray

        self.conn = conn
        self.settings = settings
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._idle: dict[tuple, list[Any]] = {}  # resource request -> actors with nothing to do
        self._refs: dict[str, Any] = {}  # job id -> the running task
        self._nodes: dict[str, str] = {}  # job id -> node id
        self._cancelled: set[str] = set()  # cancel asked before the task existed
        self._worker_class = ray.remote(JobWorker)

    def send(self, message: tuple) -> None:
        with self._send_lock:
            self.conn.send(message)

    def _request(self, gpu: bool | None) -> tuple:
        import ray

        if gpu is None:
            gpu = ray.cluster_resources().get("GPU", 0) > 0
        s = self.settings
        extra = tuple(sorted(s["resources"].items()))
        return (0.0, float(s["gpus_per_job"]), extra) if gpu else (float(s["cpus_per_job"]), 0.0, extra)

    def _take(self, request: tuple) -> Any:
        with self._lock:
            idle = self._idle.get(request)
            if idle:
                return idle.pop()
        cpus, gpus, extra = request
        return self._worker_class.options(
            num_cpus=cpus, num_gpus=gpus, resources=dict(extra), max_restarts=0, max_concurrency=2
        ).remote(self.settings["config"], self.settings["shared_dir"])

    def _give_back(self, request: tuple, actor: Any) -> None:
        with self._lock:
            self._idle.setdefault(request, []).append(actor)

    def run(self, job_id: str, spec: dict[str, Any]) -> None:
        import ray
        from ray.exceptions import RayError, RayTaskError, TaskCancelledError

        request = self._request(spec["gpu"])
        actor = self._take(request)
        reusable = True
        try:
            inputs = {key: (Path(path).name, ray.put(Path(path).read_bytes())) for key, path in spec["send"].items()}
            ref = actor.run.remote(spec["job"], inputs, Path(spec["temp_output"]).suffix)
            self._refs[job_id] = ref
            if job_id in self._cancelled:
                ray.cancel(ref, recursive=False)
            polled, started = None, False
            while not ray.wait([ref], timeout=1.0)[0]:
                if polled is not None and ray.wait([polled], timeout=0)[0]:
                    try:
                        fraction, detail, node = ray.get(polled)
                        self._nodes[job_id] = node
                        started = True
                        self.send(("progress", job_id, fraction, detail))
                    except RayError:
                        pass  # the task's own result says what happened
                    polled = None
                if polled is None:
                    polled = actor.progress.remote(job_id)
            result = ray.get(ref)
        except TaskCancelledError:
            self.send(("cancelled", job_id))
            return
        except RayTaskError as exc:  # the actor method itself raised (it returns the job's errors)
            self.send(("failed", job_id, f"the Ray worker failed: {exc}"))
            return
        except RayError as exc:  # the worker process or its node died: the job runs again
            reusable = False
            ray.kill(actor, no_restart=True)
            # A worker that never answered was never started (placed on a node that had just died):
            # not the job's fault, so it does not count towards jobs.ray.max_attempts.
            what = "its Ray worker died" if started else "no Ray worker could be started for it"
            self.send(("lost", job_id, f"{what} ({type(exc).__name__})", not started))
            return
        except OSError as exc:
            self.send(("failed", job_id, f"cannot read an input: {exc}"))
            return
        finally:
            self._refs.pop(job_id, None)
            self._nodes.pop(job_id, None)
            self._cancelled.discard(job_id)
            if reusable:
                self._give_back(request, actor)
        if result[0] == "done":
            try:
                with open(spec["temp_output"], "xb") as out:  # this attempt's own name: never existing
                    out.write(result[1])
            except OSError as exc:
                self.send(("failed", job_id, f"cannot write the result {spec['temp_output']}: {exc}"))
                return
            self.send(("done", job_id, result[2]))
        else:
            self.send((result[0], job_id, *result[1:]))

    def cancel(self, job_id: str) -> None:
        import ray

        self._cancelled.add(job_id)
        ref = self._refs.get(job_id)
        if ref is not None:
            ray.cancel(ref, recursive=False)

    def workers(self, request_id: int) -> None:
        import ray

        try:
            jobs_by_node: dict[str, list[str]] = {}
            for job_id, node in list(self._nodes.items()):
                jobs_by_node.setdefault(node, []).append(job_id)
            nodes = []
            for n in ray.nodes():
                if not n["Alive"]:
                    continue
                resources = {
                    k: (round(v / 2**30, 1) if k in ("memory", "object_store_memory") else v)
                    for k, v in n["Resources"].items()
                    if not k.startswith("node:")
                }
                nodes.append(
                    {
                        "node": n["NodeID"],
                        "address": n["NodeManagerAddress"],
                        "head": "node:__internal_head__" in n["Resources"],
                        "resources": resources,
                        "jobs": sorted(jobs_by_node.get(n["NodeID"], [])),
                    }
                )
            self.send(("reply", request_id, ("ok", nodes)))
        except Exception as exc:
            self.send(("reply", request_id, ("error", f"{type(exc).__name__}: {exc}")))


# -- on the Ray worker -------------------------------------------------------------------------------


class JobWorker:
    """A Ray actor (made remote by the bridge): the daemon's job kinds on the daemon's config, with
    its own engine pool kept loaded between jobs. Inputs arrive as bytes, the output leaves as bytes."""

    def __init__(self, config: dict[str, Any], shared_dir: str | None) -> None:
        from facecast.config import Config
        from facecast.jobs.service import default_kinds

        self.workdir = Path(tempfile.mkdtemp(prefix="facecast-ray-"))
        cfg = Config.model_validate(config)
        allowed = [self.workdir, *([Path(shared_dir)] if shared_dir else [])]
        cfg.jobs = cfg.jobs.model_copy(update={"input_dirs": allowed})  # only what was sent, or shared
        self.cfg = cfg
        self._engines: Any = None
        self.kinds = default_kinds(cfg, self.engines)
        self._running: dict[str, JobContext] = {}

    def engines(self) -> Any:
        if self._engines is None:
            from facecast.engines.pool import EnginePool

            self._engines = EnginePool(self.cfg.models.resolved_dir(), self.cfg.engine)
        return self._engines

    def progress(self, job_id: str) -> tuple[float, str, str]:
        import ray

        ctx = self._running.get(job_id)
        node = ray.get_runtime_context().get_node_id()
        return (ctx._progress, ctx.detail, node) if ctx is not None else (0.0, "", node)

    def run(self, job: dict[str, Any], inputs: dict[str, tuple[str, Any]], suffix: str) -> tuple:
        import ray

        from facecast.jobs.store import Job

        folder = Path(tempfile.mkdtemp(dir=self.workdir))
        try:
            params = dict(job["params"])
            for key, (name, ref) in inputs.items():
                path = folder / f"{key}-{name}"
                path.write_bytes(ray.get(ref))
                params[key] = str(path)
            output = folder / f"output{suffix}"
            here = Job(**{**job, "params": params, "output": str(output)})
            ctx = JobContext(here, output, should_stop=_cancel_check())
            self._running[here.id] = ctx
            try:
                self.kinds[here.kind].run(ctx)
            except JobCancelled:
                return ("cancelled",)
            except JobFailed as exc:
                return ("failed", str(exc))
            except Exception as exc:  # a broken input fails the job, never the actor
                log.exception("job %s failed", here.id)
                return ("failed", f"{type(exc).__name__}: {exc}")
            finally:
                self._running.pop(here.id, None)
            if not output.is_file():
                return ("failed", "the job produced no output")
            return ("done", output.read_bytes(), ctx.report)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _cancel_check():
    """ray.cancel() on a running actor task sets a flag the task reads with is_canceled()."""
    import ray

    context = ray.get_runtime_context()

    def cancelled() -> bool:
        try:
            return bool(context.is_canceled())
        except RuntimeError:
            return False

    return cancelled
