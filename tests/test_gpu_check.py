"""tools/gpu_check.sh, the one prepared script for a borrowed GPU machine, run here as a user would run
it, in its CPU dry mode (the same code, the small fixtures, a few frames), so it cannot rot between
the rare runs on a GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_prints_the_table_and_the_json(tmp_path):
    out = tmp_path / "check.json"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH")}
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_check.sh"), "--dry-run", "--frames", "2", "--json", str(out)],
        env={**env, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "DRY RUN on the CPU" in text
    for line in (
        "animate/liveportrait (frame)",
        "swap/inswapper (frame)",
        "liveportrait/warping_spade",
        "inswapper_128",
        "animate live fps beside a batch thread",
    ):
        assert line in text, line
    printed = json.loads(text.split("GPU_CHECK_JSON ", 1)[1].splitlines()[0])
    report = json.loads(out.read_text())
    assert printed == report
    assert report["dry_run"] and report["frames"] == 2
    assert set(report["variants"]) == {"torch-cpu", "ort-cpu"}
    torch_cpu = report["variants"]["torch-cpu"]
    assert "error" not in torch_cpu and "error" not in report["variants"]["ort-cpu"], report["variants"]
    assert torch_cpu["providers"] == ["torch-cpu"]
    # Every model agrees with onnxruntime's CPU output (FP32 on both sides).
    assert set(torch_cpu["accuracy"]) == {
        "liveportrait/appearance_feature_extractor",
        "liveportrait/motion_extractor",
        "liveportrait/warping_spade",
        "liveportrait/stitching",
        "liveportrait/stitching_eye",
        "liveportrait/stitching_lip",
        "w600k_r50",
        "inswapper_128",
    }
    assert max(torch_cpu["accuracy"].values()) < 1e-4
    animate = torch_cpu["chains"]["animate/liveportrait"]
    assert set(animate["models"]) == {
        "liveportrait/motion_extractor",
        "liveportrait/stitching",
        "liveportrait/warping_spade",
    }
    assert animate["fps"] > 0 and animate["frame_ms"]["p50"] > 0
    assert animate["models"]["liveportrait/warping_spade"]["p50"] > 0
    # On the CPU the models run where the data is: nothing crosses a bus.
    assert animate["h2d_bytes_per_frame"] == animate["d2h_bytes_per_frame"] == 0
    assert torch_cpu["contended"]["batch_calls"] >= 0 and torch_cpu["contended"]["live_fps_with_batch"] > 0
