"""The real MediaPipe model on the bundled portrait and on the synthetic driver."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from facecast.capture.synthetic import SyntheticConfig, synthetic_frames
from facecast.tracking.face_mesh import FaceTracker, TrackingConfig, track_image
from facecast.tracking.geometry import eye_openness
from facecast.tracking.one_euro import SmoothingConfig
from facecast.types import NUM_LANDMARKS


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)  # positive = counter-clockwise
    return cv2.warpAffine(image, m, (w, h), borderMode=cv2.BORDER_REPLICATE)


def test_portrait_face_is_found_with_478_landmarks(portrait):
    faces = track_image(portrait)
    assert len(faces) == 1
    face = faces[0]
    assert face.landmarks.shape == (NUM_LANDMARKS, 3)
    x, y, w, h = face.box
    # The astronaut's face is in the upper middle of the 512x512 portrait.
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 200 and 60 < h < 160
    assert all(0.2 < e < 0.6 for e in face.eye_openness)  # eyes open
    assert 0.05 < face.mouth_openness < 0.4  # smiling, lips apart (teeth showing)


@pytest.mark.parametrize("degrees", [-20, -10, 15, 25])
def test_roll_follows_a_known_rotation(portrait, degrees):
    base = track_image(portrait)[0].pose
    turned = track_image(_rotate(portrait, degrees))[0].pose
    assert turned.roll - base.roll == pytest.approx(degrees, abs=3.0)
    assert abs(turned.yaw - base.yaw) < 5 and abs(turned.pitch - base.pitch) < 5


def test_mirrored_face_flips_yaw_and_roll(portrait):
    pose = track_image(portrait)[0].pose
    mirrored = track_image(cv2.flip(portrait, 1))[0].pose
    assert mirrored.roll == pytest.approx(-pose.roll, abs=2.0)
    assert mirrored.yaw == pytest.approx(-pose.yaw, abs=3.0)


def test_no_face_is_an_empty_list_not_an_error():
    blank = np.full((240, 320, 3), 90, np.uint8)
    assert track_image(blank) == []


def test_tracker_recovers_the_synthetic_drivers_scripted_motion():
    fps = 30.0
    # Roll, shift and zoom only: yaw, nods and the mouth (tested in test_animate.py) change the face box.
    still_face = dict(yaw_deg=0, pitch_deg=0, mouth=0, blink_period_s=0)
    frames = synthetic_frames(90, 480, 360, fps, SyntheticConfig(roll_deg=15, period_s=3.0, **still_face))
    tracker = FaceTracker(TrackingConfig(smoothing=SmoothingConfig(enabled=False)))
    try:
        faces = [tracker.detect(f.image, i / fps) for i, f in enumerate(frames)]
    finally:
        tracker.close()
    assert all(len(f) == 1 for f in faces), "the face must be tracked on every frame"
    truth_roll = np.array([f.truth.roll_deg for f in frames])
    est_roll = np.array([f[0].pose.roll for f in faces])
    offset = np.median(est_roll - truth_roll)  # the portrait's own head tilt
    assert np.abs(est_roll - truth_roll - offset).max() < 3.0
    assert np.corrcoef(truth_roll, est_roll)[0, 1] > 0.98
    truth_x = np.array([f.truth.shift_px[0] for f in frames])
    est_x = np.array([f[0].center[0] for f in faces])
    assert np.corrcoef(truth_x, est_x)[0, 1] > 0.95
    truth_scale = np.array([f.truth.scale for f in frames])
    est_h = np.array([f[0].box[3] for f in faces], dtype=float)
    assert np.corrcoef(truth_scale, est_h)[0, 1] > 0.8


def test_the_eyes_keep_a_quick_blinks_depth_through_the_smoothing():
    """A blink lasts 0.1-0.2 s. The landmark filter keeps a still face still and would take much of
    a blink's depth; the eye openness is read before it and smoothed on its own, so the tracked blink
    goes about as deep as the raw tracker reads it."""
    fps = 30.0
    still = dict(roll_deg=0, yaw_deg=0, pitch_deg=0, mouth=0, shift=0, zoom=0)
    frames = synthetic_frames(75, 480, 360, fps, SyntheticConfig(blink_period_s=0.8, blink_s=0.17, **still))
    smoothed, raw = FaceTracker(TrackingConfig()), FaceTracker(TrackingConfig(smoothing=SmoothingConfig(enabled=False)))
    try:
        rows = []
        for i, f in enumerate(frames):
            (s,), (r,) = smoothed.detect(f.image, i / fps), raw.detect(f.image, i / fps)
            # what the eyes read from the filtered landmarks (how they were read before)
            from_landmarks = np.mean(eye_openness(s.landmarks))
            rows.append((f.truth.eye_open, np.mean(s.eye_openness), np.mean(r.eye_openness), from_landmarks))
    finally:
        smoothed.close()
        raw.close()
    truth, tracked, unfiltered, landmark_filtered = np.array(rows[15:]).T  # after the filters settle
    open_level = np.median(unfiltered[truth > 0.99])

    def depth(series: np.ndarray) -> float:  # mean of each blink's deepest reading, below the open level
        blinks = np.flatnonzero(truth < 0.5)
        groups = np.split(blinks, np.flatnonzero(np.diff(blinks) > 1) + 1)
        return float(np.mean([open_level - series[g].min() for g in groups if len(g)]))

    assert depth(tracked) > 0.85 * depth(unfiltered), (depth(tracked), depth(unfiltered))
    # and the landmark filter alone would not have done (the test tells the two apart)
    assert depth(landmark_filtered) < 0.8 * depth(unfiltered), (depth(landmark_filtered), depth(unfiltered))


def test_importing_the_face_mesh_defers_matplotlib_until_something_draws():
    """mediapipe imports matplotlib.pyplot (a plotting helper facecast never calls): deferred, it is
    not loaded at start, yet the real module arrives when something uses it."""
    probe = (
        "import sys\n"
        "from facecast.tracking.face_mesh import FaceTracker, TrackingConfig\n"
        "FaceTracker(TrackingConfig())\n"
        "print('loaded_at_start', 'matplotlib.figure' in sys.modules)\n"
        "import importlib.util\n"  # how diffusers asks what is installed: must not fail on a stand-in
        "print('found', importlib.util.find_spec('matplotlib') is not None)\n"
        "from mediapipe.python.solutions import drawing_utils\n"
        "figure = drawing_utils.plt.figure()\n"
        "print('draws', type(figure).__module__, type(sys.modules['matplotlib.pyplot']).__name__)\n"
    )
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    assert "loaded_at_start False" in out.stdout
    assert "found True" in out.stdout
    assert "draws matplotlib.figure module" in out.stdout


def test_the_direct_graph_call_gives_what_process_gives_frame_by_frame():
    """SolutionCall skips the namedtuple class `process` builds per frame; MediaPipe's own `process`,
    on a second graph fed the same frames, is the reference: the same landmarks, bit for bit, frame
    after frame (the graph's tracking state carries from one to the next the same way)."""
    from facecast.tracking.face_mesh import _face_mesh_graph
    from facecast.tracking.mediapipe_solutions import SolutionCall

    frames = synthetic_frames(20, 480, 360, 30.0, SyntheticConfig(yaw_deg=20, period_s=0.6))
    ours, reference = _face_mesh_graph(TrackingConfig(), False), _face_mesh_graph(TrackingConfig(), False)
    call = SolutionCall(ours, "multi_face_landmarks")
    try:
        assert call.direct, "with the pinned mediapipe the graph is called directly"
        for f in frames:
            rgb = cv2.cvtColor(f.image, cv2.COLOR_BGR2RGB)
            got, want = call(rgb), reference.process(rgb).multi_face_landmarks
            assert got is not None and want is not None and len(got) == len(want) == 1
            assert got[0].SerializeToString() == want[0].SerializeToString()
        assert call(np.zeros((360, 480, 3), np.uint8)) is None  # no face: None, as process() gives
    finally:
        ours.close()
        reference.close()
