"""tracking.max_fps: the face mesh reads some frames, the frames between get predicted faces."""

from __future__ import annotations

import numpy as np
import pytest

from facecast.capture.synthetic import SyntheticConfig, synthetic_frames
from facecast.tracking.face_mesh import TrackingConfig, TrackingStage
from facecast.tracking.geometry import face_box
from facecast.tracking.prediction import MAX_SPAN_S, FacePredictor
from facecast.types import Face, FramePacket, HeadPose


def _face(lm: np.ndarray, pitch: float, eyes: tuple[float, float], mouth: float) -> Face:
    return Face(
        landmarks=lm.astype(np.float32),
        pose=HeadPose(pitch=pitch, yaw=2 * pitch, roll=-pitch),
        eye_openness=eyes,
        mouth_openness=mouth,
        box=face_box(lm.astype(np.float32), 640, 480),
    )


def test_a_predicted_face_moves_each_number_on_at_its_last_speed():
    rng = np.random.default_rng(3)
    lm0 = rng.uniform(200, 300, (478, 3))
    step = rng.normal(0, 2, (478, 3))
    predictor = FacePredictor()
    predictor.tracked(0.0, [_face(lm0, 1.0, (0.30, 0.28), 0.10)])
    predictor.tracked(1 / 30, [_face(lm0 + step, 2.0, (0.20, 0.26), 0.15)])
    (half,) = predictor.predict(1 / 30 + 1 / 60, 640, 480)
    expected = (lm0 + 1.5 * step).astype(np.float32)
    np.testing.assert_allclose(half.landmarks, expected, atol=1e-3)
    assert half.pose.pitch == pytest.approx(2.5) and half.pose.yaw == pytest.approx(5.0)
    assert half.pose.roll == pytest.approx(-2.5)
    assert half.eye_openness == pytest.approx((0.15, 0.25)) and half.mouth_openness == pytest.approx(0.175)
    assert half.box == face_box(expected, 640, 480)
    # carried for one tracked interval at most, and never below closed
    (late,) = predictor.predict(1.0, 640, 480)
    np.testing.assert_allclose(late.landmarks, lm0 + 2 * step, atol=1e-3)
    assert late.eye_openness == pytest.approx((0.10, 0.24))
    predictor.tracked(2 / 30, [_face(lm0 + 2 * step, 3.0, (0.02, 0.26), 0.15)])
    (shut,) = predictor.predict(2 / 30 + 1 / 30, 640, 480)
    assert shut.eye_openness[0] == 0.0


def test_faces_are_paired_by_place_not_by_the_order_mediapipe_gives():
    left, right = np.full((478, 3), 100.0), np.full((478, 3), 500.0)
    predictor = FacePredictor()
    predictor.tracked(0.0, [_face(left, 0, (0.3, 0.3), 0), _face(right, 0, (0.3, 0.3), 0)])
    predictor.tracked(0.1, [_face(right + 10, 0, (0.3, 0.3), 0), _face(left - 10, 0, (0.3, 0.3), 0)])
    a, b = predictor.predict(0.15, 640, 480)
    assert a.landmarks[0, 0] == pytest.approx(515) and b.landmarks[0, 0] == pytest.approx(85)


def test_without_a_speed_to_trust_the_last_faces_are_held():
    lm = np.full((478, 3), 200.0)
    predictor = FacePredictor()
    assert predictor.predict(0.0, 640, 480) == []
    first = _face(lm, 0, (0.3, 0.3), 0)
    predictor.tracked(0.0, [first])
    assert predictor.predict(0.02, 640, 480) == [first]  # one tracked frame: no speed yet
    second = _face(lm + 5, 0, (0.3, 0.3), 0)
    predictor.tracked(MAX_SPAN_S + 0.01, [second])  # a gap (a lost face, a stalled camera)
    assert predictor.predict(MAX_SPAN_S + 0.03, 640, 480) == [second]
    predictor.tracked(MAX_SPAN_S + 0.04, [second, first])  # a face came in
    assert predictor.predict(MAX_SPAN_S + 0.05, 640, 480) == [second, first]
    predictor.tracked(MAX_SPAN_S + 0.06, [])
    assert predictor.predict(MAX_SPAN_S + 0.07, 640, 480) == []


@pytest.mark.parametrize(
    "camera_fps, max_fps, jitter_ms, tracked_every",
    [(60, 30, 0, 2), (60, 30, 3, 2), (60, 20, 2, 3), (30, 30, 3, 1), (60, 0, 0, 1)],
)
def test_the_face_mesh_reads_frames_at_most_max_fps(camera_fps, max_fps, jitter_ms, tracked_every):
    stage = TrackingStage(TrackingConfig(max_fps=max_fps))
    stage.start()
    blank = np.zeros((120, 160, 3), np.uint8)
    jitter = np.random.default_rng(0).uniform(-jitter_ms, jitter_ms, 24) * 1e6
    read = []
    try:
        for i in range(24):
            before = stage.tracked_frames
            stage.process(FramePacket(seq=i, image=blank, t_capture_ns=int(i * 1e9 / camera_fps + jitter[i])))
            read.append(stage.tracked_frames > before)
    finally:
        stage.close()
    assert read == [i % tracked_every == 0 for i in range(24)]
    assert stage.tracked_frames + stage.predicted_frames == 24


def test_a_frame_of_another_size_or_from_before_the_last_read_is_read():
    """A reopened camera's first frame (another size: the last faces are in the old pixels) and a
    frame stamped before the last read one (a clock step) are read although max_fps says not yet."""
    stage = TrackingStage(TrackingConfig(max_fps=30))  # next read due 25 ms after the last
    stage.start()
    small, large = np.zeros((120, 160, 3), np.uint8), np.zeros((240, 320, 3), np.uint8)
    frames = [(small, 0), (small, 16), (large, 20), (large, 30), (large, 10)]
    read = []
    try:
        for i, (image, t_ms) in enumerate(frames):
            before = stage.tracked_frames
            stage.process(FramePacket(seq=i, image=image, t_capture_ns=int(t_ms * 1e6)))
            read.append(stage.tracked_frames > before)
    finally:
        stage.close()
    assert read == [True, False, True, False, True]


def test_predicted_faces_are_nearer_the_tracker_than_the_last_tracked_ones():
    """A 60 fps camera tracked at 30 Hz: on each frame between, the predicted landmarks against what
    the face mesh itself reads on that frame (a second stage reading every frame), and against
    holding the last tracked landmarks. The head turns, nods, rolls and moves (synthetic driver)."""
    fps = 60.0
    cfg = SyntheticConfig(yaw_deg=20, pitch_deg=10, roll_deg=10, period_s=1.5, blink_period_s=0)
    frames = synthetic_frames(90, 640, 480, fps, cfg)
    paced, every = TrackingStage(TrackingConfig(max_fps=30)), TrackingStage(TrackingConfig())
    paced.start()
    every.start()
    predicted, held, last = [], [], None
    try:
        for i, f in enumerate(frames):
            t_ns = int(i * 1e9 / fps)
            before = paced.tracked_frames
            (p,) = paced.process(FramePacket(seq=i, image=f.image, t_capture_ns=t_ns)).faces or [None]
            (e,) = every.process(FramePacket(seq=i, image=f.image, t_capture_ns=t_ns)).faces or [None]
            assert p is not None and e is not None, f"frame {i}: the face must be found"
            if paced.tracked_frames > before:
                last = p
            elif i > 20 and last is not None:  # after the filters settle
                predicted.append(np.linalg.norm(p.landmarks[:, :2] - e.landmarks[:, :2], axis=1).mean())
                held.append(np.linalg.norm(last.landmarks[:, :2] - e.landmarks[:, :2], axis=1).mean())
    finally:
        paced.close()
        every.close()
    assert paced.predicted_frames == 45 and len(predicted) >= 30
    assert np.mean(predicted) < 0.6 * np.mean(held), (np.mean(predicted), np.mean(held))
