"""Camera movement analysis against videos whose camera motion is known exactly: a real photo
shifted, zoomed and shaken over time."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facecast.analyze.camera import analyze_camera, camera_prompt
from tests.conftest import PORTRAIT, run_facecast, write_video

FPS = 24.0
W, H = 320, 240


def _camera_video(path, moves):
    """A 320x240 window on the (enlarged) portrait moved by `moves(t) -> (x, y, scale)` of the camera:
    x, y its centre in pixels of the big image, scale > 1 = zoomed in."""
    big = cv2.resize(cv2.imread(str(PORTRAIT)), (1024, 1024))
    frames = []
    for i in range(int(4 * FPS)):
        cx, cy, s = moves(i / FPS)
        m = np.float32([[s, 0, W / 2 - cx * s], [0, s, H / 2 - cy * s]])
        frames.append(cv2.warpAffine(big, m, (W, H), flags=cv2.INTER_LINEAR))
    return write_video(path, frames, FPS)


def _pan_then_zoom(t):
    """Still for 1 s, pans right at 100 px/s for 1.5 s, then zooms in by 25 %/s."""
    x = 460 + 100 * min(max(t - 1, 0), 1.5)
    return x, 420, 1.25 ** max(t - 2.5, 0)


def test_pan_then_zoom_are_found_with_their_rates_and_times(tmp_path):
    segments = analyze_camera(_camera_video(tmp_path / "pz.mp4", _pan_then_zoom))
    assert [s.labels for s in segments] == [[], ["pan right"], ["zoom in"]]
    still, pan, zoom = segments
    assert pan.start_s == pytest.approx(1.0, abs=0.35) and zoom.start_s == pytest.approx(2.5, abs=0.35)
    # Mean rates over each found segment against the truth averaged over the same interval.
    true_pan = 100 / W * (min(pan.end_s, 2.5) - max(pan.start_s, 1.0)) / (pan.end_s - pan.start_s)
    assert pan.pan == pytest.approx(true_pan, rel=0.15)
    true_zoom = np.log(1.25) * (zoom.end_s - max(zoom.start_s, 2.5)) / (zoom.end_s - zoom.start_s)
    assert zoom.zoom == pytest.approx(true_zoom, rel=0.15)
    assert abs(still.pan) < 0.01 and abs(still.tilt) < 0.01


def test_tilt_and_shake(tmp_path):
    rng = np.random.default_rng(3)
    jitter = rng.normal(0, 4, (200, 2))

    def moves(t):
        i = round(t * FPS)
        if t < 2:  # tilting up: the camera's centre rises by 60 px/s
            return 500, 600 - 60 * t, 1.0
        return 500 + jitter[i, 0], 480 + jitter[i, 1], 1.0  # handheld, going nowhere

    segments = analyze_camera(_camera_video(tmp_path / "ts.mp4", moves))
    assert [s.labels for s in segments] == [["tilt up"], ["shake"]]
    assert segments[0].tilt == pytest.approx(60 / H, rel=0.15)
    assert segments[1].start_s == pytest.approx(2.0, abs=0.35)


def test_camera_prompt_and_the_command(tmp_path):
    video = _camera_video(tmp_path / "pz.mp4", _pan_then_zoom)
    assert camera_prompt(video) == "The camera stays still, then pans right, then zooms in."
    done = run_facecast("analyze", str(video), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [s["labels"] for s in report["segments"]] == [[], ["pan right"], ["zoom in"]]
    text = run_facecast("analyze", str(video))
    assert "pan right" in text.stdout and "prompt: The camera" in text.stdout
    bad = run_facecast("analyze", str(PORTRAIT.parent / "README.md"))
    assert bad.returncode == 2 and "cannot analyse" in bad.stderr
