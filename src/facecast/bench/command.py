"""`facecast bench`: arguments, one run or an A/B comparison, table and JSON output."""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from facecast.bench.report import format_compare, format_result
from facecast.bench.run import BenchError, BenchOptions, BenchRun, bench_config, run_once, write_trace
from facecast.bench.system import system_info

log = logging.getLogger(__name__)


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _ratio(b: float | None, a: float | None) -> float | None:
    return round(b / a, 4) if a and b is not None else None


def _side_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    first = runs[0]
    return {
        "description": f"{first['source']['description']}, {first['source']['width']}x{first['source']['height']}"
        f" in, {first['output_size'][0]}x{first['output_size'][1]} out, effect {first['effect']}",
        "fps": _median([r["fps"] for r in runs]),
        "fps_runs": [r["fps"] for r in runs],
        "latency_ms": {k: _median([r["latency_ms"][k] for r in runs]) for k in ("p50", "p95", "p99")},
        "providers_in_use": first["system"]["onnxruntime"]["providers_in_use"],
    }


def compare(
    paths: tuple[Path, Path], overrides: list[str], opts: BenchOptions, rounds: int, system: dict[str, Any]
) -> dict[str, Any]:
    """Run A and B alternately (A B, B A, A B...) so slow drift on a busy machine hits both alike."""
    configs = [bench_config(p, overrides, opts) for p in paths]  # both checked before anything runs
    runs: list[list[dict[str, Any]]] = [[], []]
    for r in range(rounds):
        order = (0, 1) if r % 2 == 0 else (1, 0)
        for i in order:
            label = "AB"[i]
            print(f"round {r + 1}/{rounds}: {label} ({paths[i]})...", file=sys.stderr, flush=True)
            result = run_once(configs[i], opts, system).result
            runs[i].append(result)
            print(
                f"  {label}: {result['fps']:.1f} fps, latency p50 {result['latency_ms']['p50']} ms",
                file=sys.stderr,
                flush=True,
            )
    sides = [_side_summary(rs) for rs in runs]
    a, b = sides
    notes = sorted({f"{'AB'[i]}: {n}" for i in (0, 1) for r in runs[i] for n in r["notes"]})
    return {
        "schema": runs[0][0]["schema"],
        "rounds": rounds,
        "a": {"config": str(paths[0]), "summary": a, "runs": runs[0]},
        "b": {"config": str(paths[1]), "summary": b, "runs": runs[1]},
        "ratios": {
            "fps": _ratio(b["fps"], a["fps"]),
            "latency_p50": _ratio(b["latency_ms"]["p50"], a["latency_ms"]["p50"]),
            "latency_p95": _ratio(b["latency_ms"]["p95"], a["latency_ms"]["p95"]),
            "latency_p99": _ratio(b["latency_ms"]["p99"], a["latency_ms"]["p99"]),
            # The same ratio within each round (A and B run back to back): its spread shows the noise.
            "fps_per_round": [_ratio(rb["fps"], ra["fps"]) for ra, rb in zip(runs[0], runs[1], strict=False)],
        },
        # Each run's providers in use are in its own result and in a/b summary.
        "system": {
            **system,
            "onnxruntime": {k: v for k, v in system["onnxruntime"].items() if k != "providers_in_use"},
        },
        "notes": notes,
    }


def with_batch(
    cfg,
    opts: BenchOptions,
    rounds: int,
    system: dict[str, Any],
    batch_kind: str | None = None,
    batch_model: Path | None = None,
    batch_params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Live alone (A) and live with a batch job running (B), alternately: B/A is what the job costs.
    The job: `batch_kind` (default: the live effect when it is animate or swap, else swap); a
    generate job runs on the pipeline folder `batch_model` with `batch_params`."""
    from facecast.bench.batch import BatchLoad

    kind = batch_kind or (cfg.effect.active if cfg.effect.active in ("animate", "swap") else "swap")
    runs: list[list[dict[str, Any]]] = [[], []]
    for r in range(rounds):
        for i in (0, 1) if r % 2 == 0 else (1, 0):
            label = ("live alone", f"live + {kind} job")[i]
            print(f"round {r + 1}/{rounds}: {label}...", file=sys.stderr, flush=True)
            batch = BatchLoad(kind, batch_model, batch_params) if i else None
            result = run_once(cfg, opts, system, batch=batch).result
            runs[i].append(result)
            extra = f", batch {result['batch']['frames_per_s']} frames/s" if i else ""
            print(
                f"  {result['fps']:.1f} fps, latency p50 {result['latency_ms']['p50']} ms{extra}",
                file=sys.stderr,
                flush=True,
            )
    alone, loaded = (_side_summary(rs) for rs in runs)
    ratio = _ratio(loaded["fps"], alone["fps"])
    return {
        "schema": runs[0][0]["schema"],
        "rounds": rounds,
        "mode": opts.mode,
        "without_batch": {"summary": alone, "runs": runs[0]},
        "with_batch": {"summary": loaded, "runs": runs[1], "batch": [r["batch"] for r in runs[1]]},
        "ratios": {
            "fps": ratio,
            "latency_p50": _ratio(loaded["latency_ms"]["p50"], alone["latency_ms"]["p50"]),
            "latency_p95": _ratio(loaded["latency_ms"]["p95"], alone["latency_ms"]["p95"]),
            "fps_per_round": [_ratio(rb["fps"], ra["fps"]) for ra, rb in zip(runs[0], runs[1], strict=False)],
        },
        "target_ratio": cfg.jobs.min_live_ratio,
        "meets_target": ratio is not None and ratio >= cfg.jobs.min_live_ratio,
        "system": system,
        "notes": sorted({n for side in runs for r in side for n in r["notes"]}),
    }


def format_with_batch(data: dict[str, Any]) -> str:
    a, b = data["without_batch"]["summary"], data["with_batch"]["summary"]
    jobs = data["with_batch"]["batch"]
    rate = [j["frames_per_s"] for j in jobs if j["frames_per_s"] is not None]
    lines = [
        f"live pipeline: {a['description']} ({data['mode']}, {data['rounds']} rounds each, alternating)",
        f"live fps      alone {a['fps']}   with a batch job {b['fps']}   ratio {data['ratios']['fps']}"
        f"  (per round {data['ratios']['fps_per_round']})",
        f"latency p50   alone {a['latency_ms']['p50']} ms   with {b['latency_ms']['p50']} ms"
        f"   p95 {a['latency_ms']['p95']} / {b['latency_ms']['p95']} ms",
        f"batch work    {statistics.median(rate) if rate else '-'} frames/s of {jobs[0]['kind']} jobs"
        f" ({sum(j['jobs_done'] for j in jobs)} jobs done, {sum(j['jobs_failed'] for j in jobs)} failed)",
        f"target        live fps with a job >= {data['target_ratio']:.0%} of alone: "
        + ("met" if data["meets_target"] else "NOT met"),
    ]
    if jobs[0]["kind"] == "generate":
        steps = [j["steps_per_s"] for j in jobs if j["steps_per_s"] is not None]
        lines.insert(
            -1,
            f"generate job  {jobs[0]['job']} on {jobs[0]['model']}: {statistics.median(steps) if steps else '-'}"
            f" steps/s, governor duty {[j['governor_duty'] for j in jobs]}",
        )
    lines += [f"note          {n}" for n in data["notes"]]
    return "\n".join(lines)


def _emit(table: str, data: dict[str, Any], json_out: Path | None) -> None:
    if json_out is not None and str(json_out) == "-":
        print(table, file=sys.stderr)
        print(json.dumps(data, indent=2))
        return
    print(table)
    if json_out is not None:
        json_out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        print(f"JSON written to {json_out}")


def run_command(args: argparse.Namespace, config_path: Path | None, setup_logging) -> int:
    """Exit codes: 0 measured, 1 nothing could be measured, 2 bad arguments or config, 3 a stage
    could not start (as `facecast run`)."""
    from facecast.config import ConfigError
    from facecast.jobs.runner import JobRejected
    from facecast.pipeline.stage import StartupError

    opts = BenchOptions(
        frames=args.frames,
        warmup=args.warmup,
        mode=args.mode,
        source=args.source,
        effect=args.effect,
        backend=args.backend,
        providers=args.providers,
        with_outputs=args.with_outputs,
        replicas=args.replicas,
    )
    if args.compare and args.config is not None:
        print("--compare takes the two config files to compare; leave out --config", file=sys.stderr)
        return 2
    if args.with_batch and args.compare:
        print("--with-batch measures one config: leave out --compare", file=sys.stderr)
        return 2
    if (args.batch_kind or args.batch_model or args.batch_param) and not args.with_batch:
        print("--batch-kind, --batch-model and --batch-param go with --with-batch", file=sys.stderr)
        return 2
    if (args.batch_kind == "generate") != (args.batch_model is not None):
        print(
            "--batch-kind generate needs --batch-model DIR (a diffusers pipeline folder), and only it takes one",
            file=sys.stderr,
        )
        return 2
    if args.compare and args.trace is not None:
        print("--trace records one run: leave it out with --compare", file=sys.stderr)
        return 2
    if args.soak is not None and (args.compare or args.with_batch or args.trace is not None):
        print("--soak runs one config on its own: leave out --compare, --with-batch and --trace", file=sys.stderr)
        return 2
    if args.soak is not None:
        # A soak is a live show: the source at its own rate, the config's outputs (recording included).
        opts.mode, opts.with_outputs = "realtime", True
    try:
        if args.compare:
            cfg = bench_config(args.compare[0], args.overrides, opts)
        else:
            cfg = bench_config(config_path, args.overrides, opts)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(cfg.logging.level)
    system = system_info()
    try:
        if args.compare:
            data = compare(tuple(args.compare), args.overrides, opts, args.rounds, system)
            _emit(format_compare(data), data, args.json)
            return 0
        if args.with_batch:
            data = with_batch(cfg, opts, args.rounds, system, args.batch_kind, args.batch_model, dict(args.batch_param))
            _emit(format_with_batch(data), data, args.json)
            return 0
        if args.jobs is not None:
            from facecast.bench.batch import format_jobs_throughput, jobs_throughput
            from facecast.jobs.executors import ExecutorUnavailable

            kind = cfg.effect.active if cfg.effect.active in ("animate", "swap") else "animate"
            try:
                data = jobs_throughput(cfg, args.jobs, args.executor, kind)
            except ExecutorUnavailable as exc:
                log.error("cannot run the jobs: %s", exc)
                return 3
            _emit(format_jobs_throughput(data), data, args.json)
            return 0
        if args.soak is not None:
            from facecast.bench.soak import SoakOptions, format_soak, run_soak

            data = run_soak(cfg, SoakOptions(args.soak, args.soak_window_s, args.warmup), system)
            _emit(format_soak(data), data, args.json)
            return 0
        run: BenchRun = run_once(cfg, opts, system)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except StartupError as exc:
        log.error("cannot start: %s", exc)
        return 3
    except BenchError as exc:
        log.error("benchmark failed: %s", exc)
        return 1
    except JobRejected as exc:  # --batch-param the batch job's kind does not take
        print(f"the batch job was refused: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.trace is not None:
        write_trace(args.trace, run)
    _emit(format_result(run.result), run.result, args.json)
    if args.trace is not None:
        print(f"per-frame trace written to {args.trace}", file=sys.stderr if str(args.json) == "-" else sys.stdout)
    return 0
