"""`facecast bench` run as a user runs it: the JSON it writes, and figures that agree with the run.

No speed thresholds: the checks hold on any machine (frame counts, latency against the time spent
in the stages, tracked faces), small frames and few frames so the suite stays quick on 2 cores.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, facecast_env, run_facecast, write_video

STAGES = ["capture", "tracking", "effect", "output"]
DOWNSTREAM = STAGES[1:]  # the stages inside the end-to-end latency (capture's read comes before the stamp)
SMALL = ["--set", "capture.width=320", "--set", "capture.height=240"]
TOL_MS = 0.002  # the JSON rounds each figure to the microsecond


def bench(tmp_path: Path, *args: str) -> tuple[dict, list[dict], subprocess.CompletedProcess]:
    out, trace = tmp_path / "bench.json", tmp_path / "trace.csv"
    result = run_facecast("bench", *args, "--json", str(out), "--trace", str(trace))
    assert result.returncode == 0, result.stderr[-3000:]
    with open(trace, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return json.loads(out.read_text()), rows, result


@pytest.fixture(scope="module")
def synthetic_max(tmp_path_factory):
    """One --max run on the synthetic driver, shared by the checks below. stats.window is set far
    below the frame count: the bench must still cover every measured frame."""
    tmp = tmp_path_factory.mktemp("bench-max")
    return bench(
        tmp,
        "--source",
        "synthetic",
        *SMALL,
        "--set",
        "stats.window=10",
        "--effect",
        "debug",
        "--frames",
        "40",
        "--warmup",
        "5",
    )


def test_json_has_the_documented_keys(synthetic_max):
    data, _, result = synthetic_max
    for key in (
        "schema",
        "mode",
        "frames",
        "fps",
        "latency_ms",
        "stages",
        "dropped",
        "tracked_ratio",
        "system",
        "process",
        "gpu",
        "source",
        "effect",
        "frames_lost",
        "errors",
        "duration_s",
    ):
        assert key in data, key
    assert data["schema"] == 1 and data["mode"] == "max" and data["effect"] == "debug"
    assert set(data["latency_ms"]) >= {"p50", "p95", "p99"}
    assert list(data["stages"]) == STAGES
    for name, stage in data["stages"].items():
        assert all(isinstance(stage[p], float) for p in ("p50", "p95", "p99")), name
        assert stage["p50"] <= stage["p95"] <= stage["p99"] <= stage["max"]
        assert (stage["wait"] is None) == (name == "capture")
    assert set(data["dropped"]) == {"capture->tracking", "tracking->effect", "effect->output"}
    assert data["source"]["kind"] == "synthetic" and (data["source"]["width"], data["source"]["height"]) == (320, 240)
    assert data["output_size"] == [320, 240]  # the debug overlay draws on the camera frame
    assert data["source"]["paced"] is False and data["pipeline"]["queue_policy"] == "block"
    assert data["pipeline"]["outputs"] == ["bench (null)"]
    system = data["system"]
    assert system["cpu"]["logical_cores"] >= 1 and system["versions"]["facecast"]
    assert "CPUExecutionProvider" in system["onnxruntime"]["available_providers"]
    assert system["onnxruntime"]["providers_in_use"] == []  # passthrough/debug load no ONNX model
    assert data["process"]["cpu_percent"] > 0 and data["process"]["rss_peak_mb"] > 0
    assert data["gpu"]["available"] == system["gpu"]["available"]
    if not data["gpu"]["available"]:
        assert data["gpu"]["reason"] and "no GPU" in result.stdout
    assert "fps" in result.stdout and "latency" in result.stdout and "tracking" in result.stdout


def test_cpu_per_frame_and_thread_pools_are_reported(synthetic_max):
    data, _, result = synthetic_max
    # Process CPU per delivered frame, from the same measurement window as the CPU percentage.
    cpu_ms = data["cpu_ms_per_frame"]
    from_percent = data["process"]["cpu_percent"] / 100 * data["duration_s"] * 1000 / data["frames"]
    assert cpu_ms > 0 and cpu_ms == pytest.approx(from_percent, rel=0.3)
    busy = sum(stage["mean"] for stage in data["stages"].values())
    assert data["stage_busy_ms_per_frame"] == pytest.approx(busy, abs=4 * TOL_MS)
    # The thread plan the daemon applied, as OpenCV and threadpoolctl report the pools (not as planned).
    threads = data["threads"]
    assert threads["plan"]["total"] >= 1 and threads["plan"]["opencv"] == 1
    assert threads["in_use"]["opencv"] == 1 and threads["in_use"]["blas"] == 1
    assert "CPU/frame" in result.stdout and "threads" in result.stdout
    # The same CPU time by thread: the stages by name, MediaPipe's graph threads by theirs, the
    # rest ("native", "other") named as such; together they are the process's CPU time.
    by_thread = data["cpu_ms_per_frame_by_thread"]
    assert {"capture", "tracking"} <= set(by_thread), by_thread
    named = sum(ms for name, ms in by_thread.items() if name != "other")
    # Per-thread times come in clock ticks (10 ms on Linux): each thread may be up to one tick over.
    tick_ms_per_frame = 1000 / os.sysconf("SC_CLK_TCK") / data["frames"] if hasattr(os, "sysconf") else 1.0
    assert 0.75 * cpu_ms <= named <= cpu_ms + len(by_thread) * tick_ms_per_frame, by_thread
    if sys.platform.startswith("linux"):
        assert by_thread.get("mediapipe", 0) > 0, by_thread  # the face mesh runs on its own threads
    assert "CPU/thread" in result.stdout


def test_frame_counts_add_up(synthetic_max):
    data, rows, _ = synthetic_max
    assert data["frames"] == data["frames_requested"] == 40 == len(rows)
    assert data["warmup_frames"] == 5
    seqs = [int(r["seq"]) for r in rows]
    # --max: blocking queues, so nothing is dropped and the measured frames are consecutive,
    # right after the warm-up's.
    assert seqs == list(range(5, 45))
    assert data["frames_lost"] == 0 and sum(data["dropped"].values()) == 0 and not data["errors"]
    assert data["fps"] > 0 and data["duration_s"] > 0
    assert data["fps"] == pytest.approx(40 / data["duration_s"], rel=0.01)
    assert data["outputs"]["bench"]["sent"] + data["outputs"]["bench"]["dropped"] <= 45


def test_latency_is_never_below_the_time_spent_in_the_stages(synthetic_max):
    data, rows, _ = synthetic_max
    latencies = []
    for r in rows:
        busy = sum(float(r[f"{s}_ms"]) for s in DOWNSTREAM)
        waits = sum(float(r[f"{s}_wait_ms"]) for s in DOWNSTREAM)
        assert all(float(r[f"{s}_wait_ms"]) >= 0 for s in DOWNSTREAM)
        # Per frame: latency = every later stage's wait + work (+ a few µs between stamp and hand-off).
        assert float(r["latency_ms"]) >= busy + waits - 3 * TOL_MS, r
        latencies.append(float(r["latency_ms"]))
    lat = data["latency_ms"]
    assert lat["p50"] == pytest.approx(float(np.percentile(latencies, 50)), abs=TOL_MS)
    for name in DOWNSTREAM:
        stage = data["stages"][name]
        # Each frame's latency covers each of its stage times, so every percentile does too.
        for p in ("p50", "p95", "p99", "max"):
            assert lat[p] >= stage[p], (name, p)
    # Means add up exactly (percentiles of a sum need not).
    assert (
        lat["mean"]
        >= sum(data["stages"][s]["mean"] + data["stages"][s]["wait"]["mean"] for s in DOWNSTREAM) - 8 * TOL_MS
    )


def test_synthetic_driver_is_tracked(synthetic_max):
    data, rows, _ = synthetic_max
    assert data["tracked_ratio"] >= 0.9
    assert sum(1 for r in rows if int(r["faces"]) > 0) / len(rows) == pytest.approx(data["tracked_ratio"], abs=1e-3)


def test_a_video_without_a_face_has_tracked_ratio_zero(tmp_path):
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0, 255, 160, dtype=np.float32), (120, 1))
    frames = []
    for i in range(40):  # a moving gradient with noise: texture and motion, no face
        shifted = np.roll(ramp, 4 * i, axis=1) + rng.normal(0, 20, ramp.shape)
        gray = np.clip(shifted, 0, 255).astype(np.uint8)
        frames.append(np.dstack([gray, np.roll(gray, 7, axis=0), 255 - gray]))
    video = write_video(tmp_path / "noface.mp4", frames, fps=30)
    data, rows, _ = bench(
        tmp_path, "--source", str(video), "--effect", "passthrough", "--frames", "30", "--warmup", "3"
    )
    assert data["source"]["kind"] == "file" and data["frames"] == 30 == len(rows)
    assert data["source"]["decoder_threads"] == 1  # capture.file.decoder_threads: auto, a small file
    assert data["tracked_ratio"] == 0.0
    assert all(r["faces"] == "0" for r in rows)
    assert data["frames_lost"] == 0


def test_realtime_mode_is_paced_at_the_source_rate(tmp_path):
    data, rows, _ = bench(
        tmp_path,
        "--source",
        "synthetic",
        *SMALL,
        "--set",
        "capture.fps=20",
        "--effect",
        "passthrough",
        "--realtime",
        "--frames",
        "20",
        "--warmup",
        "3",
    )
    assert data["mode"] == "realtime" and data["source"]["paced"] is True
    assert data["source"]["decoder_threads"] is None  # nothing is decoded
    assert data["source"]["fps"] == 20 and data["pipeline"]["queue_policy"] == "drop_oldest"
    # Pacing bounds the rate from above: a check that --realtime paces, not a speed threshold (the
    # pacer may catch up a few periods after a stall, hence the margin; unpaced runs many times faster).
    assert data["fps"] <= 20 * 1.5 and data["source"]["measured_fps"] <= 20 * 1.5
    t_ms = [float(r["t_ms"]) for r in rows]
    assert t_ms[0] == 0 and t_ms == sorted(t_ms) and t_ms[-1] >= (len(rows) - 4) * 1000 / 20
    seqs = [int(r["seq"]) for r in rows]
    assert data["frames"] == 20 and data["frames_lost"] == seqs[-1] - seqs[0] + 1 - len(seqs) >= 0


def test_a_paced_face_mesh_is_reported_with_its_predicted_frames(tmp_path, synthetic_max):
    """tracking.max_fps 10 on a 20 fps source: the face mesh reads every second frame, the others
    get predicted faces, which count as faces."""
    data, _, result = bench(
        tmp_path,
        "--source",
        "synthetic",
        *SMALL,
        "--set",
        "capture.fps=20",
        "--set",
        "tracking.max_fps=10",
        "--effect",
        "debug",
        "--realtime",
        "--frames",
        "30",
        "--warmup",
        "4",
    )
    mesh = data["face_mesh"]
    assert mesh["max_fps"] == 10 and mesh["read"] + mesh["predicted"] >= 34
    # about every second frame (a loaded machine delays some frames: a late one is read)
    assert 0.35 <= mesh["read"] / (mesh["read"] + mesh["predicted"]) <= 0.65, mesh
    assert data["tracked_ratio"] >= 0.9 and "got predicted faces" in result.stdout
    unpaced = synthetic_max[0]["face_mesh"]
    assert unpaced["max_fps"] == 0 and unpaced["predicted"] == 0 and unpaced["read"] >= 45


def test_compare_runs_both_configs_alternately_and_reports_ratios(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("capture: {width: 320, height: 240}\neffect: {active: passthrough}\n")
    b.write_text("capture: {width: 320, height: 240}\neffect: {active: debug}\n")
    out = tmp_path / "cmp.json"
    result = run_facecast(
        "bench", "--compare", str(a), str(b), "--rounds", "2", "--frames", "15", "--warmup", "3", "--json", str(out)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["rounds"] == 2
    assert [r["effect"] for r in data["a"]["runs"]] == ["passthrough"] * 2
    assert [r["effect"] for r in data["b"]["runs"]] == ["debug"] * 2
    # Alternated: A B in round 1, B A in round 2.
    order = [line.split(":")[1].split()[0] for line in result.stderr.splitlines() if line.startswith("round ")]
    assert order == ["A", "B", "B", "A"]
    fps_a = np.median([r["fps"] for r in data["a"]["runs"]])
    fps_b = np.median([r["fps"] for r in data["b"]["runs"]])
    assert data["ratios"]["fps"] == pytest.approx(fps_b / fps_a, rel=1e-3)
    lat_a = np.median([r["latency_ms"]["p50"] for r in data["a"]["runs"]])
    lat_b = np.median([r["latency_ms"]["p50"] for r in data["b"]["runs"]])
    assert data["ratios"]["latency_p50"] == pytest.approx(lat_b / lat_a, rel=1e-3)
    assert len(data["ratios"]["fps_per_round"]) == 2
    assert "B/A" in result.stdout
    # The CPU per frame of each side, as medians of its runs, and their ratio.
    cpu_a = np.median([r["cpu_ms_per_frame"] for r in data["a"]["runs"]])
    cpu_b = np.median([r["cpu_ms_per_frame"] for r in data["b"]["runs"]])
    assert f"A {cpu_a:.2f} ms, B {cpu_b:.2f} ms" in result.stdout and f"B/A {cpu_b / cpu_a:.3f}x" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "/no/such/clip.mp4"], "no such file"),
        (["--effect", "passthrough", "--backend", "x"], "has no backends"),
        (["--effect", "nonsense"], "effect.active"),
        (["--compare", "a.yaml", "b.yaml", "--config", "c.yaml"], "leave out --config"),
        (["--frames", "0"], "must be at least 1"),
        (["--providers", "bogus"], "engine.device"),
    ],
)
def test_bad_arguments_are_one_clear_line(args, message):
    result = run_facecast("bench", *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_tools_benchmark_is_the_same_command():
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark.py"), "--help"],
        capture_output=True,
        text=True,
        env=facecast_env(),
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--compare" in result.stdout and "--realtime" in result.stdout


def test_summary_counts_lost_frames_and_measures_from_the_last_warmup_frame():
    from facecast.bench.run import summarise
    from facecast.pipeline.stats import FrameTiming

    def frame(seq: int, t_ms: float, faces: int | None) -> FrameTiming:
        t = int(t_ms * 1e6)
        done = {"capture": t + 10_000, "tracking": t + 3_000_000, "effect": t + 4_000_000, "output": t + 5_000_000}
        busy = {"capture": 1_000_000, "tracking": 2_000_000, "effect": 500_000, "output": 100_000}
        return FrameTiming(seq, t, done, busy, faces, (64, 48))

    before = frame(9, 0.0, 1)
    frames = [frame(10, 20.0, 1), frame(11, 40.0, 0), frame(13, 60.0, 1), frame(16, 80.0, None)]
    s = summarise(frames, before, ("capture", "tracking", "effect", "output"))
    assert s["frames"] == 4 and s["frames_lost"] == 3  # 12, 14 and 15 never came out
    assert s["fps"] == pytest.approx(4 / 0.080)  # 4 intervals from the last warm-up frame over 80 ms
    assert s["latency_ms"]["p50"] == 5.0 and s["stages"]["tracking"]["wait"]["p50"] == pytest.approx(0.99)
    assert s["capture_fps"] == pytest.approx(6 / 0.060)  # seq 10 to 16 captured over 60 ms
    assert s["tracked_ratio"] == pytest.approx(2 / 3, abs=1e-4)  # the untracked frame (None) does not count
    assert summarise(frames, None, ("capture", "tracking", "effect", "output"))["fps"] == pytest.approx(3 / 0.060)


def test_gpu_sampler_aggregates_nvml_readings(monkeypatch):
    """This machine may have no GPU, so NVML is replaced here by a stand-in with the same function
    names and return shapes as nvidia-ml-py (checked against the installed pynvml); what is under
    test is our sampling and aggregation, including a device without a temperature sensor."""
    import types

    from facecast.bench.monitor import GpuSampler

    class NVMLError(Exception):
        pass

    readings = iter([(10, 1000), (30, 3000), (20, 2000)])
    calls = {"shutdown": 0}

    def utilization(handle):
        util, used = next(readings)
        handle["used"] = used
        return types.SimpleNamespace(gpu=util, memory=0)

    def temperature(handle, sensor):
        assert sensor == fake.NVML_TEMPERATURE_GPU
        raise NVMLError("Not Supported")

    fake = types.SimpleNamespace(
        NVMLError=NVMLError,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlShutdown=lambda: calls.__setitem__("shutdown", calls["shutdown"] + 1),
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: {"used": 0},
        nvmlDeviceGetName=lambda h: "Test GPU",
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=8 * 2**30, used=h["used"] * 2**20),
        nvmlDeviceGetUtilizationRates=utilization,
        nvmlDeviceGetTemperature=temperature,
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    sampler = GpuSampler()
    sampler.open()
    for _ in range(3):
        sampler.sample()
    sampler.close()
    summary = sampler.summary()
    assert summary["available"] is True and calls["shutdown"] == 1
    (dev,) = summary["devices"]
    assert dev["name"] == "Test GPU" and dev["memory_total_mb"] == 8192
    assert dev["util_percent"] == {"mean": 20.0, "max": 30.0}
    assert dev["memory_used_mb"] == {"max": 3000.0}
    assert dev["temperature_c"] == {"max": None} and dev["samples"] == 3


def test_no_gpu_is_a_reason_not_a_crash(monkeypatch):
    from facecast.bench.monitor import GpuSampler

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    sampler = GpuSampler()
    sampler.open()
    sampler.sample()
    assert sampler.summary() == {
        "available": False,
        "reason": "nvidia-ml-py not installed (pip install nvidia-ml-py)",
        "devices": [],
    }


def test_bench_config_measures_the_live_pipeline_alone(tmp_path):
    from facecast.bench.run import BenchOptions, bench_config

    cfg = bench_config(None, [], BenchOptions())
    assert cfg.capture.source == "synthetic"  # auto never picks a camera for a bench
    assert list(cfg.outputs) == ["bench"] and cfg.outputs["bench"].type == "null"
    assert cfg.capture.synthetic.realtime is False and cfg.pipeline.queue_policy == "block"
    if hasattr(cfg, "jobs"):
        assert cfg.jobs.enabled is False  # the batch thread would run whatever is queued for the user
    # --set comes last: it can still force any key.
    forced = bench_config(None, ["pipeline.queue_policy=drop_oldest"], BenchOptions(mode="max"))
    assert forced.pipeline.queue_policy == "drop_oldest"
    paced = bench_config(None, [], BenchOptions(mode="realtime"))
    assert paced.capture.synthetic.realtime is True and paced.pipeline.queue_policy == "auto"


def test_with_batch_measures_live_fps_alone_and_beside_a_real_job(tmp_path):
    out = tmp_path / "batch.json"
    result = run_facecast(
        "bench",
        "--with-batch",
        "--realtime",
        "--source",
        "synthetic",
        "--effect",
        "swap",
        *SMALL,
        "--set",
        "capture.fps=15",
        # The governor may hold the batch back for a whole short round on a busy machine; the test
        # is that the job runs beside the live pipeline (the governor has tests of its own).
        "--set",
        "jobs.min_live_ratio=0.01",
        "--set",
        "jobs.max_live_latency_ratio=10",
        "--frames",
        "45",
        "--warmup",
        "5",
        "--rounds",
        "2",
        "--json",
        str(out),
        timeout=600,
        env={**facecast_env(), "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert not list(tmp_path.glob("facecast-bench-*"))  # each round's clip, queue and outputs removed
    data = json.loads(out.read_text())
    order = [line.split(": ", 1)[1].rstrip(".") for line in result.stderr.splitlines() if line.startswith("round ")]
    assert order == ["live alone", "live + swap job", "live + swap job", "live alone"]  # alternated
    alone = np.median([r["fps"] for r in data["without_batch"]["runs"]])
    loaded = np.median([r["fps"] for r in data["with_batch"]["runs"]])
    assert data["ratios"]["fps"] == pytest.approx(loaded / alone, rel=1e-3)
    jobs = data["with_batch"]["batch"]
    assert all(j["kind"] == "swap" and j["jobs_failed"] == 0 for j in jobs)
    assert max(j["frames_per_s"] for j in jobs) > 0  # the batch thread really worked during the measurement
    assert all("batch" not in r for r in data["without_batch"]["runs"])
    assert data["meets_target"] == (data["ratios"]["fps"] >= data["target_ratio"])
    assert "live fps      alone" in result.stdout


def test_with_batch_can_run_a_real_generate_job_on_a_diffusion_pipeline(tmp_path):
    """--batch-kind generate: the batch thread runs diffusion jobs on a tiny random-weight pipeline
    (built from configs, nothing downloaded) beside the live pipeline; the JSON has both sides."""
    pytest.importorskip("diffusers", reason="the diffusion extras (facecast[diffusion]) are not installed")
    from tests.diffusion_fixtures import make_tiny

    model = make_tiny("wan", tmp_path)
    out = tmp_path / "batch.json"
    result = run_facecast(
        "bench", "--with-batch", "--realtime", "--source", "synthetic", "--effect", "debug", *SMALL,
        "--set", "capture.fps=15", "--frames", "30", "--warmup", "5", "--rounds", "1",
        "--batch-kind", "generate", "--batch-model", str(model),
        "--batch-param", "steps=50", "--batch-param", "frames=9", "--batch-param", "width=32",
        "--batch-param", "height=32",
        "--json", str(out),
        timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    order = [line.split(": ", 1)[1].rstrip(".") for line in result.stderr.splitlines() if line.startswith("round ")]
    assert order == ["live alone", "live + generate job"]
    (job,) = data["with_batch"]["batch"]
    assert job["kind"] == "generate" and job["model"] == str(model) and job["jobs_failed"] == 0, job["errors"]
    assert job["job"] == {"mode": "t2v", "steps": 50, "frames": 9, "width": 32, "height": 32}  # as validated
    assert job["first_progress_s"] is not None  # a denoising step ran before the measurement began
    assert job["steps_per_s"] >= 0 and job["governor_duty"] is not None
    alone, loaded = data["without_batch"]["runs"][0]["fps"], data["with_batch"]["runs"][0]["fps"]
    assert data["ratios"]["fps"] == pytest.approx(loaded / alone, rel=1e-3)
    assert data["meets_target"] == (data["ratios"]["fps"] >= data["target_ratio"])
    assert "generate job" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--with-batch", "--batch-kind", "generate"], "--batch-kind generate needs --batch-model DIR"),
        (["--batch-kind", "swap"], "--batch-kind, --batch-model and --batch-param go with --with-batch"),
        (["--with-batch", "--batch-param", "steps"], "expected KEY=VALUE"),
        (
            ["--with-batch", "--batch-kind", "swap", "--batch-param", "strength=2", *SMALL, "--frames", "5"],
            "the batch job was refused: swap: strength: unknown parameter",
        ),
    ],
)
def test_batch_options_are_checked(args, message, tmp_path):
    env = {**facecast_env(), "TMPDIR": str(tmp_path)}  # where the batch load makes its scratch folder
    result = run_facecast("bench", *args, "--warmup", "0", "--rounds", "1", timeout=300, env=env)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert not list(tmp_path.glob("facecast-bench-*"))  # removed after the refused job too
