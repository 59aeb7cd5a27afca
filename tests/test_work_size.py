"""pipeline.work_size: the effect works at the size the outputs need, with the landmarks scaled to
match; tracking stays on the camera's full frame. Real MediaPipe, real outputs' configs, a real
recording."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facecast.assets import CHARACTERS_DIR
from facecast.capture.synthetic import SyntheticConfig, synthetic_frames
from facecast.characters import CharacterLibrary
from facecast.config import ConfigError, load_config
from facecast.effects.animate_mesh import AnimateMesh, AnimateMeshConfig
from facecast.effects.passthrough import Passthrough
from facecast.effects.stage import EffectStage
from facecast.outputs.ndi import NdiOutputConfig
from facecast.outputs.preview import PreviewOutputConfig
from facecast.outputs.record import RecordOutputConfig
from facecast.outputs.virtualcam import VirtualCamOutputConfig
from facecast.pipeline.work_size import WorkSize, work_scale, work_size_for_outputs
from facecast.tracking.face_mesh import TrackingConfig, TrackingStage
from facecast.tracking.one_euro import SmoothingConfig
from facecast.types import FramePacket
from tests.conftest import run_facecast

HD = (1920, 1080)
NDI_720 = NdiOutputConfig(enabled=True, width=1280, height=720)


def size_for(setting: str, outputs: dict, source: tuple[int, int] = HD) -> tuple[int, int]:
    return WorkSize(setting, outputs).size_for(*source)


# -- the rule -------------------------------------------------------------------------------------
def test_auto_is_the_largest_size_the_sized_outputs_need():
    vcam = VirtualCamOutputConfig(enabled=True, width=640, height=360)
    assert size_for("auto", {"ndi": NDI_720, "virtualcam": vcam}) == (1280, 720)
    assert size_for("auto", {"virtualcam": vcam}) == (640, 360)
    # The preview shows what the others get: it asks for no size of its own.
    assert size_for("auto", {"ndi": NDI_720, "preview": PreviewOutputConfig()}) == (1280, 720)


def test_a_recording_keeps_the_cameras_size_and_disabled_outputs_do_not_count():
    record = RecordOutputConfig(enabled=True)
    assert size_for("auto", {"ndi": NDI_720, "record": record}) == HD
    assert size_for("auto", {"ndi": NDI_720, "record": RecordOutputConfig(enabled=False)}) == (1280, 720)
    assert size_for("auto", {"preview": PreviewOutputConfig()}) == HD  # nothing asks for less


def test_never_upscaled_and_the_aspect_is_kept():
    assert size_for("auto", {"ndi": NDI_720}, (640, 480)) == (640, 480)
    assert size_for("1280x720", {}, (640, 480)) == (640, 480)
    assert size_for("1280x720", {}) == (1280, 720)
    assert size_for("1000x1000", {}) == (1000, 562)  # fits inside the box
    assert size_for("source", {"ndi": NDI_720}) == HD


def test_letterbox_fits_the_frame_in_the_box_crop_covers_it():
    four_three = (1440, 1080)
    letterbox = NdiOutputConfig(enabled=True, width=1280, height=720, scaling="letterbox")
    crop = NdiOutputConfig(enabled=True, width=1280, height=720, scaling="crop")
    assert size_for("auto", {"ndi": letterbox}, four_three) == (960, 720)
    assert size_for("auto", {"ndi": crop}, four_three) == (1280, 960)  # no output pixel is upscaled
    assert work_scale("auto", *four_three, [letterbox, crop]) == pytest.approx(1280 / 1440)


def test_the_size_follows_the_outputs_running_now():
    configs = {"ndi": NDI_720, "record": RecordOutputConfig(enabled=True)}
    running: dict = {"ndi": object()}
    work = WorkSize("auto", configs, running=lambda: running)
    assert work.size_for(*HD) == (1280, 720)
    running = {**running, "record": object()}  # a recording started from the live controls
    assert work.size_for(*HD) == HD
    running = {"ndi": object()}
    assert work.size_for(*HD) == (1280, 720)


def test_the_bench_sizes_for_the_configs_own_outputs():
    assert work_size_for_outputs([NDI_720, PreviewOutputConfig()]) == "1280x720"
    assert work_size_for_outputs([NDI_720, RecordOutputConfig(enabled=True)]) == "source"
    assert work_size_for_outputs([PreviewOutputConfig()]) == "source"


@pytest.mark.parametrize("value", ["720p", "1280*720", "01280x720", "32x32", "big", "720"])
def test_a_bad_work_size_is_one_clear_line(value):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"pipeline.work_size={value}"])
    message = str(err.value)
    assert "pipeline.work_size" in message and value in message and "\n" not in message
    assert "auto" in message or "at least" in message


# -- real frames through the real stages ----------------------------------------------------------
@pytest.fixture(scope="module")
def hd_frames():
    still = SyntheticConfig(roll_deg=10, period_s=2.0, blink_period_s=0)
    return synthetic_frames(12, *HD, 30.0, still)


def _tracked(frames, size: tuple[int, int] | None = None) -> list[FramePacket]:
    """The frames (optionally resized first) through the real tracking stage, no smoothing."""
    stage = TrackingStage(TrackingConfig(smoothing=SmoothingConfig(enabled=False)))
    stage.start()
    try:
        packets = []
        for i, frame in enumerate(frames):
            image = frame.image if size is None else cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA)
            packets.append(stage.process(FramePacket(seq=i, image=image, t_capture_ns=i * 33_333_333)))
        return packets
    finally:
        stage.close()


def test_the_effect_gets_720p_with_landmarks_on_the_face(hd_frames):
    """A 1080p camera and a 720p NDI output: passthrough receives 720p frames whose landmarks agree
    with tracking a 720p copy directly (MediaPipe on the full frame, scaled)."""
    effect = EffectStage({"passthrough": Passthrough()}, "passthrough", work_size=WorkSize("auto", {"ndi": NDI_720}))
    effect.start()
    out = [effect.process(p) for p in _tracked(hd_frames)]
    direct = _tracked(hd_frames, (1280, 720))
    assert all(p.image.shape == (720, 1280, 3) for p in out)
    assert effect.effect_input_size == (1280, 720)
    errors = []
    for scaled, small in zip(out, direct, strict=True):
        assert scaled.faces and small.faces
        face, ref = scaled.faces[0], small.faces[0]
        errors.append(np.linalg.norm(face.landmarks[:, :2] - ref.landmarks[:, :2], axis=1))
        x, y, w, h = face.box
        assert 0 <= x and x + w <= 1280 and 0 <= y and y + h <= 720
        assert face.pose.roll == pytest.approx(ref.pose.roll, abs=1.5)
    err = np.concatenate(errors)
    assert np.median(err) < 1.0, f"median landmark distance {np.median(err):.2f} px"
    assert np.percentile(err, 95) < 2.0, f"95th percentile {np.percentile(err, 95):.2f} px"
    # The scaled landmarks sit on the face in the 720p image: the nose tip is where tracking put it.
    full = _tracked(hd_frames[:1])[0]
    assert full.faces is not None
    assert out[0].faces[0].landmarks[1, :2] == pytest.approx(full.faces[0].landmarks[1, :2] * (2 / 3), abs=1e-3)


def test_source_keeps_the_cameras_frame_and_landmarks(hd_frames):
    packets = _tracked(hd_frames[:2])
    before = [p.faces[0].landmarks.copy() for p in packets if p.faces]
    effect = EffectStage({"passthrough": Passthrough()}, "passthrough", work_size=WorkSize("source", {"ndi": NDI_720}))
    out = [effect.process(p) for p in packets]
    assert all(p.image.shape == (1080, 1920, 3) for p in out)
    assert all(np.array_equal(p.faces[0].landmarks, lm) for p, lm in zip(out, before, strict=True) if p.faces)


def test_animate_mesh_is_not_given_a_resized_frame(hd_frames):
    """Animate works from the landmarks and renders at its own size: no resize is spent on it, and
    it is driven by the full-frame landmarks."""
    library = CharacterLibrary(CHARACTERS_DIR)
    assert library.load_all() == []
    animate = AnimateMesh(AnimateMeshConfig(calibration_frames=2), library)
    effect = EffectStage({"animate": animate}, "animate", work_size=WorkSize("auto", {"ndi": NDI_720}))
    effect.start()
    packets = _tracked(hd_frames[:4])
    out = [effect.process(p) for p in packets]
    assert effect.effect_input_size == HD
    assert all(p.image.shape[:2] == (512, 512) for p in out)
    assert all(p.faces and p.faces[0].box[2] > 200 for p in out)  # full-frame pixels, not scaled
    effect.close()


@pytest.mark.parametrize(
    ("work_size", "expected"),
    [("auto", HD), ("1280x720", (1280, 720))],
    ids=["auto-with-a-recording", "explicit-720p"],
)
def test_the_daemons_recording_is_made_at_the_working_size(tmp_path, work_size, expected):
    """The real daemon, a 1080p synthetic camera and a recording: `auto` keeps the recording at the
    camera's size (with a sized output running too: test_the_size_follows_the_outputs_running_now),
    an explicit size is what the effect and the recording get."""
    from facecast.daemon import Daemon

    path = tmp_path / "rec.mp4"
    overrides = [
        "capture.source=synthetic",
        "capture.width=1920",
        "capture.height=1080",
        "capture.synthetic.realtime=false",
        "pipeline.queue_policy=block",
        f"pipeline.work_size={work_size}",
        "effect.active=debug",
        "outputs.preview.enabled=false",
        "outputs.record.enabled=true",
        f"outputs.record.path={path}",
        "outputs.record.timing=frames",
        "control.enabled=false",
        "hotkeys.enabled=false",
        "jobs.enabled=false",
        "stats.interval_s=0",
    ]
    daemon = Daemon(load_config(None, overrides), max_frames=8)
    daemon.start()
    try:
        daemon.pipeline.finished.wait(60)
    finally:
        assert daemon.stop()
    assert daemon.effect.effect_input_size == expected
    cap = cv2.VideoCapture(str(path))
    try:
        assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == expected
    finally:
        cap.release()


def test_the_bench_reports_the_working_size(tmp_path):
    """The real `facecast bench`: the config's NDI output (replaced by the null output) sets the
    working size; the table and the JSON say it."""
    out = tmp_path / "bench.json"
    result = run_facecast(
        "bench",
        "--source",
        "synthetic",
        "--effect",
        "debug",
        "--frames",
        "6",
        "--warmup",
        "2",
        "--set",
        "capture.width=1920",
        "--set",
        "capture.height=1080",
        "--set",
        "outputs.ndi.enabled=true",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "1920x1080 in, effect at 1280x720 (pipeline.work_size 1280x720)" in result.stdout
    report = json.loads(out.read_text())
    assert report["work_size"] == [1280, 720] and report["output_size"] == [1280, 720]
    assert report["pipeline"]["work_size"] == "1280x720"
    assert report["pipeline"]["outputs"] == ["bench (null)"]
