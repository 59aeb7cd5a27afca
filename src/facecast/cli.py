"""The `facecast` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

# MediaPipe/TFLite log through glog and absl: keep their start-up chatter off the streamer's console.
os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")

log = logging.getLogger("facecast")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="config file (default: ./config.yaml if present)")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config key, e.g. --set capture.fps=30 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    from facecast import __version__

    parser = argparse.ArgumentParser(prog="facecast", description="Real-time face animation and face swap for livestreams.")
    parser.add_argument("--version", action="version", version=f"facecast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the live pipeline (Ctrl+C to stop)")
    _add_config_args(run)
    limit = run.add_mutually_exclusive_group()
    limit.add_argument("--frames", type=int, help="stop after this many output frames")
    limit.add_argument("--seconds", type=float, help="stop after this many seconds")

    cfg = sub.add_parser("config", help="check the config and print it with every default filled in")
    _add_config_args(cfg)

    sub.add_parser("doctor", help="what this machine offers: GPU, providers, cameras, display, outputs")
    return parser


def _load(args: argparse.Namespace):
    from facecast.config import default_config_path, load_config

    path = args.config if args.config is not None else default_config_path()
    return load_config(path, args.overrides)


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "doctor":
        from facecast.doctor import run_doctor

        return run_doctor()

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
    if args.command == "run":
        from facecast.daemon import run_daemon

        for name, value in (("--frames", args.frames), ("--seconds", args.seconds)):
            if value is not None and value <= 0:
                print(f"{name} must be positive, got {value}", file=sys.stderr)
                return 2
        try:
            return run_daemon(cfg, frames=args.frames, seconds=args.seconds)
        except StartupError as exc:
            log.error("cannot start: %s", exc)
            return 3
    return 2
