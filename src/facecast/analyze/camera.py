"""Camera movement per segment of a video, from sparse optical flow on the CPU.

Per frame pair: corners tracked with pyramidal Lucas-Kanade, then a similarity transform (shift,
rotation, uniform scale) fitted with RANSAC, so a moving person in front of a still background
does not pass for a pan. The per-frame motion is smoothed (running median) over `window_s`; what the
smoothing takes away is the shake. Each frame gets labels (pan left/right, tilt up/down, zoom in/out, shake) by
thresholds on those rates, and a segment is a run of frames with the same labels, runs shorter
than `min_segment_s` being merged into their neighbour.

Signs follow the camera, not the picture: the picture moving left is the camera panning right;
the picture moving down is the camera tilting up; the picture growing is a zoom in.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

ANALYSIS_WIDTH = 320  # frames are analysed at this width: enough for corners, cheap
PAN_RATE = 0.03  # frame widths (or heights) per second below which the camera is still
ZOOM_RATE = 0.03  # relative scale change per second below which there is no zoom
SHAKE_PX = 0.004  # residual motion (fraction of the frame width, per frame) above which it shakes


@dataclass(slots=True)
class Segment:
    start_s: float
    end_s: float
    pan: float  # frame widths per second, + = the camera pans right
    tilt: float  # frame heights per second, + = the camera tilts up
    zoom: float  # relative scale per second, + = zoom in
    shake: float  # residual jitter, fraction of the frame width per frame
    labels: list[str]

    def describe(self) -> str:
        what = ", ".join(self.labels) if self.labels else "static"
        return (
            f"{self.start_s:6.2f}-{self.end_s:6.2f} s  {what:<28} pan {self.pan:+.3f}/s  "
            f"tilt {self.tilt:+.3f}/s  zoom {self.zoom:+.3f}/s  shake {self.shake:.4f}"
        )


def frame_motion(prev: np.ndarray, cur: np.ndarray) -> tuple[float, float, float]:
    """(dx, dy, log scale) of the picture from `prev` to `cur` (grey, same size), in pixels."""
    corners = cv2.goodFeaturesToTrack(prev, maxCorners=300, qualityLevel=0.01, minDistance=7)
    if corners is None or len(corners) < 8:
        return 0.0, 0.0, 0.0
    moved, status, _ = cv2.calcOpticalFlowPyrLK(prev, cur, corners, np.empty(0), winSize=(21, 21), maxLevel=3)
    good = status.ravel() == 1
    if good.sum() < 8:
        return 0.0, 0.0, 0.0
    m, _ = cv2.estimateAffinePartial2D(corners[good], moved[good], method=cv2.RANSAC, ransacReprojThreshold=1.0)
    if m is None:
        return 0.0, 0.0, 0.0
    scale = math.hypot(m[0, 0], m[1, 0])
    # The shift of the frame's centre (a zoom about the centre then moves nothing).
    h, w = prev.shape
    cx, cy = w / 2, h / 2
    dx = m[0, 0] * cx + m[0, 1] * cy + m[0, 2] - cx
    dy = m[1, 0] * cx + m[1, 1] * cy + m[1, 2] - cy
    return float(dx), float(dy), math.log(max(scale, 1e-6))


def video_motion(path: Path) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Per frame pair (dx, dy, log scale) as an (N-1, 3) array, the fps and the analysed size."""
    import av

    motions: list[tuple[float, float, float]] = []
    prev = None
    size = (0, 0)
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path.name} has no video stream")
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 30)
        for frame in container.decode(stream):
            bgr = frame.to_ndarray(format="bgr24")
            h, w = bgr.shape[:2]
            scale = ANALYSIS_WIDTH / w
            grey = cv2.cvtColor(cv2.resize(bgr, (ANALYSIS_WIDTH, max(8, round(h * scale)))), cv2.COLOR_BGR2GRAY)
            size = (grey.shape[1], grey.shape[0])
            if prev is not None:
                motions.append(frame_motion(prev, grey))
            prev = grey
    if prev is None:
        raise ValueError(f"{path.name}: no video frame could be decoded")
    return np.array(motions, np.float64).reshape(-1, 3), fps, size


def _smooth(values: np.ndarray, n: int) -> np.ndarray:
    """Running median over n frames: a steady movement passes, handheld jitter (which goes back and
    forth) does not add up to a pan."""
    if n <= 1 or len(values) < 2:
        return values.copy()
    pad = n // 2
    padded = np.pad(values, ((pad, n - 1 - pad), (0, 0)), mode="edge")
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, n, axis=0), axis=-1)


def _labels(pan: float, tilt: float, zoom: float, shake: float) -> list[str]:
    labels = []
    if abs(pan) >= PAN_RATE:
        labels.append("pan right" if pan > 0 else "pan left")
    if abs(tilt) >= PAN_RATE:
        labels.append("tilt up" if tilt > 0 else "tilt down")
    if abs(zoom) >= ZOOM_RATE:
        labels.append("zoom in" if zoom > 0 else "zoom out")
    if shake >= SHAKE_PX:
        labels.append("shake")
    return labels


def segment_motion(
    motion: np.ndarray, fps: float, size: tuple[int, int], window_s: float = 0.5, min_segment_s: float = 0.5
) -> list[Segment]:
    """Segments of constant camera movement from per-frame (dx, dy, log scale)."""
    if len(motion) == 0:
        return [Segment(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, [])]
    w, h = size
    # Camera rates per frame: frame widths/heights and relative scale; signs as the module says.
    rates = np.stack([-motion[:, 0] / w, motion[:, 1] / h, motion[:, 2]], 1)
    smooth = _smooth(rates, max(1, round(window_s * fps)))
    residual = np.abs(rates[:, :2] - smooth[:, :2]).max(axis=1)
    shake = _smooth(residual[:, None], max(1, round(window_s * fps)))[:, 0]
    per_s = smooth * fps
    frame_labels = [tuple(_labels(per_s[i, 0], per_s[i, 1], per_s[i, 2], shake[i])) for i in range(len(rates))]
    runs: list[list[int]] = []  # [start, end) per run of equal labels
    for i, labels in enumerate(frame_labels):
        if runs and frame_labels[runs[-1][0]] == labels:
            runs[-1][1] = i + 1
        else:
            runs.append([i, i + 1])
    min_len = max(1, round(min_segment_s * fps))
    merged: list[list[int]] = []
    for run in runs:  # a short run joins the previous one (or the next, at the start)
        if merged and (run[1] - run[0] < min_len or merged[-1][1] - merged[-1][0] < min_len):
            merged[-1][1] = run[1]
        else:
            merged.append(run)
    segments = []
    for start, end in merged:
        pan, tilt, zoom = (rates[start:end].mean(axis=0) * fps).tolist()
        jitter = float(residual[start:end].mean())
        segments.append(Segment(start / fps, end / fps, pan, tilt, zoom, jitter, _labels(pan, tilt, zoom, jitter)))
    return segments


def analyze_camera(path: Path) -> list[Segment]:
    motion, fps, size = video_motion(path)
    return segment_motion(motion, fps, size)


def describe_for_prompt(segments: list[Segment]) -> str:
    """The camera movement as prompt text, e.g. "The camera pans right, then zooms in."."""
    parts: list[str] = []
    for seg in segments:
        words = [_VERBS[label] for label in seg.labels] or ["stays still"]
        phrase = " and ".join(words)
        if not parts or parts[-1] != phrase:
            parts.append(phrase)
    if parts == ["stays still"]:
        return "Static camera."
    return "The camera " + ", then ".join(parts) + "."


_VERBS = {
    "pan right": "pans right",
    "pan left": "pans left",
    "tilt up": "tilts up",
    "tilt down": "tilts down",
    "zoom in": "zooms in",
    "zoom out": "zooms out",
    "shake": "shakes (handheld)",
}


def camera_prompt(video: Path) -> str:
    """Prompt text describing the camera movement of `video` (for generate and replace jobs)."""
    return describe_for_prompt(analyze_camera(video))


def add_arguments(analyze: argparse.ArgumentParser) -> None:
    analyze.add_argument("video", type=Path)
    analyze.add_argument("--json", action="store_true", help="machine-readable output")


def run_analyze(args: argparse.Namespace) -> int:
    try:
        segments = analyze_camera(args.video)
    except Exception as exc:  # av's errors, OSError, ValueError: not a readable video
        print(f"cannot analyse {args.video}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        report = {"segments": [asdict(s) for s in segments], "prompt": describe_for_prompt(segments)}
        print(json.dumps(report, indent=2))
    else:
        for seg in segments:
            print(seg.describe())
        print(f"prompt: {describe_for_prompt(segments)}")
    return 0
