"""One benchmark run: the real daemon pipeline with a null output, warmed up, then N frames measured.

Figures come from a per-frame trace of the delivered frames (`PipelineStats.start_trace`), so they
cover exactly the measured frames, whatever the stats window, and each frame's latency can be set
against its own stage times.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facecast.bench.monitor import ResourceMonitor, ThreadCpu
from facecast.bench.system import providers_in_use
from facecast.config import Config, ConfigError, load_config
from facecast.outputs.null import NullOutputConfig
from facecast.pipeline.stats import FrameTiming
from facecast.pipeline.work_size import work_size_for_outputs
from facecast.threads import plan_threads, pools_now

log = logging.getLogger(__name__)

Mode = Literal["max", "realtime"]
SCHEMA_VERSION = 1
STALL_S = 60.0  # no frame delivered for this long: the benchmark gives up instead of hanging
PERCENTILES = (50, 95, 99)


class BenchError(RuntimeError):
    """The benchmark could not measure (source ended during the warm-up, pipeline stalled...)."""


@dataclass(slots=True)
class BenchOptions:
    frames: int = 300
    warmup: int = 30
    mode: Mode = "max"
    source: str | None = None  # synthetic | camera | camera:N | URL | video file; None = the config's
    effect: str | None = None
    backend: str | None = None
    providers: str | None = None  # engine.device: auto | tensorrt | cuda | cpu | torch
    with_outputs: bool = False  # keep the config's outputs instead of the null output
    replicas: bool = False  # run the neural effects on full-size replicas (random weights), built once


@dataclass(slots=True)
class BenchRun:
    result: dict[str, Any]
    frames: list[FrameTiming]  # the measured frames, in delivery order
    stage_names: tuple[str, ...]


# -- configuration ------------------------------------------------------------------------------
def _yaml_str(value: str) -> str:
    """A --set value that stays a string whatever it contains (JSON strings are YAML strings)."""
    return json.dumps(value)


def source_overrides(source: str) -> list[str]:
    """`--source` as config overrides: synthetic, camera, camera:N, a stream URL or a video file."""
    if source == "synthetic":
        return ["capture.source=synthetic"]
    if source == "camera" or source.startswith("camera:"):
        index = source.partition(":")[2] or "0"
        if not index.isdigit():
            raise ConfigError(f"--source {source}: expected camera or camera:N, e.g. camera:1")
        return ["capture.source=camera", f"capture.camera.index={index}"]
    if "://" in source:
        return ["capture.source=url", f"capture.url.url={_yaml_str(source)}"]
    if not Path(source).is_file():
        raise ConfigError(f"--source {source}: no such file (give a video file, synthetic, camera or a URL)")
    return ["capture.source=file", f"capture.file.path={_yaml_str(source)}"]


def bench_config(path: Path | None, overrides: list[str], opts: BenchOptions) -> Config:
    """The config a benchmark runs: the user's file and --set, the bench flags, the mode, a null output.

    Precedence, lowest first: config file, bench defaults (quiet logs, mode), bench flags
    (--source, --effect, --backend, --providers), then --set, so any key can still be forced.
    """
    flags: list[str] = []
    if opts.source is not None:
        flags += source_overrides(opts.source)
    if opts.effect is not None:
        flags.append(f"effect.active={_yaml_str(opts.effect)}")
    first = load_config(path, [*flags, *overrides])
    if first.capture.source == "auto":
        flags.append("capture.source=synthetic")  # reproducible: never depends on a camera being plugged in
    if opts.backend is not None:
        effect = first.effect.active
        section = getattr(first.effect, effect, None)
        if section is None or "backend" not in type(section).model_fields:
            raise ConfigError(
                f"--backend {opts.backend}: effect {effect!r} has no backends (no effect.{effect}.backend key)"
            )
        flags.append(f"effect.{effect}.backend={_yaml_str(opts.backend)}")
    if opts.providers is not None:
        engine = getattr(first, "engine", None)
        if engine is None or "device" not in type(engine).model_fields:
            raise ConfigError(
                f"--providers {opts.providers}: this facecast has no engine.device key (no neural effects)"
            )
        flags.append(f"engine.device={_yaml_str(opts.providers)}")
    paced = "true" if opts.mode == "realtime" else "false"
    mode = [f"capture.file.realtime={paced}", f"capture.synthetic.realtime={paced}"]
    if opts.mode == "max":
        mode.append("pipeline.queue_policy=block")  # throughput: every captured frame is processed
    quiet = ["stats.interval_s=0", "logging.level=warning"]
    if "jobs" in Config.model_fields:
        # The daemon's batch thread would pick up whatever is queued in the user's job queue and run
        # it during the measurement: a bench measures the live pipeline alone.
        quiet.append("jobs.enabled=false")
    if opts.replicas:
        from facecast.models.replicas import ensure_replicas

        # Before --set, so a models.dir given there still wins; replicas are cached, built on first use.
        flags.append(f"models.dir={_yaml_str(str(ensure_replicas(log=log.warning)))}")
    cfg = load_config(path, [*quiet, *mode, *flags, *overrides])
    if not opts.with_outputs:
        if cfg.pipeline.work_size == "auto":  # the size the config's own outputs would need
            enabled = [o for o in cfg.outputs.values() if o.enabled]
            cfg.pipeline.work_size = work_size_for_outputs(enabled)
        cfg.outputs = {"bench": NullOutputConfig(enabled=True)}
    return cfg


# -- figures ------------------------------------------------------------------------------------
def distribution(values_ms: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 (numpy's linear interpolation), mean and max, in ms rounded to the microsecond."""
    if not values_ms:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    a = np.asarray(values_ms, dtype=np.float64)
    out: dict[str, float | None] = {
        f"p{p}": round(float(v), 3) for p, v in zip(PERCENTILES, np.percentile(a, PERCENTILES), strict=True)
    }
    out["mean"] = round(float(a.mean()), 3)
    out["max"] = round(float(a.max()), 3)
    return out


def frame_figures(f: FrameTiming) -> dict[str, Any]:
    """One frame in ms: end-to-end latency, and each stage's busy time and the wait before it.

    Latency runs from the capture stamp (right after the frame was read) to the moment the last
    stage finished with it; the capture read itself comes before that stamp. The wait before a
    stage is the time from the previous stage finishing to this one starting (queue time), so for
    every frame: latency = sum of the later stages' (wait + busy) + the moment between the capture
    stamp and the capture stage handing the frame on.
    """
    names = list(f.stage_done_ns)
    done = f.stage_done_ns
    busy: dict[str, float] = {}
    wait: dict[str, float | None] = {}
    for i, name in enumerate(names):
        busy[name] = f.stage_busy_ns.get(name, 0) / 1e6
        wait[name] = None if i == 0 else (done[name] - f.stage_busy_ns.get(name, 0) - done[names[i - 1]]) / 1e6
    return {
        "seq": f.seq,
        "latency_ms": (done[names[-1]] - f.t_capture_ns) / 1e6,
        "busy_ms": busy,
        "wait_ms": wait,
        "faces": f.faces,
    }


def summarise(frames: list[FrameTiming], before: FrameTiming | None, stage_names: tuple[str, ...]) -> dict[str, Any]:
    """fps, latency, per-stage figures, losses and tracking over exactly `frames`.

    `before` is the last warm-up frame: the measured time runs from its delivery to the last
    frame's, so N frames make N intervals. Without a warm-up, N frames make N - 1 intervals.
    """
    per_frame = [frame_figures(f) for f in frames]
    delivered = [next(reversed(f.stage_done_ns.values())) for f in frames]
    if before is not None:
        start, intervals = next(reversed(before.stage_done_ns.values())), len(frames)
    else:
        start, intervals = delivered[0], len(frames) - 1
    duration_s = (delivered[-1] - start) / 1e9
    stages: dict[str, Any] = {}
    for name in stage_names:
        busy = [p["busy_ms"][name] for p in per_frame if name in p["busy_ms"]]
        waits = [p["wait_ms"][name] for p in per_frame if p["wait_ms"].get(name) is not None]
        stages[name] = {**distribution(busy), "wait": distribution(waits) if waits else None}
    tracked = [p["faces"] for p in per_frame if p["faces"] is not None]
    seqs = [f.seq for f in frames]
    capture_span_s = (frames[-1].t_capture_ns - frames[0].t_capture_ns) / 1e9
    return {
        "frames": len(frames),
        "duration_s": round(duration_s, 3),
        "fps": round(intervals / duration_s, 2) if duration_s > 0 else 0.0,
        "latency_ms": distribution([p["latency_ms"] for p in per_frame]),
        "stages": stages,
        # Frames captured between the first and the last measured frame that never came out:
        # dropped by a full queue or failed in a stage.
        "frames_lost": max(seqs) - min(seqs) + 1 - len(frames),
        # How fast the source really produced frames (every captured frame has a seq, dropped or not).
        "capture_fps": round((seqs[-1] - seqs[0]) / capture_span_s, 2) if capture_span_s > 0 else None,
        "tracked_ratio": round(sum(1 for n in tracked if n > 0) / len(tracked), 4) if tracked else None,
        "size": list(frames[-1].size),
    }


def engine_figures(engines: dict[str, Any], frames: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Per model: calls per delivered frame, call time p50/p95 (ms), providers; and the host<->device
    bytes per frame of all models together (None when no model ran)."""
    per_model: dict[str, Any] = {}
    h2d = d2h = 0
    for key, engine in sorted(engines.items()):
        samples = engine.call_stats.samples()
        calls = engine.call_stats.calls
        h2d += engine.transfers.h2d_bytes
        d2h += engine.transfers.d2h_bytes
        per_model[key] = {
            "calls_per_frame": round(calls / frames, 3) if frames else None,
            "p50": round(float(np.percentile(samples, 50)), 3) if len(samples) else None,
            "p95": round(float(np.percentile(samples, 95)), 3) if len(samples) else None,
            "providers": list(engine.providers),
            "precision": engine.precision,
        }
    if not per_model:
        return {}, None
    return per_model, {
        "h2d_bytes_per_frame": round(h2d / frames) if frames else None,
        "d2h_bytes_per_frame": round(d2h / frames) if frames else None,
    }


def _engines_of(daemon) -> dict[str, Any]:
    """The daemon's loaded engines (none when no neural effect ran: the pool is made on first use)."""
    pool = getattr(daemon, "_engines", None)
    return pool.engines() if pool is not None else {}


# -- running ------------------------------------------------------------------------------------
def _wait(daemon, until, what: str, poll_s: float) -> None:
    """Wait for `until()` or the end of the pipeline; give up when no frame comes out for STALL_S."""
    stats, finished = daemon.stats, daemon.pipeline.finished
    last, last_change = stats.frames_out, time.monotonic()
    while not until():
        if finished.wait(poll_s):
            return
        count = stats.frames_out
        if count != last:
            last, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > STALL_S:
            stuck = ", ".join(stats.stuck) or "none reported"
            raise BenchError(f"no frame came out for {STALL_S:.0f} s during the {what} (stuck stages: {stuck})")


def _input_size(reader, cfg: Config) -> tuple[int | None, int | None]:
    """The frame size the source delivers: the file's own, the size asked of a camera or the
    synthetic driver; unknown for a stream."""
    if cfg.capture.source == "file" and cfg.capture.file.path is not None:
        import cv2

        cap = cv2.VideoCapture(str(cfg.capture.file.path))
        try:
            return int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)) or None, int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) or None
        finally:
            cap.release()
    return getattr(reader, "width", None), getattr(reader, "height", None)


def _per_frame_by_thread(by_thread: dict[str, float], cpu_s: float, frames: int) -> dict[str, float]:
    if not frames:
        return {}
    figures = {name: round(1000 * seconds / frames, 3) for name, seconds in by_thread.items()}
    other = 1000 * (cpu_s - sum(by_thread.values())) / frames
    if other >= 0.05:
        figures["other"] = round(other, 3)
    return figures


def run_once(cfg: Config, opts: BenchOptions, system: dict[str, Any], batch=None) -> BenchRun:
    """Start the pipeline, warm up, measure `opts.frames` delivered frames, stop. Raises StartupError
    when a stage cannot start and BenchError when nothing could be measured. `batch`: a BatchLoad
    started after the warm-up and stopped with the measurement (live figures under batch work)."""
    from facecast.daemon import Daemon

    total = opts.warmup + opts.frames
    daemon = Daemon(cfg, max_frames=total)
    stats = daemon.stats
    stats.start_trace(total)
    thread_cpu = ThreadCpu()
    monitor = ResourceMonitor(threads=thread_cpu)
    monitoring = False
    resources: dict[str, Any] | None = None
    try:
        daemon.start()
        # Every stage has started (models loaded): see which providers the ONNX sessions got. A
        # scan of live objects takes tens of ms; the warm-up absorbs it.
        in_use = providers_in_use()
        # The output stage lets go of its workers when the pipeline stops: keep them to read their figures.
        workers = dict(getattr(daemon.output, "workers", {}))
        _wait(daemon, lambda: stats.frames_out >= opts.warmup, "warm-up", 0.002)
        batch_figures = None
        if batch is not None:
            batch.start(daemon)
        stats.reset()  # drops, errors and stuck counts from here on are the measurement's
        for engine in _engines_of(daemon).values():  # model calls from here on are the measurement's
            engine.call_stats.reset()
            engine.transfers.reset()
        monitor.start()
        monitoring = True
        cpu0 = time.process_time()  # every thread of the process: stages, pools, decoders, the bench itself
        _wait(daemon, lambda: False, "measurement", 0.05)
        cpu_s, cpu_frames = time.process_time() - cpu0, stats.frames_out
        pools = pools_now()
        resources = monitor.stop()
        by_thread = thread_cpu.result()  # up to the monitor's last sample, as its other figures
        monitoring = False
        if batch is not None:
            batch_figures = batch.stop()
        counters = stats.snapshot()
        active_effect = daemon.effect.effects.get(cfg.effect.active)
        enhancer = getattr(active_effect, "enhancer", None)  # the swap's face enhancer, when one runs
        engines = _engines_of(daemon)
        outputs = {name: {**w.snapshot(), "type": cfg.outputs[name].type} for name, w in workers.items()}
        reader = daemon.capture.reader
        width, height = _input_size(reader, cfg)
        source: dict[str, Any] = {  # the report's `source` record
            "kind": cfg.capture.source,
            "description": reader.describe(),
            "fps": round(float(reader.fps), 3),
            # Frames arrive at the source's rate: paced by facecast, or by the device itself.
            "paced": (not reader.self_paced) or reader.live,
            "width": width,
            "height": height,
            "measured_fps": None,
            "decoder_threads": reader.decoder_threads or None,  # null: not decoded by FFmpeg
        }
    finally:
        if monitoring:
            monitor.stop()
        if batch is not None:
            batch.close()  # a no-op after batch.stop(); after a failure it stops the batch thread
        clean = daemon.stop()
    if not clean:
        log.warning("some pipeline threads did not stop in time; the figures are still valid")

    trace = stats.trace()
    if len(trace) <= opts.warmup:
        raise BenchError(
            f"the source ended after {len(trace)} frames, before the {opts.warmup}-frame warm-up was over:"
            " use a longer file, capture.file.loop=true, or a smaller --warmup"
        )
    measured = trace[opts.warmup :]
    before = trace[opts.warmup - 1] if opts.warmup > 0 else None
    if before is None and len(measured) < 2:
        raise BenchError("only one frame came out: need at least two to measure a frame rate")

    figures = summarise(measured, before, stats.stage_names)
    # Model calls are counted from the reset to the end of the measurement: the frames delivered in
    # that time (not only the traced ones) share them.
    per_model, transfers = engine_figures(engines, counters.get("frames") or figures["frames"])
    replica_models = sorted(k for k, e in engines.items() if getattr(e, "replica", None))
    source["measured_fps"] = figures["capture_fps"]
    notes = []
    if replica_models:
        notes.append("the neural models are full-size replicas (random weights): speed is real, the picture is noise")
    if len(measured) < opts.frames:
        notes.append(f"the source ended after {len(measured)} of the {opts.frames} frames asked for")
    if opts.mode == "max" and source["paced"]:
        notes.append("this source delivers at its own rate: --max cannot go faster than it")
    if opts.mode == "realtime" and figures["fps"] < 0.95 * source["fps"]:
        note = f"cannot keep up: {figures['fps']:.1f} fps delivered of the source's {source['fps']:.1f}"
        captured = figures["capture_fps"]
        means = {name: s["mean"] for name, s in figures["stages"].items() if s["mean"] is not None}
        slowest = max(means, key=lambda name: means[name]) if means else None
        if daemon.pipeline.queues and daemon.pipeline.queues[0].policy == "block":
            note += "; the queues block, so the slowest stage holds the source back"
        elif captured is not None and captured < 0.95 * source["fps"]:
            note += f"; the source itself produced only {captured:.1f} fps (a slow read, or a CPU busy elsewhere)"
        else:
            note += "; frames were dropped between stages"
        if slowest is not None:
            due = 1000 / source["fps"]
            note += f" (slowest stage: {slowest}, mean {means[slowest]:.1f} ms; a frame is due every {due:.1f} ms)"
        notes.append(note)
    run_system = json.loads(json.dumps(system))
    run_system["onnxruntime"]["providers_in_use"] = in_use
    result: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "mode": opts.mode,
        "source": source,
        "effect": cfg.effect.active,
        "output_size": figures["size"],  # the delivered image (an effect may change the size)
        "pipeline": {
            "queue_policy": daemon.pipeline.queues[0].policy if daemon.pipeline.queues else None,
            "queue_capacity": cfg.pipeline.queue_capacity,
            "outputs": sorted(f"{name} ({o.type})" for name, o in cfg.outputs.items() if o.enabled),
            "work_size": cfg.pipeline.work_size,
        },
        # The frame size the effect received (pipeline.work_size; animate mesh reads no frame, so it
        # is never resized for it).
        "work_size": list(daemon.effect.effect_input_size or ()) or None,
        "frames": figures["frames"],
        "frames_requested": opts.frames,
        "warmup_frames": opts.warmup,
        "duration_s": figures["duration_s"],
        "fps": figures["fps"],
        "source_fps_ratio": round(figures["fps"] / source["fps"], 3) if source["fps"] else None,
        "latency_ms": figures["latency_ms"],
        "stages": figures["stages"],
        "dropped": counters["dropped"],
        "frames_lost": figures["frames_lost"],
        "errors": counters["errors"],
        "stuck": counters["stuck"],
        "tracked_ratio": figures["tracked_ratio"],
        # The CPU budget of a frame: the process's CPU time over the measurement per delivered frame,
        # next to the time the stages spent working on it. The difference is work no stage is charged
        # for: decoder and encoder threads, thread pools spinning, queue hand-overs.
        "cpu_ms_per_frame": round(1000 * cpu_s / cpu_frames, 3) if cpu_frames else None,
        "stage_busy_ms_per_frame": round(
            sum(s["mean"] for s in figures["stages"].values() if s["mean"] is not None), 3
        ),
        # The same CPU time by thread (monitor.ThreadCpu); "other": the rest of the process's CPU time.
        "cpu_ms_per_frame_by_thread": _per_frame_by_thread(by_thread, cpu_s, cpu_frames),
        "threads": {"plan": plan_threads(cfg.threads).as_dict(), "in_use": pools},
        "engines": per_model,
        "transfers": transfers,
        # The output workers' own figures (each output sends on its own thread), as the stats report them.
        "outputs": outputs,
        **(resources or {}),
        "system": run_system,
        "notes": notes,
    }
    if batch_figures is not None:
        result["batch"] = batch_figures
    if daemon.tracking.cfg.enabled:
        # How many frames the face mesh read and how many got predicted faces (tracking.max_fps).
        result["face_mesh"] = {
            "max_fps": daemon.tracking.cfg.max_fps,
            "read": daemon.tracking.tracked_frames,
            "predicted": daemon.tracking.predicted_frames,
        }
    if enhancer is not None and enhancer.spec is not None:
        result["enhancer"] = enhancer.stats()  # frames enhanced, carried, skipped (live: asynchronous)
    return BenchRun(result, measured, stats.stage_names)


def write_trace(path: Path, run: BenchRun) -> None:
    """One CSV row per measured frame: seq, capture time from the first measured frame, latency, and
    each stage's wait and busy time, in ms; then the faces found."""
    import csv

    names = run.stage_names
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        header = ["seq", "t_ms", "latency_ms"]
        for name in names:
            header += ([] if name == names[0] else [f"{name}_wait_ms"]) + [f"{name}_ms"]
        writer.writerow([*header, "faces"])
        t0 = run.frames[0].t_capture_ns if run.frames else 0
        for frame in run.frames:
            p = frame_figures(frame)
            row: list[Any] = [p["seq"], f"{(frame.t_capture_ns - t0) / 1e6:.3f}", f"{p['latency_ms']:.3f}"]
            for name in names:
                if name != names[0]:
                    w = p["wait_ms"].get(name)
                    row.append("" if w is None else f"{w:.3f}")
                b = p["busy_ms"].get(name)
                row.append("" if b is None else f"{b:.3f}")
            writer.writerow([*row, "" if p["faces"] is None else p["faces"]])
