"""`facecast jobs` as a user runs it: submit, run, check the output against the input."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from tests.conftest import PORTRAIT, run_facecast


def _probe(path: Path) -> dict:
    with av.open(str(path)) as c:
        fps = float(c.streams.video[0].average_rate)
        frames = sum(1 for _ in c.decode(video=0))
    with av.open(str(path)) as c:
        audio = c.streams.audio[0] if c.streams.audio else None
        audio_s = float(audio.duration * audio.time_base) if audio is not None and audio.duration else None
        return {
            "frames": frames,
            "fps": fps,
            "audio": audio is not None,
            "duration": float(c.duration) / 1e6 if c.duration else None,
            "audio_s": audio_s,
        }


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "recordings").mkdir()
    return tmp_path


def _jobs(workdir: Path, *args: str, timeout: float = 300):
    return run_facecast(
        "jobs",
        "--offline",
        "--set",
        f"jobs.db={workdir / 'jobs.sqlite'}",
        "--set",
        f"jobs.input_dirs=[{workdir}, {PORTRAIT.parent}]",
        *args,
        cwd=workdir,
        timeout=timeout,
    )


def test_submit_run_and_the_output_matches_the_input(workdir, synthetic_video):
    driving = synthetic_video(24, 320, 240, fps=24.0, audio=True)
    out = workdir / "recordings" / "animated.mp4"
    submitted = _jobs(
        workdir, "submit", "animate", "--character", str(PORTRAIT), "--driving", str(driving), "-o", str(out)
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    assert _jobs(workdir, "show", job_id).stdout.split()[1] == "queued"
    ran = run_facecast(
        "jobs",
        "--set",
        f"jobs.db={workdir / 'jobs.sqlite'}",
        "--set",
        f"jobs.input_dirs=[{workdir}, {PORTRAIT.parent}]",
        "run",
        cwd=workdir,
        timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    shown = _jobs(workdir, "show", job_id).stdout.split()
    assert shown[1] == "done" and shown[3] == "100.0%"
    got, want = _probe(out), _probe(driving)
    assert got["frames"] == want["frames"] == 24 and got["fps"] == want["fps"]
    assert got["audio"] and got["audio_s"] == pytest.approx(want["audio_s"], abs=0.05)
    assert got["duration"] == pytest.approx(want["duration"], abs=0.1)
    assert sorted(p.name for p in out.parent.iterdir()) == ["animated.mp4"]


@pytest.mark.parametrize(
    "args, reason",
    [
        (["swap", "--face", str(PORTRAIT), "--target", "/nonexistent.mp4"], "no such file in the allowed folders"),
        (["swap", "--face", str(PORTRAIT), "--target", str(PORTRAIT)], "still image, not a video"),
        (["swap", "--face", "notes.png", "--target", str(PORTRAIT)], "cannot use this image"),
        (["swap", "--face", "/etc/hostname", "--target", str(PORTRAIT)], "no such file in the allowed folders"),
    ],
)
def test_bad_inputs_are_refused_at_submit_with_the_reason(workdir, args, reason):
    (workdir / "notes.png").write_text("not an image")
    result = _jobs(workdir, "submit", *args, "-o", str(workdir / "recordings" / "x.mp4"))
    assert result.returncode == 2
    assert pytest.importorskip("re").search(reason, result.stderr), result.stderr


def test_an_output_outside_the_allowed_folders_is_refused(workdir, synthetic_video):
    video = synthetic_video(5)
    result = _jobs(
        workdir, "submit", "swap", "--face", str(PORTRAIT), "--target", str(video), "-o", "/tmp/elsewhere/out.mp4"
    )
    assert result.returncode == 2 and "outside the allowed folders" in result.stderr


def test_a_truncated_video_fails_the_job_with_a_reason(workdir, synthetic_video):
    video = synthetic_video(30, 320, 240)
    data = video.read_bytes()
    broken = workdir / "broken.mp4"
    broken.write_bytes(data[: len(data) // 2])  # cut in the middle: the moov atom is lost
    result = _jobs(
        workdir,
        "submit",
        "swap",
        "--face",
        str(PORTRAIT),
        "--target",
        str(broken),
        "-o",
        str(workdir / "recordings" / "y.mp4"),
    )
    assert result.returncode == 2 and "not a video facecast can read" in result.stderr
