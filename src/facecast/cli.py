"""The `facecast` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

log = logging.getLogger("facecast")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="config file (default: ./config.yaml if present)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set capture.fps=30 (repeatable)",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every subcommand; only `command`'s with its arguments when one is named (the others are listed
    with their help line). Their argument code lives with the code that runs them and imports it
    (OpenCV, the job kinds, the model registry): half a second that `facecast ctl` should not pay."""
    from facecast import __version__

    def full(name: str) -> bool:
        return command is None or command == name

    parser = argparse.ArgumentParser(
        prog="facecast", description="Real-time face animation and face swap for livestreams."
    )
    parser.add_argument("--version", action="version", version=f"facecast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the live pipeline (Ctrl+C to stop)")
    _add_config_args(run)
    limit = run.add_mutually_exclusive_group()
    limit.add_argument("--frames", type=int, help="stop after this many output frames")
    limit.add_argument("--seconds", type=float, help="stop after this many seconds")

    cfg = sub.add_parser("config", help="check the config and print it with every default filled in")
    _add_config_args(cfg)

    doctor = sub.add_parser("doctor", help="what this machine offers: GPU, providers, cameras, display, outputs")
    _add_config_args(doctor)

    jobs = sub.add_parser(
        "jobs", help="offline video jobs: submit animate|swap|generate, list, show, cancel, retry, run"
    )
    if full("jobs"):
        from facecast.jobs.command import add_arguments as add_jobs_arguments

        _add_config_args(jobs)
        add_jobs_arguments(jobs)

    models = sub.add_parser("models", help="model weights for the neural effects: list | download NAME | verify")
    if full("models"):
        from facecast.models.command import add_arguments as add_models_arguments

        _add_config_args(models)
        add_models_arguments(models)

    ctl = sub.add_parser(
        "ctl",
        help="control the running daemon: facecast ctl state | character 2 | record | ...",
        description="Control the running daemon through its local API (found through control.host/port in the config). "
        "Commands: state, stats, actions, characters, upload PATH [--select], watch, or any action with its "
        "arguments, e.g. `character 2`, `effect animate`, `output record off` (see `facecast ctl actions`).",
    )
    _add_config_args(ctl)
    ctl.add_argument("--url", help="the daemon's API address (default: from control.host/control.port)")
    ctl.add_argument("--token", help="the API token (default: control.token)")
    ctl.add_argument("--json", action="store_true", help="print the daemon's JSON answer")
    ctl.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds to wait for the daemon's answer (default 5; for quit, record and output, which wait for "
        "recordings to be finalised: pipeline.shutdown_timeout_s + 5)",
    )
    ctl.add_argument("action", metavar="COMMAND", help="state, stats, actions, characters, upload, watch or an action")
    ctl.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the action's arguments")

    bench = sub.add_parser("bench", help="measure fps, latency and resources of the real pipeline on this machine")
    if full("bench"):
        from facecast.bench.args import add_arguments as add_bench_arguments

        _add_config_args(bench)
        add_bench_arguments(bench)

    render = sub.add_parser("render", help="apply animate or swap to a video file (keeps fps, frame count, audio)")
    if full("render"):
        from facecast.render import add_render_arguments

        add_render_arguments(render, _add_config_args)  # `render animate|swap`

    character = sub.add_parser("character", help="character images: check PATH... says whether each is usable")
    if full("character"):
        from facecast.render import add_character_arguments

        add_character_arguments(character, _add_config_args)  # `character check`

    analyze = sub.add_parser("analyze", help="a video's camera movement per segment (pan, tilt, zoom, shake)")
    if full("analyze"):
        from facecast.analyze.camera import add_arguments as add_analyze_arguments

        add_analyze_arguments(analyze)  # `analyze VIDEO`
    return parser


def _load(args: argparse.Namespace):
    from facecast.config import default_config_path, load_config

    path = args.config if args.config is not None else default_config_path()
    return load_config(path, args.overrides)


def _setup_logging(level: str) -> None:
    from facecast import native_logs

    native_logs.install(level)  # MediaPipe/TFLite/libpng start-up lines off the terminal unless debug
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def _exit_past_the_shutdown_limit(rc: int) -> None:
    """An output still busy after pipeline.shutdown_timeout_s (already named in the log) would keep
    the process alive: its thread is not a daemon thread, so that a recording is never cut mid-flush.
    The limit is the streamer's: exit now."""
    from facecast.daemon import unfinished_writers

    busy = unfinished_writers()
    if not busy:
        return
    log.error("exiting without waiting for %s (past pipeline.shutdown_timeout_s)", ", ".join(busy))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc or 1)


def _ctl(args: argparse.Namespace) -> int:
    """`facecast ctl`: it talks to a daemon that checked its whole config when it started, so it reads
    only the `control:` section (a sixth of the start-up: the whole config imports every stage),
    and the whole config only for the commands that wait as long as pipeline.shutdown_timeout_s, or
    to name the key and the allowed values when the section is wrong."""
    from pydantic import ValidationError

    from facecast.config_file import ConfigError, default_config_path, read_config_file
    from facecast.control.client import run_ctl
    from facecast.control.config import ControlConfig

    timeout = args.timeout
    try:
        if timeout is None and args.action in ("quit", "record", "output"):
            cfg = _load(args)  # stopping a recording waits for its remux: give it the daemon's own limit
            control, timeout = cfg.control, cfg.pipeline.shutdown_timeout_s + 5.0
        else:
            path = args.config if args.config is not None else default_config_path()
            section = read_config_file(path, args.overrides)[0].get("control")
            try:
                control = ControlConfig.model_validate(section if section is not None else {})
            except ValidationError:
                _load(args)  # raises ConfigError with the message every command gives
                raise
            timeout = 5.0 if timeout is None else timeout
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    return run_ctl(control, args.action, args.args, url=args.url, token=args.token, as_json=args.json, timeout=timeout)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and not argv[0].startswith("-") else None
    args = build_parser(command).parse_args(argv)
    if args.command == "ctl":
        return _ctl(args)
    if args.command == "analyze":
        from facecast.analyze.camera import run_analyze

        return run_analyze(args)
    if args.command == "doctor":
        from facecast.doctor import run_doctor

        return run_doctor(args.config, args.overrides)
    if args.command == "bench":
        from facecast.bench.command import run_command
        from facecast.config import default_config_path

        return run_command(args, args.config if args.config is not None else default_config_path(), _setup_logging)

    from facecast.config import ConfigError
    from facecast.pipeline.stage import StartupError

    try:
        cfg = _load(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    _setup_logging(cfg.logging.level)

    if args.command == "config":
        import yaml

        print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    if args.command == "jobs":
        from facecast.jobs.command import run_jobs

        return run_jobs(args, cfg)
    if args.command == "models":
        from facecast.models.command import run_models

        return run_models(args, cfg.models.resolved_dir())
    if args.command == "render":
        from facecast.render import run_render

        return run_render(args, cfg)
    if args.command == "character":
        from facecast.render import run_character_check

        return run_character_check(args.paths, cfg)
    if args.command == "run":
        from facecast.daemon import run_daemon

        for name, value in (("--frames", args.frames), ("--seconds", args.seconds)):
            if value is not None and value <= 0:
                print(f"{name} must be positive, got {value}", file=sys.stderr)
                return 2
        try:
            rc = run_daemon(cfg, frames=args.frames, seconds=args.seconds)
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            return 3
        _exit_past_the_shutdown_limit(rc)
        return rc
    return 2
