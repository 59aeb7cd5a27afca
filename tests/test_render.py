"""`facecast render animate|swap` run as a user would: frame count, fps and audio are kept."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from tests.conftest import PORTRAIT, count_frames, run_facecast

pytestmark = pytest.mark.slow


def _streams(path: Path):
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        a = c.streams.audio[0] if c.streams.audio else None
        return (
            v.average_rate,
            v.width,
            v.height,
            a.codec_context.name if a else None,
            float(a.duration * a.time_base) if a is not None and a.duration else None,
        )


@pytest.fixture(scope="module")
def face_image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("face") / "mirror.png"
    cv2.imwrite(str(path), cv2.flip(cv2.imread(str(PORTRAIT)), 1))
    return path


def test_render_swap_keeps_frames_fps_and_audio(synthetic_video, face_image, tmp_path):
    src = synthetic_video(count=24, width=320, height=240, fps=24.0, audio=True)
    out = tmp_path / "swapped.mp4"
    result = run_facecast("render", "swap", "--face", str(face_image), "--target", str(src), "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "24/24 frames" in result.stderr  # the progress line
    assert count_frames(out) == count_frames(src) == 24
    rate, w, h, audio, audio_s = _streams(out)
    src_rate, _, _, src_audio, src_audio_s = _streams(src)
    assert rate == src_rate == 24 and (w, h) == (320, 240)
    assert audio == src_audio == "aac" and abs(audio_s - src_audio_s) < 0.05
    assert not list(tmp_path.glob(".swapped-*"))  # no temporary file left


def test_render_animate_outputs_the_character_at_the_configured_size(synthetic_video, tmp_path):
    src = synthetic_video(count=20, width=320, height=240, fps=30.0, audio=False)
    out = tmp_path / "animated.mp4"
    result = run_facecast(
        "render",
        "animate",
        "--character",
        str(PORTRAIT),
        "--driving",
        str(src),
        "-o",
        str(out),
        "--set",
        "effect.animate.width=256",
        "--set",
        "effect.animate.height=256",
        "--quiet",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert count_frames(out) == 20
    rate, w, h, audio, _ = _streams(out)
    assert rate == 30 and (w, h) == (256, 256) and audio is None


def test_render_refuses_bad_inputs_with_a_reason(tmp_path, face_image):
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    out = tmp_path / "out.mp4"
    result = run_facecast("render", "swap", "--face", str(face_image), "--target", str(not_video), "-o", str(out))
    assert result.returncode == 2 and "cannot read" in result.stderr and not out.exists()
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), cv2.cvtColor(cv2.imread(str(PORTRAIT))[:, :, 0] * 0, cv2.COLOR_GRAY2BGR))
    result = run_facecast("render", "animate", "--character", str(blank), "--driving", str(not_video), "-o", str(out))
    assert result.returncode == 2 and "no face found" in result.stderr
