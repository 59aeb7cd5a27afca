"""`facecast doctor` finds what it can see and points at the right section of TROUBLESHOOTING.md.

Most tests run the real command (a subprocess, as a streamer runs it) on a machine made to have the
problem: a config that does not load, no display, a Wayland session, a neural backend without its
files, a job whose worker was killed with SIGKILL, two onnxruntime distributions installed (their
metadata on the path), a broken NDI install. What cannot be made here (an NVIDIA GPU, a busy
camera) is checked through the rules, with `Machine` facts built by hand, and through the probes
that can run for real (which process holds a file open; a CUDA session on a CPU-only onnxruntime).
Runtime: about 20 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from facecast.config import load_config
from facecast.doctor import (
    ALL_SECTIONS,
    CameraProbe,
    JobsSeen,
    Machine,
    Section,
    cuda_session_provider,
    diagnose,
    processes_holding,
    read_jobs,
)
from tests.conftest import REPO, facecast_env, run_facecast
from tests.test_docs import anchors

GUIDE = REPO / "docs" / "TROUBLESHOOTING.md"


def doctor(tmp_path: Path, config: str = "", **env_changes: str | None) -> str:
    """Run `facecast doctor` with this config text and environment; returns its report."""
    path = tmp_path / "doctor-config.yaml"
    path.write_text(textwrap.dedent(config), encoding="utf-8")
    env = facecast_env()
    env["FACECAST_CONFIG"] = str(path)
    for key, value in env_changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    result = run_facecast("doctor", env=env, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def findings(report: str) -> list[tuple[str, str, str]]:
    """(level, text, anchor) of each finding in a report."""
    return [
        (m[1], m[2], m[3])
        for m in re.finditer(r"^(PROBLEM|NOTE)\s+(.*)\n\s+read docs/TROUBLESHOOTING\.md#(\S+)$", report, re.M)
    ]


def test_every_section_the_doctor_names_is_a_heading_of_troubleshooting():
    headings = anchors(GUIDE)
    assert set(ALL_SECTIONS) <= headings, sorted(set(ALL_SECTIONS) - headings)


def test_a_headless_machine_hears_about_hotkeys_and_the_preview(tmp_path):
    report = doctor(tmp_path, DISPLAY=None, WAYLAND_DISPLAY=None, XDG_SESSION_TYPE=None)
    found = findings(report)
    assert ("PROBLEM", "no display (DISPLAY is not set): global hotkeys are off", Section.HOTKEYS) in found
    assert ("NOTE", "no display: output preview (the preview window) is skipped", Section.PREVIEW) in found
    # Every anchor printed is a heading of the guide.
    assert found and {a for _, _, a in found} <= anchors(GUIDE)
    assert "OS:" in report and "onnxruntime" in report and "daemon:" in report


def test_wayland_without_xwayland_is_named(tmp_path):
    report = doctor(tmp_path, DISPLAY=None, WAYLAND_DISPLAY="wayland-0", XDG_SESSION_TYPE="wayland")
    levels = {(level, anchor) for level, _, anchor in findings(report)}
    assert ("PROBLEM", Section.HOTKEYS) in levels and ("PROBLEM", Section.PREVIEW) in levels
    assert "Wayland session without XWayland" in report
    assert "OpenCV's window cannot open under Wayland alone" in report


def test_a_config_that_does_not_load_is_the_first_problem(tmp_path):
    report = doctor(tmp_path, "capture:\n  sorce: camera\n")
    level, text, anchor = findings(report)[0]
    assert (level, anchor) == ("PROBLEM", Section.CONFIG)
    assert "capture.sorce: unknown key" in text


def test_a_neural_backend_without_its_files_points_at_the_download(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    config = f"""
        effect:
          animate:
            backend: liveportrait
        models:
          dir: {models}
    """
    found = findings(doctor(tmp_path, config))
    missing = [text for level, text, anchor in found if anchor == Section.MODELS and level == "PROBLEM"]
    assert len(missing) == 1 and "6 of its 6 files are missing" in missing[0]
    assert missing[0].endswith("run facecast models download liveportrait")

    from tests.neural_fixtures import make_models

    make_models(models)  # files with the right names and contracts: nothing missing any more
    assert not [a for _, _, a in findings(doctor(tmp_path, config)) if a == Section.MODELS]


def test_a_job_whose_worker_was_killed_is_reported_stuck(tmp_path):
    db = tmp_path / "jobs.sqlite"
    # A real worker claims a job and dies mid-job (SIGKILL): the job stays 'running' in the file.
    worker = textwrap.dedent(f"""
        import os, signal
        from facecast.jobs.runner import owner_id
        from facecast.jobs.store import JobStore
        store = JobStore({str(db)!r})
        store.submit("animate", {{"character": "a.png", "driving": "b.mp4"}}, {str(tmp_path / "out.mp4")!r})
        job = store.claim(owner_id(), 600.0)
        print(job.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", worker], capture_output=True, text=True, timeout=60, env=facecast_env()
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    job_id = proc.stdout.strip()
    config = f"""
        jobs:
          db: {db}
    """
    stuck = [(level, text) for level, text, anchor in findings(doctor(tmp_path, config)) if anchor == Section.JOBS]
    assert len(stuck) == 1
    level, text = stuck[0]
    assert level == "PROBLEM" and text.startswith(f"job {job_id} (animate) is marked running but the process")


def test_an_expired_lease_is_stuck_and_queued_jobs_without_a_worker_are_noted(tmp_path):
    from facecast.jobs.store import JobStore

    store = JobStore(tmp_path / "jobs.sqlite")
    store.submit("animate", {}, str(tmp_path / "a.mp4"))
    running = store.claim(f"{os.uname().nodename}-elsewhere:1:1", 30.0)  # another computer's worker
    store.submit("swap", {}, str(tmp_path / "b.mp4"))
    store.close()
    assert running is not None
    now_seen = read_jobs(tmp_path / "jobs.sqlite")
    assert now_seen is not None and now_seen.stuck == []  # its lease still runs
    seen = read_jobs(tmp_path / "jobs.sqlite", now=time.time() + 120)
    assert seen is not None
    assert [(job_id, kind) for job_id, kind, _ in seen.stuck] == [(running.id, "animate")]
    assert "stopped renewing its lease" in seen.stuck[0][2]
    assert seen.counts == {"running": 1, "queued": 1}
    m = Machine(config=load_config(None), jobs=seen, daemon_running=False)
    texts = [(f.level, f.text) for f in diagnose(m) if f.section == Section.JOBS]
    assert ("note", "1 queued job waits: the daemon is not running; start it, or run facecast jobs run") in texts
    assert [level for level, _ in texts].count("problem") == 1


def test_two_onnxruntime_distributions_are_caught(tmp_path):
    # What `pip install onnxruntime-gpu` leaves beside the CPU package: its metadata on the path.
    site = tmp_path / "site"
    info = site / "onnxruntime_gpu-1.20.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.20.1\n")
    report = doctor(tmp_path, PYTHONPATH=str(site))
    assert (
        "PROBLEM",
        "onnxruntime and onnxruntime-gpu are installed together: they overwrite each other's files; "
        "uninstall all of them and install one",
        Section.GPU,
    ) in findings(report)


def test_a_broken_ndi_install_is_a_problem_when_ndi_is_enabled(tmp_path):
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "NDIlib.py").write_text("raise ImportError('libndi.so.6: cannot open shared object file')\n")
    found = findings(doctor(tmp_path, "outputs:\n  ndi:\n    enabled: true\n", PYTHONPATH=str(shadow)))
    ndi = [(level, text) for level, text, anchor in found if anchor == Section.NDI]
    assert ndi and ndi[0][0] == "PROBLEM" and "libndi.so.6" in ndi[0][1]
    # With NDI off, it is a note, and OBS hears nothing at all: that is said too.
    found = findings(doctor(tmp_path, "", PYTHONPATH=str(shadow)))
    assert ("NOTE", Section.NDI) in {(level, anchor) for level, _, anchor in found}
    assert ("NOTE", Section.BLACK_OUTPUT) in {(level, anchor) for level, _, anchor in found}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Spout off Windows, v4l2loopback: Linux rules")
def test_outputs_that_cannot_start_here_are_problems(tmp_path):
    config = "outputs:\n  spout:\n    enabled: true\n  virtualcam:\n    enabled: true\n"
    found = {
        (level, text.split(":")[0])
        for level, text, anchor in findings(doctor(tmp_path, config))
        if anchor == Section.BLACK_OUTPUT
    }
    assert ("PROBLEM", "output spout is a Spout sender, which is Windows-only") in found
    if not Path("/sys/devices/virtual/video4linux").is_dir() or not any(
        Path("/sys/devices/virtual/video4linux").iterdir()
    ):
        assert ("PROBLEM", "output virtualcam (virtual camera) needs a v4l2loopback device and there is none") in found


# -- what cannot be made on this machine: the probes that can run, and the rules -----------------


def test_the_process_holding_a_file_is_named(tmp_path):
    held = tmp_path / "video0"
    held.write_bytes(b"")
    holder = subprocess.Popen([sys.executable, "-c", f"f = open({str(held)!r}); import time; time.sleep(60)"])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not processes_holding(str(held)):
            time.sleep(0.05)
        assert f"(pid {holder.pid})" in " ".join(processes_holding(str(held)))
    finally:
        holder.kill()
        holder.wait()
    assert processes_holding(str(held)) == []


def test_a_cuda_session_on_a_cpu_only_onnxruntime_reports_where_it_ran():
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the probe's GPU side is what runs here")
    assert cuda_session_provider() == "CPUExecutionProvider"


def _machine(config: str = "", platform: str = "linux", **facts) -> Machine:
    import yaml

    from facecast.config import Config, merge

    cfg = Config.model_validate(merge(Config().model_dump(mode="json"), yaml.safe_load(config) or {}))
    return Machine(platform=platform, env={"DISPLAY": ":0"}, config=cfg, **facts)


def _sections(m: Machine, level: str | None = None, among: tuple[str, ...] = ALL_SECTIONS) -> list[str]:
    return [f.section for f in diagnose(m) if (level is None or f.level == level) and f.section in among]


CAMERA = (Section.CAMERA_BUSY, Section.CAMERA_MISSING)


def test_camera_rules():
    camera = "capture:\n  source: camera\n"
    busy = _machine(camera, cameras=[CameraProbe(0, "/dev/video0", "HD Webcam", holders=["obs (pid 4242)"])])
    assert _sections(busy, "problem") == [Section.CAMERA_BUSY]
    assert "in use by obs (pid 4242)" in diagnose(busy)[0].text
    absent = _machine(camera, cameras=[CameraProbe(0, "/dev/video0", exists=False)])
    assert _sections(absent, "problem") == [Section.CAMERA_MISSING]
    locked = _machine(camera, cameras=[CameraProbe(0, "/dev/video0", "HD Webcam", readable=False)])
    assert "'video' group" in diagnose(locked)[0].text
    other = _machine(
        camera,
        cameras=[
            CameraProbe(0, "/dev/video0", exists=False),
            CameraProbe(2, "/dev/video2", "USB", frame="1280x720 at 30 fps"),
        ],
    )
    assert "set capture.camera.index: 2" in diagnose(other)[0].text
    # auto: a missing camera is a note (the synthetic driver runs), a busy one still a problem.
    assert _sections(_machine(cameras=[CameraProbe(0, "/dev/video0", exists=False)]), "note", CAMERA) == [
        Section.CAMERA_MISSING
    ]
    assert _sections(_machine(cameras=[CameraProbe(0, "/dev/video0", exists=False)]), "problem") == []
    assert _sections(_machine(cameras=[CameraProbe(0, "/dev/video0", holders=["zoom (pid 7)"])]), "problem") == [
        Section.CAMERA_BUSY
    ]
    ours = _machine(camera, cameras=[CameraProbe(0, "/dev/video0", holders=["facecast (pid 99)"])])
    assert _sections(ours, among=CAMERA) == []  # the running daemon holds it: nothing wrong
    working = _machine(camera, cameras=[CameraProbe(0, "/dev/video0", frame="1280x720 at 60 fps")])
    assert _sections(working, among=CAMERA) == []
    assert _sections(_machine("capture:\n  source: synthetic\n", cameras=[]), among=CAMERA) == []


def test_gpu_rules():
    neural = "effect:\n  animate:\n    backend: liveportrait\n"
    gpu = ["GPU 0 (NVIDIA GeForce RTX 4070)"]
    cpu_only = _machine(
        neural, gpus=gpu, ort_dists=["onnxruntime"], providers=["CPUExecutionProvider"], tensorrt="10.0"
    )
    [finding] = [f for f in diagnose(cpu_only) if f.section == Section.GPU]
    assert (
        finding.level == "problem"
        and "RTX 4070) is here but onnxruntime offers only CPUExecutionProvider" in finding.text
    )
    # The same machine running only the mesh effects: worth a note, not a problem.
    assert [
        f.level
        for f in diagnose(_machine(gpus=gpu, ort_dists=["onnxruntime"], providers=["CPUExecutionProvider"]))
        if f.section == Section.GPU
    ] == ["note"]
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    no_cudnn = _machine(
        neural,
        gpus=gpu,
        ort_dists=["onnxruntime-gpu"],
        providers=gpu_build,
        cuda_session="CPUExecutionProvider",
        tensorrt=None,
    )
    texts = {f.section: f.text for f in diagnose(no_cudnn)}
    assert "CUDA or cuDNN libraries did not load" in texts[Section.GPU]
    assert "TensorRT libraries are not installed" in texts[Section.TENSORRT]
    healthy = _machine(
        neural,
        gpus=gpu,
        ort_dists=["onnxruntime-gpu"],
        providers=gpu_build,
        cuda_session="CUDAExecutionProvider",
        tensorrt="10.3.0",
        torch="2.5.1",
        torch_cuda=True,
    )
    assert Section.GPU not in _sections(healthy) and Section.TENSORRT not in _sections(healthy)
    torch_cpu = _machine("engine:\n  device: torch\n", gpus=gpu, torch="2.13.0+cpu", torch_cuda=False)
    assert [f.level for f in diagnose(torch_cpu) if f.section == Section.GPU] == ["problem"]
    no_torch = _machine("engine:\n  device: torch\n", torch=None)
    assert [f.text for f in diagnose(no_torch) if f.section == Section.GPU] == [
        "engine.device is torch but PyTorch is not installed"
    ]
    # facecast without the cpu or gpu extra: the mesh effects run, a neural backend cannot.
    assert [f.level for f in diagnose(_machine(neural, ort_dists=[])) if f.section == Section.GPU] == ["problem"]
    assert [f for f in diagnose(_machine(ort_dists=[])) if f.section == Section.GPU] == []


def test_display_rules_off_linux_are_silent():
    m = _machine(platform="win32")
    assert Section.HOTKEYS not in _sections(m) and Section.PREVIEW not in _sections(m)


def test_jobs_that_cannot_be_read_are_a_problem(tmp_path):
    bad = tmp_path / "jobs.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    seen = read_jobs(bad)
    assert seen is not None and seen.error
    m = _machine(jobs=JobsSeen(bad, {}, [], error=seen.error))
    assert _sections(m, "problem") == [Section.JOBS]
