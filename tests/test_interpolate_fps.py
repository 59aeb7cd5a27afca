"""tools/interpolate_fps.py: motion-compensated frames between, not cross-fades."""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from facecast.media.video import write_video

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
from interpolate_fps import interpolate


def test_a_moving_square_is_drawn_half_way_in_the_frame_between(tmp_path):
    frames = []
    for i in range(12):
        frame = np.full((96, 128, 3), 60, np.uint8)
        cv2.rectangle(frame, (10 + 8 * i, 40), (10 + 8 * i + 15, 55), (255, 255, 255), -1)
        frames.append(frame)
    src = tmp_path / "src.mp4"
    write_video(src, frames, 10.0, crf=10)
    written = interpolate(src, tmp_path / "out.mp4", 20)
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    assert cap.get(cv2.CAP_PROP_FPS) == 20
    out = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    assert len(out) == written and 21 <= written <= 24

    def left_edge(frame: np.ndarray) -> float:  # where the square's bright columns start
        bright = np.flatnonzero(frame[40:56, :, 1].mean(0) > 200)
        return float(bright[0]) if bright.size else float("nan")

    # Source frame i is output frame 2i; frame 2i+1 is made: the square half way (4 px on), whole
    # and bright (a cross-fade would show two half-bright squares, neither above the threshold).
    for i in range(3, 8):
        a, mid, b = left_edge(out[2 * i]), left_edge(out[2 * i + 1]), left_edge(out[2 * i + 2])
        assert abs(b - a - 8) <= 1.5, (i, a, b)
        assert abs(mid - (a + b) / 2) <= 1.5, (i, a, mid, b)
