"""`animate` (mesh backend) end to end with the real MediaPipe model: the synthetic driver's known
yaw, mouth and blinks go in, the animated character is re-tracked, its motion must follow."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from facecast.assets import CHARACTERS_DIR
from facecast.capture.synthetic import SyntheticConfig, SyntheticReader
from facecast.characters import CharacterLibrary
from facecast.effects import warp
from facecast.effects.animate_mesh import (
    CLOSED_DEFAULT,
    AnimateMesh,
    AnimateMeshConfig,
    EyeCalibration,
    MeshRig,
    Retargeter,
    RigParams,
)
from facecast.tracking.face_mesh import FaceTracker, TrackingConfig, make_face, track_image
from facecast.tracking.geometry import pose_from_rotation
from facecast.tracking.one_euro import SmoothingConfig
from facecast.types import FramePacket

FPS = 30.0


@pytest.fixture(scope="module")
def library() -> CharacterLibrary:
    lib = CharacterLibrary(CHARACTERS_DIR)
    assert lib.load_all() == []
    return lib


@pytest.fixture(scope="module")
def driven(library):
    """120 synthetic driver frames -> tracker -> animate -> re-tracked output, with the truth."""
    cfg = SyntheticConfig(
        roll_deg=8,
        yaw_deg=20,
        pitch_deg=0,
        blink_period_s=1.0,
        blink_s=0.4,
        mouth=0.3,
        mouth_period_s=1.7,
        zoom=0.0,
        shift=0.02,
    )
    reader = SyntheticReader(cfg, 480, 360, FPS)
    reader.open()
    effect = AnimateMesh(AnimateMeshConfig(background="original", calibration_frames=3), library)
    effect.start()
    driver_tracker = FaceTracker(TrackingConfig(smoothing=SmoothingConfig(enabled=False)))
    output_tracker = FaceTracker(TrackingConfig(smoothing=SmoothingConfig(enabled=False)))
    rows = []
    try:
        for i in range(120):
            frame = reader.render(i)
            faces = driver_tracker.detect(frame.image, i / FPS)
            out = effect.apply(FramePacket(seq=i, image=frame.image, t_capture_ns=int(i / FPS * 1e9), faces=faces))
            assert out.shape == (512, 512, 3)
            seen = output_tracker.detect(out, i / FPS)
            assert len(seen) == 1, f"the animated character lost its face at frame {i}"
            rows.append((frame.truth, seen[0]))
    finally:
        driver_tracker.close()
        output_tracker.close()
    return rows[5:]  # after the neutral pose is taken


def test_output_yaw_follows_the_drivers_yaw(driven):
    truth = np.array([t.yaw_deg for t, _ in driven])
    seen = np.array([f.pose.yaw for _, f in driven])
    assert np.corrcoef(truth, seen)[0, 1] > 0.85
    assert np.polyfit(truth, seen, 1)[0] > 0.25  # it turns, not just twitches (two warps: driver and output)


def test_output_roll_follows_the_drivers_roll(driven):
    truth = np.array([t.roll_deg for t, _ in driven])
    seen = np.array([f.pose.roll for _, f in driven])
    assert np.corrcoef(truth, seen)[0, 1] > 0.9


def test_output_mouth_follows_the_drivers_mouth(driven):
    truth = np.array([t.mouth_open for t, _ in driven])
    seen = np.array([f.mouth_openness for _, f in driven])
    assert np.corrcoef(truth, seen)[0, 1] > 0.85


def test_closed_eyes_in_the_driver_close_the_characters_eyes(driven):
    closed = [np.mean(f.eye_openness) for t, f in driven if t.eye_open < 0.2]
    opened = [np.mean(f.eye_openness) for t, f in driven if t.eye_open > 0.99]
    assert len(closed) >= 3 and len(opened) >= 30
    assert np.median(closed) < 0.6 * np.median(opened)


def test_output_eyes_follow_the_drivers_blinks(driven):
    # Not only shut vs open: the character's eye openness, read back, follows the driver's through the
    # whole blink (closing, shut, opening).
    truth = np.array([t.eye_open for t, _ in driven])
    seen = np.array([np.mean(f.eye_openness) for _, f in driven])
    assert np.corrcoef(truth, seen)[0, 1] > 0.9  # 0.88 with the squashing eyelids and the 0.85 dead zone


@pytest.fixture(scope="module")
def rig_reader(library):
    """Renders the rig with given params and reads the result back with the real tracker."""
    character = library.active
    rig = MeshRig(character.image, character.matte, character.landmarks, 512, 512)
    tracker = FaceTracker(TrackingConfig(smoothing=SmoothingConfig(enabled=False)), static_images=True)

    def read(**params):
        faces = tracker.detect(np.ascontiguousarray(rig.render(RigParams(**params))[:, :, :3]))
        assert len(faces) == 1
        return faces[0]

    yield read
    tracker.close()


def test_one_eye_closes_in_proportion_to_its_openness(rig_reader):
    # The eyelid model: the upper lid slides over the eye, so what the tracker reads goes down in a
    # straight line with the rig's eye openness (a warp that squashes the eye reads as open until
    # it is nearly shut), and only that eye moves.
    levels = [1.0, 0.75, 0.5, 0.25, 0.0]
    faces = [rig_reader(eyes=(e, 1.0)) for e in levels]
    left = np.array([f.eye_openness[0] for f in faces])
    right = np.array([f.eye_openness[1] for f in faces])
    assert np.corrcoef(levels, left)[0, 1] > 0.95
    assert left[2] < 0.75 * left[0], "half-closed must read clearly less open than open"
    assert left[-1] < 0.35 * left[0], "shut must read shut"
    assert np.all(np.abs(right - right[0]) < 0.12 * right[0]), "the other eye stays as it is"


def test_nods_read_back_about_as_strongly_as_turns(rig_reader):
    base = rig_reader()
    pitch = [rig_reader(pitch=p).pose.pitch - base.pose.pitch for p in (-10.0, 10.0)]
    yaw = [rig_reader(yaw=y).pose.yaw - base.pose.yaw for y in (-10.0, 10.0)]
    pitch_gain, yaw_gain = (pitch[1] - pitch[0]) / 20, (yaw[1] - yaw[0]) / 20
    # A 2-D warp of a flat portrait reads back about half of a nod given as is (0.45 here), well
    # below a turn (0.78): the rig renders nods larger so they show as turns do.
    assert pitch_gain > 0.55 and pitch_gain > 0.7 * yaw_gain, (pitch_gain, yaw_gain)


def test_raised_brows_do_not_read_as_a_nod(library):
    # The forehead's points move against the skull: raised brows pull its skin, and MediaPipe places
    # them, far from the features, with depth that drifts (on real videos 0.02 eye widths RMS in
    # height and in depth, more than any other point of warp.RIGID). The puppet's angles come from the
    # points that stay with the skull (warp.POSE), so the character does not nod when the performer
    # only raises their brows; a fit over all of warp.RIGID read it as a nod.
    character = library.active
    h, w = character.image.shape[:2]
    rig = MeshRig(character.image, character.matte, character.landmarks, 512, 512)
    lm = np.asarray(character.landmarks, np.float64)
    eye_span = float(np.linalg.norm(lm[33, :2] - lm[263, :2]))
    raised = lm.copy()
    raised[warp.BROW_LEFT + warp.BROW_RIGHT, 1] -= 0.12 * eye_span
    forehead = [10, 151, 9, 109, 338, 103, 332, 54, 284, 21, 251, *warp.FOREHEAD]
    raised[forehead, 1] -= 0.06 * eye_span
    raised[forehead, 2] += 0.06 * eye_span
    retarget = Retargeter(AnimateMeshConfig(calibration_frames=1))
    retarget.update(make_face(lm.astype(np.float32), w, h), 0.0, rig)  # the neutral pose
    params = retarget.update(make_face(raised.astype(np.float32), w, h), 1 / 60, rig)
    assert abs(params.pitch) < 0.5 and abs(params.yaw) < 0.5, (params.pitch, params.yaw)
    rigid_fit = pose_from_rotation(warp.kabsch(lm[warp.RIGID], raised[warp.RIGID])[1])
    assert abs(rigid_fit.pitch) > 2.0, rigid_fit  # what the whole rigid set read


def test_eye_calibration_is_per_performer():
    for open_level in (0.18, 0.4):  # narrow and wide eyes read differently; both map to the same rig eye
        eye = EyeCalibration(open_level)
        assert eye(open_level, 1 / 60) == pytest.approx(1.0)
        closed = CLOSED_DEFAULT * open_level
        assert eye(closed, 1 / 60) == pytest.approx(0.0, abs=1e-6)
        half = eye((open_level + closed) / 2, 1 / 60)
        assert half == pytest.approx(0.5, abs=0.02)


def test_eye_calibration_learns_the_performers_closed_reading_from_a_held_blink():
    eye = EyeCalibration(0.3)
    eye(0.3, 1 / 60)
    eye(0.03, 1 / 60)  # one low frame: tracker noise, not a blink
    assert eye.closed == pytest.approx(CLOSED_DEFAULT * 0.3, rel=0.01)
    for _ in range(4):  # a blink held for a few frames: this performer's shut eyes read 0.06
        eye(0.06, 1 / 60)
    assert eye.closed == pytest.approx(0.06, rel=0.01)
    assert eye(0.06, 1 / 60) == pytest.approx(0.0, abs=0.01)  # their shut eye is fully shut now
    for _ in range(600):  # ten seconds open: the learned level drifts back toward the default
        eye(0.3, 1 / 60)
    assert 0.06 < eye.closed < CLOSED_DEFAULT * 0.3


def _face(image):
    faces = track_image(image)
    assert faces
    return faces[0]


def test_eases_back_to_neutral_when_the_face_is_lost(library):
    character = library.active
    effect = AnimateMesh(
        AnimateMeshConfig(background="original", calibration_frames=1, return_to_neutral_s=0.2), library
    )
    neutral_face = _face(character.image)
    turned = MeshRig(character.image, None, character.landmarks, *character.size).render(RigParams(yaw=25, mouth=0.3))
    turned_face = _face(turned[:, :, :3])
    effect.apply(FramePacket(seq=0, image=character.image, t_capture_ns=0, faces=[neutral_face]))  # calibrates
    posed = effect.apply(FramePacket(seq=1, image=turned, t_capture_ns=33_000_000, faces=[turned_face]))
    rest = MeshRig(character.image, character.matte, character.landmarks, 512, 512).render(RigParams())[:, :, :3]
    assert np.abs(posed.astype(int) - rest).mean() > 3
    diffs = []
    for k in range(2, 40):
        out = effect.apply(FramePacket(seq=k, image=turned, t_capture_ns=k * 33_000_000, faces=[]))
        diffs.append(np.abs(out.astype(int) - rest).mean())
    assert diffs[0] > 1.0, "one frame without a face must not snap back"
    assert diffs[-1] < 0.3, "after about a second without a face the character is neutral again"
    assert all(b <= a + 0.05 for a, b in itertools.pairwise(diffs))


def test_background_modes_and_alpha(library):
    character = library.active
    packet = FramePacket(seq=0, image=character.image, t_capture_ns=0, faces=[])
    transparent = AnimateMesh(AnimateMeshConfig(), library).apply(packet)
    assert transparent.shape == (512, 512, 4)
    x, y = character.landmarks[1, :2].astype(int)
    assert transparent[y, x, 3] == 255 and transparent[5, 500, 3] < 30
    green = AnimateMesh(AnimateMeshConfig(background="color", background_color=(0, 255, 0)), library).apply(packet)
    assert green.shape == (512, 512, 3)
    assert green[5, 500, 1] > 200 and green[5, 500, 0] < 60
    small = AnimateMesh(AnimateMeshConfig(width=320, height=240), library).apply(packet)
    assert small.shape == (240, 320, 4)


def test_switching_character_takes_effect_on_the_next_frame(tmp_path):
    import shutil

    import cv2

    from tests.conftest import PORTRAIT

    shutil.copy(PORTRAIT, tmp_path / "a.png")
    cv2.imwrite(str(tmp_path / "b.png"), cv2.flip(cv2.imread(str(PORTRAIT)), 1))
    lib = CharacterLibrary(tmp_path)
    assert lib.load_all() == []
    effect = AnimateMesh(AnimateMeshConfig(background="original"), lib)
    effect.start()
    packet = FramePacket(seq=0, image=lib.active.image, t_capture_ns=0, faces=[])
    first = effect.apply(packet)
    lib.select("b")
    second = effect.apply(packet)
    assert np.abs(first.astype(int) - cv2.flip(second, 1)).mean() < 2.0  # the mirrored portrait


def test_no_character_shows_a_message_instead_of_failing(tmp_path):
    lib = CharacterLibrary(tmp_path)
    assert lib.load_all() == []
    out = AnimateMesh(AnimateMeshConfig(), lib).apply(
        FramePacket(seq=0, image=np.zeros((240, 320, 3), np.uint8), t_capture_ns=0, faces=[])
    )
    assert out.shape == (512, 512, 4) and out[:, :, 3].any()
