"""`facecast jobs submit KIND ... | list | show ID | cancel ID | retry ID | run`."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from facecast.jobs.runner import JobRejected


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--offline", action="store_true", help="use the job queue file directly, not the daemon")
    sub = parser.add_subparsers(dest="jobs_command", required=True)
    submit = sub.add_parser("submit", help="queue a job; prints its id")
    kinds = submit.add_subparsers(dest="kind", required=True)
    animate = kinds.add_parser("animate", help="a character driven by the face in a video (keeps its audio)")
    animate.add_argument("--character", required=True, metavar="IMG")
    animate.add_argument("--driving", required=True, metavar="VIDEO")
    animate.add_argument("--backend", choices=["mesh", "liveportrait"])
    swap = kinds.add_parser("swap", help="a face put on every face of a video (keeps its audio)")
    swap.add_argument("--face", required=True, metavar="IMG")
    swap.add_argument("--target", required=True, metavar="VIDEO")
    swap.add_argument("--backend", choices=["mesh", "inswapper"])
    generate = kinds.add_parser("generate", help="text- or image-to-video with a diffusion model, in shots")
    from facecast.jobs.kinds.generate_cli import add_cli_arguments as add_generate_arguments

    add_generate_arguments(generate)
    replace = kinds.add_parser("replace", help="a character in the performer's place in a video (Wan-Animate/VACE)")
    replace.add_argument("--character", required=True, metavar="IMG")
    replace.add_argument("--driving", required=True, metavar="VIDEO")
    replace.add_argument("--mode", choices=["animate", "replace"], default="animate")
    replace.add_argument("--model", metavar="DIR", help="Wan-Animate or Wan VACE pipeline folder")
    replace.add_argument("--prompt")
    for name in ("steps", "width", "height", "segment-frames", "seed"):
        replace.add_argument(f"--{name}", type=int)
    replace.add_argument("--guidance", type=float)
    replace.add_argument("--camera-from", metavar="VIDEO", help="add this video's camera movement to the prompt")
    replace.add_argument(
        "--preview-controls", metavar="DIR", help="only write the control videos (pose, face, mask) to DIR"
    )
    for p in (animate, swap, generate):
        p.add_argument("-o", "--output", required=True, metavar="OUT", help="output video, inside jobs.output_dirs")
    replace.add_argument("-o", "--output", metavar="OUT", help="output video, inside jobs.output_dirs")
    for p in (animate, swap, generate, replace):  # post steps (facecast.postprocess), for every kind
        p.add_argument("--interpolate-fps", type=float, metavar="FPS", help="interpolate the output to FPS")
        p.add_argument("--interpolate-method", choices=["flow", "onnx"])
        p.add_argument("--quality-report", action="store_true", help="flicker and identity, in `jobs show`")
    listing = sub.add_parser("list", help="recent jobs")
    listing.add_argument("--status", choices=["queued", "running", "done", "failed", "cancelled"])
    for name, text in (
        ("show", "one job: status, progress, output"),
        ("cancel", "cancel a job"),
        ("retry", "queue a failed or cancelled job again"),
    ):
        sub.add_parser(name, help=text).add_argument("id")
    sub.add_parser("run", help="process the queue here, without the live pipeline, until it is empty")
    sub.add_parser("workers", help="the machines that run jobs (Ray nodes), their resources and their jobs")
    loras = sub.add_parser("loras", help="the LoRAs in jobs.lora_dirs, with their trigger words and tags")
    loras.add_argument("--prompt", metavar="TEXT", help="only those whose trigger words or tags occur in TEXT")
    loras.add_argument("--json", action="store_true", help="one JSON object per LoRA")


def _params(args: argparse.Namespace) -> dict[str, Any]:
    absolute = lambda v: str(Path(v).expanduser().resolve())  # noqa: E731 - the daemon has another cwd
    if args.kind == "animate":
        p: dict[str, Any] = {"character": absolute(args.character), "driving": absolute(args.driving)}
    elif args.kind == "swap":
        p = {"face": absolute(args.face), "target": absolute(args.target)}
    elif args.kind == "replace":
        from facecast.jobs.kinds.replace import cli_params

        p = cli_params(args, absolute)
    else:
        from facecast.jobs.kinds.generate_cli import cli_params as generate_params

        p = generate_params(args, absolute)
    if getattr(args, "backend", None):
        p["backend"] = args.backend
    for key in ("interpolate_fps", "interpolate_method"):
        if getattr(args, key, None) is not None:
            p[key] = getattr(args, key)
    if getattr(args, "quality_report", False):
        p["quality_report"] = True
    return p


def format_job(job: dict[str, Any]) -> str:
    line = f"{job['id']}  {job['status']:<9}  {job['kind']:<8}  {job['progress'] * 100:5.1f}%  {job['output']}"
    if job.get("detail") and job["status"] == "running":
        line += f"\n    now: {job['detail']}"
    if job.get("error"):
        line += f"\n    error: {job['error']}"
    report = (job.get("params") or {}).get("report")
    if report:
        line += "\n    report: " + ", ".join(f"{k} {v}" for k, v in report.items())
    return line


def format_workers(found: dict[str, Any]) -> str:
    where = f" at {found['address']}" if found.get("address") else ""
    lines = [f"executor {found['executor']}{where}: {len(found['nodes'])} node(s)"]
    for node in found["nodes"]:
        res = node.get("resources", {})
        shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in sorted(res.items()))
        head = " (head)" if node.get("head") else ""
        lines.append(f"{node['node'][:12]}  {node.get('address', '')}{head}  {shown or '-'}")
        lines.append(f"    jobs: {', '.join(node.get('jobs', [])) or '-'}")
    return "\n".join(lines)


def _workers_here(cfg) -> int:
    """No daemon: ask the configured executor directly (no job is known to run then)."""
    from facecast.jobs.executors import ExecutorUnavailable, make_executor

    executor = make_executor(cfg)
    try:
        executor.start()
        print(format_workers(executor.workers()))
        return 0
    except ExecutorUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        executor.close()


def run_jobs(args: argparse.Namespace, cfg) -> int:
    if args.jobs_command == "run":
        return _run_here(cfg)
    if args.jobs_command == "workers" and args.offline:
        return _workers_here(cfg)
    if args.jobs_command == "loras":
        from facecast.jobs.loras import print_loras
        from facecast.jobs.service import lora_dirs

        return print_loras(lora_dirs(cfg), args.prompt, args.json)
    if args.jobs_command == "submit" and args.kind == "replace":
        from facecast.jobs.kinds.replace import preview_or_require_output

        done = preview_or_require_output(args, cfg)
        if done is not None:
            return done
    if not args.offline:
        from facecast.control.client import ControlClient, Refused, Unreachable, base_url

        client = ControlClient(base_url(cfg.control), cfg.control.token, timeout=10)
        try:
            return _through_daemon(client, args)
        except Unreachable:
            print("no daemon running: using the job queue directly", file=sys.stderr)
            if args.jobs_command == "workers":
                return _workers_here(cfg)
        except Refused as exc:
            print(exc.message, file=sys.stderr)
            return 2
        finally:
            client.close()
    return _offline(args, cfg)


def _through_daemon(client, args: argparse.Namespace) -> int:
    if args.jobs_command == "submit":
        output = str(Path(args.output).expanduser().resolve())
        job = client.request("POST", "/jobs", json={"kind": args.kind, "params": _params(args), "output": output})
        print(job["id"])
    elif args.jobs_command == "workers":
        print(format_workers(client.request("GET", "/job-workers")))
    elif args.jobs_command == "list":
        body = client.request("GET", "/jobs", params={"status": args.status} if args.status else None)
        for job in body["jobs"]:
            print(format_job(job))
    else:
        if args.jobs_command == "show":
            method, path = "GET", f"/jobs/{args.id}"
        else:
            method, path = "POST", f"/jobs/{args.id}/{args.jobs_command}"
        print(format_job(client.request(method, path)))
    return 0


def _offline(args: argparse.Namespace, cfg) -> int:
    from facecast.jobs.service import JobService, default_kinds
    from facecast.jobs.store import JobNotFound, JobStateError, JobStoreBusy

    service = JobService(cfg.jobs, default_kinds(cfg))
    try:
        if args.jobs_command == "submit":
            job = service.submit(args.kind, _params(args), args.output)
            print(job.id)
            print(f"queued in {service.store.path}; `facecast jobs run` or the daemon will process it", file=sys.stderr)
        elif args.jobs_command == "list":
            for job in service.store.list(args.status):
                print(format_job(job.as_dict()))
        else:
            store = service.store
            job = store.get(args.id) if args.jobs_command == "show" else getattr(store, args.jobs_command)(args.id)
            print(format_job(job.as_dict()))
        return 0
    except JobRejected as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except JobNotFound:
        print(f"no job {args.id}", file=sys.stderr)
        return 2
    except (JobStateError, JobStoreBusy) as exc:
        print(exc, file=sys.stderr)
        return 2
    finally:
        service.store.close()


def _run_here(cfg) -> int:
    """Process the queue in this process (no live pipeline), with a progress line per job."""
    from facecast.engines.pool import EnginePool
    from facecast.jobs.service import JobService, default_kinds

    pool: list[EnginePool] = []

    def engines() -> EnginePool:
        if not pool:
            pool.append(EnginePool(cfg.models.resolved_dir(), cfg.engine))
        return pool[0]

    service = JobService(cfg.jobs, default_kinds(cfg, engines))
    runner = service.runner
    previous = signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    try:
        for job_id in runner.recover():
            print(f"job {job_id} was interrupted earlier: queued again", file=sys.stderr)
        failed = 0
        while True:
            shown = threading_progress(runner)
            try:
                job = runner.run_one()
            finally:
                shown.set()
            if job is None or runner.stopping:
                break
            print("\r" + format_job(job.as_dict()) + " " * 10, file=sys.stderr)
            failed += job.status == "failed"
        return 1 if failed else 0
    except KeyboardInterrupt:
        runner.stop()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        service.store.close()


def threading_progress(runner):
    """A thread printing the running job's progress every half second; set the returned event to stop it."""
    import threading

    stop = threading.Event()

    def show() -> None:
        while not stop.wait(0.5):
            ctx = runner.current
            if ctx is not None:
                bar = "#" * int(30 * ctx._progress)
                print(
                    f"\r{ctx.job.id} {ctx.job.kind} [{bar:<30}] {ctx._progress * 100:5.1f}%",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )

    threading.Thread(target=show, daemon=True).start()
    return stop
