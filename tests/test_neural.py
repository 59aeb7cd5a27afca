"""LivePortrait and inswapper pipelines end to end on the ONNX fixtures and real MediaPipe landmarks."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from facecast.engines.onnxruntime import EngineConfig
from facecast.engines.pool import EnginePool
from facecast.neural.crop import CROP_POINTS, crop_transform, paste_region
from facecast.neural.faceswap import TEMPLATE_112, InSwapper, alignment, five_points, read_emap, source_latent
from facecast.neural.liveportrait import (
    SOURCE_CROP,
    LivePortrait,
    Motion,
    angle_from_logits,
    keypoints,
    relative_keypoints,
    rotation,
)
from facecast.tracking.face_mesh import track_image
from tests.neural_fixtures import make_models


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def pool(models_dir, tmp_path_factory) -> EnginePool:
    return EnginePool(models_dir, EngineConfig(cache_dir=tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def face(portrait):
    return track_image(portrait)[0]


def test_crop_lands_on_the_face(face):
    m = crop_transform(face.landmarks, 256, *SOURCE_CROP)
    pts = np.hstack([face.landmarks[:, :2], np.ones((478, 1))]) @ m.T
    box = pts[CROP_POINTS]  # brows to chin, ear to ear: the extent the crop rule is calibrated on
    centre = (box.min(axis=0) + box.max(axis=0)) / 2
    # vy_ratio -0.125: the crop centre moves towards the forehead by 1/8 of the crop side, so the face
    # box sits that much below the crop's centre (the hair and forehead fit in)
    assert np.allclose(centre, [128, 128 + 0.125 * 256], atol=256 * 0.03)
    side = (box.max(axis=0) - box.min(axis=0)).max()
    assert side == pytest.approx(256 / SOURCE_CROP[0], rel=0.05)  # face size = crop / scale
    eyes = pts[[33, 263]]
    assert abs(eyes[0, 1] - eyes[1, 1]) < 2.0  # eyes levelled


def test_angles_and_rotation_follow_the_published_formulas():
    one_hot = np.full(66, -50.0)
    one_hot[40] = 50.0
    assert angle_from_logits(one_hot) == pytest.approx(40 * 3 - 97.5, abs=1e-6)
    r = rotation(0, 90, 0)
    assert np.allclose(np.array([1.0, 0, 0]) @ r, [0, 0, -1], atol=1e-9)  # row vector times R
    assert np.allclose(rotation(10, 20, 30) @ rotation(10, 20, 30).T, np.eye(3))


def _motion(yaw: float, rng) -> Motion:
    kp = rng.standard_normal((21, 3)) * 0.1
    return Motion(0.0, yaw, 0.0, rotation(0.0, yaw, 0.0), np.zeros(3), np.zeros((21, 3)), 1.0, kp)


def test_more_driving_yaw_gives_a_different_keypoint_set():
    rng = np.random.default_rng(0)
    src, neutral = _motion(0.0, rng), _motion(0.0, rng)
    neutral.kp = src.kp
    same = relative_keypoints(src, neutral, neutral)
    assert np.allclose(same, keypoints(src))  # driver at its neutral pose: the source as it is
    turned = [relative_keypoints(src, _with_yaw(neutral, y), neutral) for y in (10.0, 25.0)]
    moved = [np.abs(t - same).mean() for t in turned]
    assert 0 < moved[0] < moved[1]  # more yaw, further from the source keypoints
    halved = relative_keypoints(src, _with_yaw(neutral, 25.0), neutral, pose_multiplier=0.5)
    assert np.abs(halved - same).mean() == pytest.approx(moved[0] * 25 / 20, rel=0.35)


def _with_yaw(m: Motion, yaw: float) -> Motion:
    return Motion(m.pitch, yaw, m.roll, rotation(m.pitch, yaw, m.roll), m.t, m.exp, m.scale, m.kp)


def test_liveportrait_runs_end_to_end_and_pastes_only_into_the_face_box(pool, portrait, face):
    lp = LivePortrait(pool)
    src = lp.prepare_source(portrait, face.landmarks, face.eye_openness, face.mouth_openness)
    assert src.feature.shape == (1, 32, 16, 64, 64) and src.x_s.shape == (21, 3)
    driver = cv2.flip(portrait, 1)  # a different face pose for the motion extractor
    driver_face = track_image(driver)[0]
    neutral, _ = lp.extract_motion(portrait, face.landmarks, (2.2, -0.1))
    drv, _ = lp.extract_motion(driver, driver_face.landmarks, (2.2, -0.1))
    x_still = lp.driving_keypoints(src, neutral, neutral)
    x_moved = lp.driving_keypoints(src, drv, neutral, eye_ratio=0.1, lip_ratio=0.4)
    assert not np.allclose(x_still, x_moved)
    generated = lp.generate(src, x_moved)
    assert generated.shape == (512, 512, 3)
    out = lp.paste_back(src, generated)
    x0, y0, x1, y1 = paste_region(src.m_c2o, 512, portrait.shape[:2])
    changed = np.argwhere(np.any(out != portrait, axis=2))
    assert changed.size and changed[:, 0].min() >= y0 and changed[:, 0].max() < y1
    assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
    fx, fy, fw, fh = face.box
    assert x0 <= fx and y0 <= fy and x1 >= fx + fw and y1 >= fy + fh  # the region covers the face


def test_inswapper_uses_the_emap_from_the_file_and_swaps_inside_the_face_box(pool, portrait, face, models_dir):
    swapper = InSwapper(pool)
    stored = numpy_helper.to_array(onnx.load(str(models_dir / "inswapper_128.onnx")).graph.initializer[-1])
    assert np.array_equal(swapper.emap, stored)
    emb = pool.get("w600k_r50").run({"input.1": np.zeros((1, 3, 112, 112), np.float32) + 0.5})["683"]
    assert np.allclose(
        source_latent(emb, stored),
        (emb / np.linalg.norm(emb)) @ stored / np.linalg.norm((emb / np.linalg.norm(emb)) @ stored),
        atol=1e-5,
    )
    m = alignment(five_points(face.landmarks), TEMPLATE_112)
    aligned = np.hstack([five_points(face.landmarks), np.ones((5, 1))]) @ m.T
    assert np.abs(aligned - TEMPLATE_112).max() < 8.0  # on the template (MediaPipe's nose tip sits ~6 px higher)

    latent = swapper.latent_for(portrait, face.landmarks)
    frame = portrait.copy()
    assert swapper.swap_face(frame, face.landmarks, latent, keep_mouth=True)
    changed = np.argwhere(np.any(frame != portrait, axis=2))
    fx, fy, fw, fh = face.box
    pad = 0.35 * max(fw, fh)
    assert changed.size > 0.3 * fw * fh  # the face really changed
    assert changed[:, 1].min() >= fx - pad and changed[:, 1].max() <= fx + fw + pad
    assert changed[:, 0].min() >= fy - pad and changed[:, 0].max() <= fy + fh + pad


def test_a_nan_output_triggers_the_fp32_fallback_and_leaves_the_frame(portrait, face, tmp_path):
    nan_dir = make_models(tmp_path / "nan", nan_swapper=True)
    pool = EnginePool(nan_dir, EngineConfig(cache_dir=tmp_path / "cache"))
    swapper = InSwapper(pool)
    frame = portrait.copy()
    ok = swapper.swap_face(frame, face.landmarks, swapper.latent_for(portrait, face.landmarks))
    assert not ok and swapper.fell_back and swapper.bad_outputs == 2
    assert swapper.swapper is pool.get("inswapper_128", precision="fp32")
    assert np.array_equal(frame, portrait)  # no NaN face pasted


def test_read_emap_refuses_a_file_without_one(models_dir):
    with pytest.raises(Exception, match="emap"):
        read_emap(models_dir / "liveportrait_onnx" / "stitching.onnx")
