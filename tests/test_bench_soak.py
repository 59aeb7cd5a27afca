"""`facecast bench --soak`: the live pipeline with its outputs for a while, figures per window and the
RSS slope. A real short soak (a few seconds, windows of 2 s) as a user runs it; about 15 s."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facecast.bench.soak import rss_slope_mb_per_hour
from tests.conftest import count_frames, run_facecast


def test_rss_slope_is_a_least_squares_fit_in_mb_per_hour():
    rng = np.random.default_rng(0)
    t = np.arange(0, 1800, 5.0)  # 30 minutes, one sample every 5 s
    mb = 300 + 10 * t / 3600 + rng.normal(0, 0.5, t.size)  # 10 MB/hour under noise
    assert rss_slope_mb_per_hour(list(zip(t, mb, strict=True))) == pytest.approx(10, abs=0.5)
    assert rss_slope_mb_per_hour([(0, 300.0), (5, 301.0)]) is None  # two points say nothing


def test_a_short_soak_records_and_reports_windows_and_the_rss_slope(tmp_path):
    recording, out = tmp_path / "soak.mp4", tmp_path / "soak.json"
    result = run_facecast(
        "bench",
        "--soak",
        "0.1",
        "--soak-window-s",
        "2",
        "--source",
        "synthetic",
        "--effect",
        "passthrough",
        "--set",
        "capture.width=320",
        "--set",
        "capture.height=240",
        "--set",
        "capture.fps=30",
        "--set",
        "tracking.enabled=false",
        "--set",
        "outputs.preview.enabled=false",
        "--set",
        "outputs.record.enabled=true",
        "--set",
        f"outputs.record.path={recording}",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    soak = json.loads(out.read_text())["soak"]
    assert soak["outputs"] == ["record"] and soak["measured_s"] == pytest.approx(6, abs=1)
    assert isinstance(soak["rss_slope_mb_per_hour"], float)
    assert len(soak["rss_samples"]) >= 10 and soak["rss_mb"]["max"] > 0
    assert len(soak["windows"]) == 3
    for window in soak["windows"]:
        # Paced at the source's 30 fps (realtime, as a show runs), never as fast as it goes; how close
        # to 30 depends on the machine (a speed figure, not checked here).
        assert 0 < window["fps"] <= 31
        assert window["fps"] == pytest.approx(window["frames"] / (window["end_s"] - window["start_s"]), rel=0.05)
        assert window["latency_ms"]["p95"] > 0 and window["rss_mb"]["end"] > 0
    assert soak["windows"][-1]["end_s"] == pytest.approx(6, abs=1)
    # The recording ran the whole time and was finalised at the end, every frame it was given in it.
    sent = soak["output_figures"]["record"]["sent"]
    assert f"finalised {recording} (" in soak["shutdown"] and count_frames(recording) == sent
    assert "RSS" in result.stdout and "MB/hour" in result.stdout and "soak window 3" in result.stderr


@pytest.mark.parametrize(
    "args", [["--soak", "0"], ["--soak", "1", "--with-batch"], ["--soak", "1", "--trace", "x.csv"]]
)
def test_soak_arguments_that_make_no_sense_are_refused(args):
    result = run_facecast("bench", *args)
    assert result.returncode == 2, result.stderr
