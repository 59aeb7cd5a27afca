"""The face enhancer step of `swap`, run by onnxruntime on ONNX test fixtures with the real models'
contracts (tools/make_test_models.py: a per-channel sharpening network, not a restoration model):
alignment to the FFHQ template, the contract check at load, offline on every frame, live on its own
thread (latest face wins, detail carried onto the frames in between and moved with the face), the
blend setting, unusable outputs, a missing model."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from facecast.characters.library import CharacterAnalyser, CharactersConfig, prepare_character
from facecast.effects.enhancer import EnhanceConfig, FaceEnhancerStep
from facecast.effects.swap_mesh import SwapMesh, SwapMeshConfig
from facecast.engines.contracts import ContractError
from facecast.engines.onnxruntime import EngineConfig
from facecast.engines.pool import EnginePool, ModelsMissing
from facecast.neural import enhance
from facecast.neural.faceswap import five_points
from facecast.tracking.face_mesh import track_image
from facecast.types import FramePacket
from tests.conftest import PORTRAIT, OneCharacter
from tests.neural_fixtures import make_models, make_test_models


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def pool(models_dir, tmp_path_factory) -> EnginePool:
    return EnginePool(models_dir, EngineConfig(cache_dir=tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def portrait():
    """The bundled portrait at twice its size: its face then fills the enhancers' 512 crop about 1:1."""
    image = cv2.resize(cv2.imread(str(PORTRAIT)), None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    return image, track_image(image)[0]


@pytest.fixture(scope="module")
def character():
    analyser = CharacterAnalyser()
    try:
        image = cv2.flip(cv2.imread(str(PORTRAIT)), 1)  # a source different from the target pixels
        return prepare_character(
            cv2.imencode(".png", image)[1].tobytes(), Path("src.png"), CharactersConfig(), analyser
        )
    finally:
        analyser.close()


def high_frequency(image: np.ndarray, mask: np.ndarray) -> float:
    """Energy of the Laplacian inside `mask`: what a sharpening model adds."""
    return float(np.abs(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_32F))[mask].mean())


def face_mask(shape, face) -> np.ndarray:
    from facecast.effects import warp

    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(face.landmarks[warp.FACE_OVAL, :2]).astype(np.int32)], (255,))
    return cv2.erode(mask, np.ones((15, 15), np.uint8)) > 0


def test_alignment_puts_the_five_points_on_the_ffhq_template(portrait):
    image, face = portrait
    for size in (256, 512):
        _, m = enhance.align(image, face.landmarks, size)
        points = np.hstack([five_points(face.landmarks), np.ones((5, 1))]) @ m.T
        # A similarity fit of 5 points: the eyes land within 1.2% of the crop, the smiling mouth's
        # corners and MediaPipe's nose tip (a little lower than FFHQ's) within 3.3% (measured).
        err = np.linalg.norm(points - enhance.TEMPLATE_FFHQ * size, axis=1)
        assert err[:2].max() < 0.015 * size and err.max() < 0.04 * size


def test_every_enhancer_fixture_passes_its_contract_at_load(pool):
    for key in enhance.ENHANCERS:
        engine = pool.get(key)
        assert engine.precision == "fp32"  # GFPGAN in FP16 gives a solid colour: enhancers stay FP32


def test_a_file_with_the_wrong_tensors_is_refused_at_load(tmp_path):
    make_models(tmp_path, rename=("gfpgan_1.4.onnx", "output", "restored"))
    with pytest.raises(ContractError, match="no output tensor named 'output'"):
        EnginePool(tmp_path, EngineConfig(cache_dir=tmp_path / "cache")).get("gfpgan_1.4")


@pytest.mark.parametrize("model", ["gfpgan_1.4", "gpen_bfr_256", "gpen_bfr_512", "restoreformer_pp"])
def test_offline_every_frame_is_enhanced_inside_the_face_only(pool, portrait, model):
    image, face = portrait
    step = FaceEnhancerStep(EnhanceConfig(model=model, blend=1.0), lambda: pool)
    step.start(offline=True, priority="batch")
    try:
        outs = [step.apply(image.copy(), [face.landmarks], seq) for seq in range(3)]
    finally:
        step.close()
    assert step.enhanced_frames == 3 and step.carried_frames == 0
    inside = face_mask(image.shape, face)
    for out in outs:
        assert high_frequency(out, inside) > 1.3 * high_frequency(image, inside)  # the fixture sharpens
        # Only the crop's box is touched: far from the face nothing changes.
        assert np.array_equal(out[:40], image[:40]) and np.array_equal(out[-40:], image[-40:])


def test_blend_mixes_the_enhanced_and_the_raw_face(pool, portrait):
    image, face = portrait
    inside = face_mask(image.shape, face)

    def change(blend: float) -> float:
        step = FaceEnhancerStep(EnhanceConfig(model="gfpgan_1.4", blend=blend), lambda: pool)
        step.start(offline=True)
        out = step.apply(image.copy(), [face.landmarks], 0)
        return float(np.abs(out.astype(int) - image)[inside].mean())

    none, half, full = change(0.0), change(0.5), change(1.0)
    assert none < 0.6  # blend 0: the raw face (up to resampling)
    assert full > 1.6 * half > 1.6 * none


def test_codeformer_fidelity_weight_keeps_the_input_at_one(pool, portrait):
    image, face = portrait
    inside = face_mask(image.shape, face)
    changes = []
    for fidelity in (0.0, 1.0):
        step = FaceEnhancerStep(EnhanceConfig(model="codeformer", blend=1.0, fidelity=fidelity), lambda: pool)
        step.start(offline=True)
        out = step.apply(image.copy(), [face.landmarks], 0)
        changes.append(float(np.abs(out.astype(int) - image)[inside].mean()))
    assert changes[1] < 0.6 < changes[0]


def test_an_unusable_output_leaves_the_face_as_it_was(tmp_path, portrait):
    image, face = portrait
    onnx.save(make_test_models.enhancer(512, flat=True), str(tmp_path / "gfpgan_1.4.onnx"))
    pool = EnginePool(tmp_path, EngineConfig(cache_dir=tmp_path / "cache"))
    step = FaceEnhancerStep(EnhanceConfig(model="gfpgan_1.4"), lambda: pool)
    step.start(offline=True)
    out = step.apply(image.copy(), [face.landmarks], 0)
    assert np.array_equal(out, image) and step.bad_outputs == 1 and step.enhanced_frames == 0


def test_a_missing_model_says_where_to_put_it(tmp_path):
    step = FaceEnhancerStep(EnhanceConfig(model="restoreformer_pp"), lambda: EnginePool(tmp_path, EngineConfig()))
    with pytest.raises(ModelsMissing, match=r"restoreformer_plus_plus\.onnx.*Apache-2\.0.*place the ONNX file"):
        step.start()


class HeldEngine:
    """The real fixture engine, with each call held until the test lets it go (to see what the live
    path does while the enhancer is busy, without timing anything)."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.started = threading.Semaphore(0)
        self.go = threading.Semaphore(0)
        self.calls = 0

    def run(self, feeds, priority="live", keep_on_device=()):
        self.calls += 1
        self.started.release()
        assert self.go.acquire(timeout=30)
        return self.engine.run(feeds, priority)


def test_live_runs_on_its_own_thread_latest_face_wins_and_detail_is_carried(pool, portrait):
    image, face = portrait
    inside = face_mask(image.shape, face)
    step = FaceEnhancerStep(EnhanceConfig(model="gfpgan_1.4", blend=1.0), lambda: pool)
    step.start()  # live: asynchronous
    held = HeldEngine(step.engine)
    step.engine = held
    try:
        first = step.apply(image.copy(), [face.landmarks], 0)
        assert held.started.acquire(timeout=30)  # the worker took frame 0 and is busy with it
        # Meanwhile frames keep coming and are not held up; no enhancement is ready yet.
        for seq in range(1, 6):
            assert np.array_equal(step.apply(image.copy(), [face.landmarks], seq), image)
        assert np.array_equal(first, image)
        held.go.release()  # frame 0 done; the worker takes the newest face waiting: frame 5, not 1
        assert held.started.acquire(timeout=30)
        assert step._latest[0] is not None and step._latest[0].seq == 0
        held.go.release()
        for _ in range(300):
            latest = step._latest[0]
            if latest is not None and latest.seq == 5:
                break
            threading.Event().wait(0.01)
        assert step._latest[0] is not None and step._latest[0].seq == 5
        assert held.calls == 2  # frames 1-4 were replaced by newer ones, never run
        # Frame 6 gets frame 5's detail: sharper than the raw face, carried without a model call.
        out = step.apply(image.copy(), [face.landmarks], 6)
        assert high_frequency(out, inside) > 1.3 * high_frequency(image, inside)
        assert step.enhanced_frames == 2 and step.carried_frames >= 1
        assert step.stats()["mode"] == "async"
    finally:
        held.go.release(5)
        step.close()


def test_carried_detail_moves_with_the_face(pool, portrait):
    image, face = portrait
    step = FaceEnhancerStep(EnhanceConfig(model="gfpgan_1.4", blend=1.0), lambda: pool)
    step.start(offline=True)
    result = enhance.enhance_crop(
        step.engine, enhance.ENHANCERS["gfpgan_1.4"], enhance.align(image, face.landmarks, 512)[0], 0.5, "live", 0
    )
    assert result is not None
    # The same face 24 px right and 16 px down in a later frame: the residual follows its 5 points.
    shift = np.float32([[1, 0, 24], [0, 1, 16]])
    moved = cv2.warpAffine(image, shift, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)
    landmarks = face.landmarks.copy()
    landmarks[:, :2] += (24, 16)
    here, there = image.copy(), moved.copy()
    enhance.paste_residual(here, face.landmarks, result, 1.0, step.mask)
    enhance.paste_residual(there, landmarks, result, 1.0, step.mask)
    inside = face_mask(image.shape, face)
    added_here = (here.astype(int) - image)[inside]
    added_there = (np.roll(np.roll(there.astype(int) - moved, -16, axis=0), -24, axis=1))[inside]
    assert np.abs(added_here).mean() > 3
    assert np.abs(added_there - added_here).mean() < 0.25 * np.abs(added_here).mean()


def test_the_mesh_swap_runs_the_enhancer_offline_on_every_frame(pool, portrait, character):
    image, face = portrait
    cfg = SwapMeshConfig(enhance=EnhanceConfig(model="gpen_bfr_256"))
    plain = SwapMesh(SwapMeshConfig(), OneCharacter(character)).apply(
        FramePacket(seq=0, image=image.copy(), t_capture_ns=0, faces=[face])
    )
    effect = SwapMesh(cfg, OneCharacter(character), lambda: pool)
    effect.offline = True
    effect.start()
    try:
        for seq in range(2):
            out = effect.apply(FramePacket(seq=seq, image=image.copy(), t_capture_ns=seq * 33_000_000, faces=[face]))
    finally:
        effect.close()
    assert effect.enhancer.enhanced_frames == 2
    inside = face_mask(image.shape, face)
    assert high_frequency(out, inside) > 1.2 * high_frequency(plain, inside)


def test_without_the_engine_pool_an_enhancer_is_a_clear_error(character):
    effect = SwapMesh(SwapMeshConfig(enhance=EnhanceConfig(model="gfpgan_1.4")), OneCharacter(character))
    with pytest.raises(Exception, match="needs the engine pool"):
        effect.start()


def test_the_inswapper_swap_runs_the_enhancer_too(pool, portrait, character):
    from facecast.effects.swap_inswapper import SwapInswapper, SwapInswapperConfig

    image, face = portrait
    effect = SwapInswapper(
        SwapInswapperConfig(enhance=EnhanceConfig(model="restoreformer_pp")), OneCharacter(character), pool
    )
    effect.offline = True
    effect.start()
    try:
        effect.apply(FramePacket(seq=0, image=image.copy(), t_capture_ns=0, faces=[face]))
    finally:
        effect.close()
    assert effect.enhancer.enhanced_frames == 1 and effect.enhancer.stats()["mode"] == "every_frame"
