"""The `facecast bench` options. Kept free of heavy imports: the CLI builds its parser from it."""

from __future__ import annotations

import argparse
from pathlib import Path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, got {text}")
    return value


def _executors(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ("local", "ray")]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"executors are local and ray (comma separated), got {text!r}")
    return names


def _batch_param(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value read as JSON when it is JSON (30, 0.5, true) and as text otherwise."""
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. steps=40), got {text!r}")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The bench options (the caller adds --config and --set)."""
    p.add_argument(
        "--source",
        metavar="SOURCE",
        help="synthetic, camera, camera:N, a stream URL or a video file"
        " (default: the config's source; synthetic when it is auto)",
    )
    p.add_argument("--effect", help="effect to measure (effect.active), e.g. debug")
    p.add_argument("--backend", help="the effect's backend (effect.<effect>.backend), for effects that have several")
    p.add_argument(
        "--providers",
        metavar="DEVICE",
        help="engine for the neural effects (engine.device): auto, tensorrt, cuda, cpu (onnxruntime) or torch;"
        " the table shows the providers the sessions really got",
    )
    p.add_argument("--frames", type=_positive, default=300, help="frames measured after the warm-up (default 300)")
    p.add_argument("--warmup", type=_not_negative, default=30, help="frames run before measuring (default 30)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--max",
        dest="mode",
        action="store_const",
        const="max",
        help="throughput: the source is not paced, queues block (default)",
    )
    mode.add_argument(
        "--realtime",
        dest="mode",
        action="store_const",
        const="realtime",
        help="latency under live load: the source is paced at its fps, the configured queue policy",
    )
    p.set_defaults(mode="max")
    p.add_argument(
        "--replicas",
        action="store_true",
        help="run the neural effects on full-size replicas (real architectures, random weights; built once"
        " and cached): the speed your machine would reach, before downloading the weights",
    )
    p.add_argument(
        "--with-outputs",
        action="store_true",
        help="send frames to the config's enabled outputs instead of the null output",
    )
    p.add_argument(
        "--json",
        metavar="OUT",
        type=Path,
        help="also write the results as JSON to OUT ('-': JSON on stdout, the table on stderr)",
    )
    p.add_argument(
        "--trace",
        metavar="CSV",
        type=Path,
        help="write one row per measured frame: latency, each stage's wait and time (ms)",
    )
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("CONFIG_A", "CONFIG_B"),
        type=Path,
        help="run two config files alternately in this process and report the ratios B/A",
    )
    p.add_argument(
        "--rounds", type=_positive, default=3, help="runs of each side with --compare or --with-batch (default 3)"
    )
    p.add_argument(
        "--with-batch",
        action="store_true",
        help="measure the live pipeline alone and while the batch thread runs offline jobs"
        " (the live effect on a generated clip), alternately; report the fps ratio",
    )
    p.add_argument(
        "--batch-kind",
        choices=["animate", "swap", "generate"],
        help="with --with-batch: the batch job (default: the live effect when it is animate or swap, else swap);"
        " generate needs --batch-model",
    )
    p.add_argument(
        "--batch-model",
        metavar="DIR",
        type=Path,
        help="with --batch-kind generate: a diffusers pipeline folder (tools/make_tiny_pipelines.py makes tiny ones)",
    )
    p.add_argument(
        "--batch-param",
        metavar="KEY=VALUE",
        type=_batch_param,
        action="append",
        default=[],
        help="with --with-batch: a param of the batch job, repeatable (generate: steps=40, frames=33, width=64...)",
    )
    p.add_argument(
        "--jobs",
        metavar="N",
        type=_positive,
        help="batch throughput: N identical render jobs (the effect on a generated clip) per executor, from"
        " submit to the last output; wall time and jobs/min (--executor)",
    )
    p.add_argument(
        "--executor",
        default="local",
        type=_executors,
        metavar="local,ray",
        help="with --jobs: the executors to run the jobs on, in turn (default local; ray uses jobs.ray)",
    )
    p.add_argument(
        "--soak",
        metavar="MINUTES",
        type=_positive_float,
        help="run the live pipeline with the config's outputs (realtime) for this long and report the RSS"
        " slope (MB/hour), fps and latency p95 per window (JSON: `soak`)",
    )
    p.add_argument(
        "--soak-window-s",
        metavar="SECONDS",
        type=_positive_float,
        default=300.0,
        help="length of each soak window (default 300 = 5 minutes)",
    )
