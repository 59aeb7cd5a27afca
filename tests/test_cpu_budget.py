"""The CPU budget of a frame: thread pools sized on purpose, and no per-frame Python work or frame
allocation that can be avoided (issue 19). Behaviour only: the speed itself is measured by
`facecast bench` (cpu_ms_per_frame, docs/PERFORMANCE.md), not by timed tests.
"""

from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from mediapipe.framework.formats import landmark_pb2
from threadpoolctl import threadpool_info

import facecast.pipeline.stats as stats_module
from facecast.config import ConfigError, load_config
from facecast.effects.debug import GREEN, DebugConfig, DebugOverlay
from facecast.pipeline.stats import PipelineStats
from facecast.threads import ThreadsConfig, apply_threads, plan_threads, pools_now
from facecast.tracking.face_mesh import FramePrep, TrackingConfig, _face_mesh_graph, landmarks_from_proto, make_face
from facecast.tracking.one_euro import OneEuroFilter
from facecast.types import NUM_LANDMARKS, FramePacket


# -- thread pools ----------------------------------------------------------------------------------
def test_the_plan_gives_the_neural_models_what_the_stages_leave():
    assert plan_threads(ThreadsConfig(total=8)).as_dict() == {
        "total": 8,
        "opencv": 1,
        "blas": 1,
        "onnxruntime": 7,
        "torch": 7,
    }
    assert plan_threads(ThreadsConfig(total=1)).onnxruntime == 1
    assert plan_threads(ThreadsConfig(), usable=4).total == 4  # auto: the cores this process may use


@pytest.mark.parametrize("value", ["0", "-2", "many", "true"])
def test_a_bad_total_is_one_clear_line(value):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"threads.total={value}"])
    message = str(info.value)
    assert "\n" not in message and "threads.total" in message and "auto" in message


def test_apply_sizes_the_pools_the_libraries_report():
    before_cv, before_blas = (
        cv2.getNumThreads(),
        [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"],
    )
    try:
        apply_threads(plan_threads(ThreadsConfig(total=2)))
        # Asked of OpenCV and of the BLAS libraries themselves (threadpoolctl), not of our plan.
        assert cv2.getNumThreads() == 1
        blas = [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]
        assert blas and all(n == 1 for n in blas)
        assert pools_now()["opencv"] == 1 and pools_now()["blas"] == 1
    finally:
        cv2.setNumThreads(before_cv)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=max(before_blas) if before_blas else None, user_api="blas")


# -- tracking: landmarks without 478 Python objects ---------------------------------------------------
@pytest.fixture(scope="module")
def mediapipe_landmarks(portrait):
    graph = _face_mesh_graph(TrackingConfig(), static_images=True)
    try:
        rgb = cv2.cvtColor(portrait, cv2.COLOR_BGR2RGB)
        return graph.process(rgb).multi_face_landmarks[0]
    finally:
        graph.close()


def test_landmarks_read_from_the_bytes_equal_the_points_read_one_by_one(mediapipe_landmarks):
    w, h = 640, 480
    fast = landmarks_from_proto(mediapipe_landmarks, w, h)
    slow = np.array([(p.x * w, p.y * h, p.z * w) for p in mediapipe_landmarks.landmark], np.float32)
    assert fast.shape == (NUM_LANDMARKS, 3) and fast.dtype == np.float32
    np.testing.assert_array_equal(fast, slow)


def test_landmarks_in_another_layout_are_still_read_right(mediapipe_landmarks):
    # A MediaPipe build that sets visibility serialises each point differently: same numbers.
    other = landmark_pb2.NormalizedLandmarkList()
    other.CopyFrom(mediapipe_landmarks)
    for p in other.landmark:
        p.visibility = 0.9
    np.testing.assert_array_equal(
        landmarks_from_proto(other, 100, 50), landmarks_from_proto(mediapipe_landmarks, 100, 50)
    )
    short = landmark_pb2.NormalizedLandmarkList()
    short.landmark.add(x=0.5, y=0.5, z=0.0)
    with pytest.raises(ValueError, match="478"):
        landmarks_from_proto(short, 100, 100)


def test_the_frame_mediapipe_reads_is_converted_into_one_reused_buffer(portrait):
    prep = FramePrep()
    first = prep(portrait)
    second = prep(np.ascontiguousarray(portrait[:, ::-1]))
    assert second is first  # no full-frame allocation per frame
    assert not second.flags.writeable  # read-only: MediaPipe references it instead of copying
    np.testing.assert_array_equal(second, cv2.cvtColor(np.ascontiguousarray(portrait[:, ::-1]), cv2.COLOR_BGR2RGB))
    assert prep(portrait[:100, :120]).shape == (100, 120, 3)  # another size: a new buffer


def test_smoothing_keeps_float32_landmarks_float32():
    f = OneEuroFilter(min_cutoff=1.0, beta=0.05)
    x = np.random.default_rng(0).normal(100, 1, (NUM_LANDMARKS, 3)).astype(np.float32)
    out = [f(x + i, i / 60) for i in range(3)]
    assert all(o.dtype == np.float32 and o.shape == x.shape for o in out)
    assert out[0] is not out[1]  # the caller may keep each frame's landmarks


# -- stats: nothing heavy under the lock every stage takes ----------------------------------------
def test_a_snapshot_never_holds_up_the_stages_recording(monkeypatch):
    stats = PipelineStats(("capture", "tracking", "effect", "output"), window=600)
    for i in range(600):
        stats.record_stage("tracking", 1000, 5_000_000 + i)
    real = stats_module.percentiles

    def slow_percentiles(samples):  # a snapshot that takes long to compute its figures
        time.sleep(0.05)
        return real(samples)

    monkeypatch.setattr(stats_module, "percentiles", slow_percentiles)
    reader = threading.Thread(target=stats.snapshot)
    reader.start()
    time.sleep(0.02)  # the snapshot is computing now
    t0 = time.perf_counter()
    stats.record_stage("effect", 1000, 3_000_000)  # what every stage does on every frame
    waited = time.perf_counter() - t0
    reader.join()
    # The snapshot's figures take 9 x 50 ms; recording waited for none of it.
    assert waited < 0.04, f"recording a stage waited {waited * 1000:.0f} ms for a snapshot"


def test_live_figures_and_fps_are_still_right():
    stats = PipelineStats(("capture", "output"), window=100)
    packet = FramePacket(seq=0, image=np.zeros((2, 2, 3), np.uint8), t_capture_ns=0)
    for i in range(61):  # 60 fps for one second, 10 ms latency each
        packet.t_capture_ns = int(i / 60 * 1e9)
        stats.record_output(packet, packet.t_capture_ns + 10_000_000)
    fps, latency = stats.live_figures()
    assert fps == pytest.approx(60.0, rel=1e-6) and latency == pytest.approx(10.0)
    assert stats.snapshot()["fps"] == pytest.approx(60.0)


# -- the debug overlay: one numpy assignment, drawn on the packet's own frame ------------------------
def test_the_overlay_draws_every_landmark_on_the_packets_own_frame(portrait):
    rng = np.random.default_rng(1)
    lm = np.column_stack(
        [rng.uniform(5, 630, NUM_LANDMARKS), rng.uniform(5, 470, NUM_LANDMARKS), np.zeros(NUM_LANDMARKS)]
    ).astype(np.float32)
    lm[0] = (-20, 900, 0)  # off the frame: skipped, not an error
    face = make_face(lm, 640, 480)
    frame = np.zeros((480, 640, 3), np.uint8)
    overlay = DebugOverlay(DebugConfig(pose=False, fps=False))
    out = overlay.apply(FramePacket(seq=0, image=frame, t_capture_ns=0, faces=[face]))
    assert out is frame  # no full-frame copy
    xs, ys = np.rint(lm[1:, 0]).astype(int), np.rint(lm[1:, 1]).astype(int)
    drawn = out[ys, xs]
    iris = {468, 473}
    plain = [i - 1 for i in range(1, NUM_LANDMARKS) if i not in iris]
    assert (drawn[plain] == GREEN).all(axis=1).mean() > 0.95  # the rest sit under another point or an iris dot
    assert (out[ys, np.clip(xs + 1, 0, 639)] == GREEN).all(axis=1).mean() > 0.9  # dots, not single pixels
    # On BGRA (the overlay over a transparent effect), drawn pixels become opaque.
    bgra = np.zeros((480, 640, 4), np.uint8)
    over = overlay.draw_over(bgra, FramePacket(seq=0, image=frame, t_capture_ns=0, faces=[face]))
    assert over is not bgra and over[ys[5], xs[5], 3] == 255 and over[0, 0, 3] == 0


def test_the_overlay_copies_a_frame_it_cannot_draw_on(portrait):
    locked = np.zeros((120, 160, 3), np.uint8)
    locked.flags.writeable = False
    out = DebugOverlay(DebugConfig()).apply(FramePacket(seq=0, image=locked, t_capture_ns=0, faces=[]))
    assert out is not locked and not locked.any() and out.any()  # "no face" written on the copy
