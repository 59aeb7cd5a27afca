"""The `facecast` command run as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.conftest import count_frames, facecast_env, free_port, popen_facecast, run_facecast


def test_run_on_a_video_file_records_exactly_n_frames(synthetic_video, tmp_path):
    video = synthetic_video(40, 320, 240)
    out = tmp_path / "rec" / "out.mp4"
    result = run_facecast(
        "run",
        "--frames",
        "25",
        "--set",
        "capture.source=file",
        "--set",
        f"capture.file.path={video}",
        "--set",
        "capture.file.realtime=false",
        "--set",
        "effect.active=debug",
        "--set",
        "outputs.record.enabled=true",
        "--set",
        f"outputs.record.path={out}",
    )
    assert result.returncode == 0, result.stderr
    assert count_frames(out) == 25
    assert "frame limit reached (25 frames)" in result.stderr


def test_a_file_that_cannot_be_opened_is_a_clear_startup_error(tmp_path):
    bogus = tmp_path / "not-a-video.mp4"
    bogus.write_text("hello")
    result = run_facecast("run", "--frames", "5", "--set", "capture.source=file", "--set", f"capture.file.path={bogus}")
    assert result.returncode == 3
    assert "cannot start" in result.stderr and "not a video" in result.stderr and str(bogus) in result.stderr


def test_sigterm_stops_the_daemon_promptly():
    proc = popen_facecast(
        "run",
        "--set",
        "capture.source=auto",
        "--set",
        "capture.width=320",
        "--set",
        "capture.height=240",
        "--set",
        "stats.interval_s=0.5",
    )
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "fps |" in line:  # frames are flowing
                break
        assert any("using the synthetic driver" in line for line in lines), "".join(lines)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    rest = proc.stdout.read()
    assert rc == 0, rest
    assert "SIGTERM received" in rest
    assert elapsed < 3.0, f"took {elapsed:.1f} s to stop"  # 2 s for the threads + interpreter exit


def test_seconds_limit_stops_by_itself():
    result = run_facecast(
        "run",
        "--seconds",
        "2",
        "--set",
        "capture.source=synthetic",
        "--set",
        "capture.width=320",
        "--set",
        "capture.height=240",
    )
    assert result.returncode == 0, result.stderr
    assert "time limit reached" in result.stderr


def test_doctor_reports_the_machine():
    result = run_facecast("doctor", timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("Python 3.", "OS:", "CPU:", "onnxruntime", "CPUExecutionProvider", "display:", "NDI:"):
        assert expected in out, out
    assert "GPU" in out


def test_ctl_reads_only_the_control_section_and_imports_no_stage():
    """`facecast ctl` (a hotkey script, a Stream Deck button) starts without importing the stages'
    modules; a wrong control section is still named, key and reason."""
    probe = (
        "import sys\n"
        "from facecast.cli import main\n"
        f"rc = main(['ctl', '--set', 'control.port={free_port()}', '--set', 'capture.fps=unused', 'state'])\n"
        "print('rc', rc, 'loaded', [m for m in ('cv2', 'facecast.config', 'mediapipe') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=facecast_env())
    assert "rc 3 loaded []" in out.stdout, out.stdout + out.stderr  # 3: no daemon answers there
    assert "no facecast daemon answers" in out.stderr

    wrong = run_facecast("ctl", "--set", "control.port=eighty", "state")
    assert wrong.returncode == 2
    assert "control.port" in wrong.stderr and "integer" in wrong.stderr
