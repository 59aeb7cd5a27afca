"""facecast's inswapper path (neural/faceswap.py) against InsightFace's own algorithm, on the full-size
replicas and real MediaPipe landmarks of the bundled portrait.

The reference is the `insightface` 2.1 package (requirements-reference.txt): `face_align`
(estimate_norm / norm_crop / norm_crop2), `ArcFaceONNX` and `INSwapper`, given the very same ONNX
sessions facecast runs, so every difference found is a difference of the algorithm around the models.

Tolerances, and why:
- alignment matrices: 1e-4 (InsightFace fits in float32 through scikit-image; facecast in float64;
  the same least-squares fit otherwise). A robust fit that drops a point is off by pixels.
- crops: identical but for at most 1 level at a handful of pixels (warpAffine quantises source
  positions to 1/32 px, so a 1e-5 change in the matrix can flip one bilinear weight).
- embedding: 1 - cosine <= 1e-6 and 1e-4 of the largest component (measured: 0 and 9e-7); the same
  face 2 px off in alignment is 0.04 away in cosine, so the bound catches alignment or colour errors.
- latent: the formula on one embedding to 1e-6; end to end 1e-3 relative (the source crop has a
  few pixels 1 level apart, see crops).
- swapped 128 face: facecast rounds the model's 0..1 output to the nearest level, InsightFace
  truncates: facecast - InsightFace is 0 or 1 wherever the two model outputs are within half a
  level (measured: 0.42 level at most, from the crop pixels above), so 0 or 1 at 99.9% of pixels
  and never more than 2 apart.
- pasted frame: the masks differ on purpose (facecast: feathered ellipse pasted only into the
  face box; InsightFace: the eroded, blurred 128 square over a full-frame warp). Where both masks
  are 1 (>= 254/255) the frames agree within 3 levels (the budget is itemised in the test);
  elsewhere every difference is bounded by the mask difference times the face-vs-frame contrast.

Runtime on 2 shared CPU cores: about 45 s to build the two replicas once into the replicas cache
(skipped while cached: `ensure_replicas`), then about 15 s (an inswapper call is ~2 s).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from facecast.engines.onnxruntime import EngineConfig
from facecast.engines.pool import EnginePool
from facecast.models.replicas import ensure_replicas, replica_note
from facecast.models.replicas.cost import onnx_cost
from facecast.neural.crop import invert, paste_into, paste_region
from facecast.neural.faceswap import (
    TEMPLATE_112,
    TEMPLATE_128,
    InSwapper,
    align_crop,
    alignment,
    face_mask,
    five_points,
    source_latent,
)
from facecast.tracking.face_mesh import track_image

pytest.importorskip("torch", reason="building the replicas needs PyTorch (requirements-test.txt)")
pytest.importorskip("insightface", reason="the reference needs insightface (requirements-reference.txt)")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # scikit-image 0.26: estimate() deprecated

from insightface.app.common import Face  # noqa: E402
from insightface.model_zoo.arcface_onnx import ArcFaceONNX  # noqa: E402
from insightface.model_zoo.inswapper import INSwapper  # noqa: E402
from insightface.utils import face_align  # noqa: E402


@pytest.fixture(scope="session")
def replicas() -> Path:
    """The full-size replicas, built once into the per-user replicas cache (kept between runs)."""
    folder = ensure_replicas(parts=("insightface",), log=lambda line: None)
    assert replica_note(folder / "inswapper_128.onnx") and replica_note(folder / "w600k_r50.onnx")
    return folder


@pytest.fixture(scope="module")
def swapper(replicas, tmp_path_factory) -> InSwapper:
    cfg = EngineConfig(device="cpu", warmup=False, cpu_threads=2, cache_dir=tmp_path_factory.mktemp("engines"))
    return InSwapper(EnginePool(replicas, cfg))


@pytest.fixture(scope="module")
def reference(swapper, replicas):
    """InsightFace's classes on facecast's own sessions (same weights, same runtime)."""
    swapper_path, arcface_path = str(replicas / "inswapper_128.onnx"), str(replicas / "w600k_r50.onnx")
    return INSwapper(swapper_path, session=swapper.swapper.session), ArcFaceONNX(
        arcface_path, session=swapper.arcface.session
    )


@pytest.fixture(scope="module")
def target(portrait):
    return track_image(portrait)[0]


@pytest.fixture(scope="module")
def source(portrait):
    """A second identity: the portrait mirrored, tracked on its own."""
    image = cv2.flip(portrait, 1)
    return image, track_image(image)[0]


def _kps(landmarks) -> np.ndarray:
    """The 5 points as InsightFace's detectors hand them over (float32)."""
    return five_points(landmarks).astype(np.float32)


@pytest.fixture(scope="module")
def source_face(reference, source) -> Face:
    """The source as InsightFace sees it: its kps and ArcFaceONNX's embedding."""
    _, arcface = reference
    image, face = source
    ref = Face(kps=_kps(face.landmarks))
    ref.embedding = arcface.get(image, ref)
    return ref


def test_replicas_have_the_published_contract_size_and_cost(replicas, swapper):
    from facecast.models.replicas import insightface

    # Sessions were created through the contracts (names, shapes) when the pool loaded them.
    for file, params_pub, gflops_pub in (
        (insightface.ARCFACE_FILE, 43.6e6, 12.6),
        (insightface.SWAPPER_FILE, 138.3e6, 174.7),
    ):
        params, gflops = onnx_cost(replicas / file)
        assert params == pytest.approx(params_pub, rel=0.005) and gflops == pytest.approx(gflops_pub, rel=0.005)
    batch = swapper.arcface.run({"input.1": np.random.default_rng(0).uniform(-1, 1, (2, 3, 112, 112))})["683"]
    assert batch.shape == (2, 512)  # dynamic batch, as the published file
    model = onnx.load(str(replicas / insightface.SWAPPER_FILE), load_external_data=False)
    assert model.graph.initializer[-1].name == "emap" and list(model.graph.initializer[-1].dims) == [512, 512]
    assert not any("emap" in node.input for node in model.graph.node)  # applied by the host code, not the graph


def _crop_inside(m: np.ndarray, size: int, shape) -> bool:
    corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], float) @ invert(m).T
    return bool((corners >= 0).all() and (corners[:, 0] < shape[1]).all() and (corners[:, 1] < shape[0]).all())


def test_alignment_is_insightfaces_least_squares_fit(portrait, target):
    points = five_points(target.landmarks)
    rng = np.random.default_rng(7)
    # The real points, then the same face with 3 px of landmark noise: a robust fit (LMEDS) drops a
    # "outlier" point on some of these and lands pixels away from InsightFace's fit.
    cases = [points] + [points + rng.normal(0.0, 3.0, points.shape) for _ in range(40)]
    for size, template in ((112, TEMPLATE_112), (128, TEMPLATE_128)):
        for pts in cases:
            ref = face_align.estimate_norm(pts.astype(np.float32), size)
            assert np.abs(alignment(pts, template) - ref).max() < 1e-4
        crop, m = align_crop(portrait, target.landmarks, template, size)
        assert _crop_inside(m, size, portrait.shape)  # so InsightFace's black border fill plays no part
        ref_crop, _ = face_align.norm_crop2(portrait, _kps(target.landmarks), size)
        diff = np.abs(crop.astype(int) - ref_crop)
        assert diff.max() <= 1 and (diff > 0).mean() < 0.001


def test_arcface_embedding_matches_arcfaceonnx(portrait, target, swapper, reference):
    _, arcface = reference
    assert (arcface.input_mean, arcface.input_std) == (127.5, 127.5)  # it read the graph as facecast does
    ref = arcface.get(portrait, Face(kps=_kps(target.landmarks))).reshape(1, -1)
    ours = swapper.embedding_for(portrait, target.landmarks)

    def cosine(a, b):
        return float((a @ b.T).item() / (np.linalg.norm(a) * np.linalg.norm(b)))

    assert 1.0 - cosine(ours, ref) <= 1e-6
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    shifted = target.landmarks.copy()
    shifted[:, 0] += 2.0  # 2 px off: what a small alignment error does to the same face
    off = swapper.embedding_for(portrait, shifted)
    assert 1.0 - cosine(off, ref) > 1e-3  # a thousand times the tolerance


def test_latent_is_the_normed_embedding_through_the_files_emap(source, swapper, reference, source_face):
    ins, _ = reference
    assert np.array_equal(swapper.emap, ins.emap)  # both read the graph's last initializer
    ref = np.dot(source_face.normed_embedding.reshape(1, -1), ins.emap)  # INSwapper.get's latent, step by step
    ref /= np.linalg.norm(ref)
    # The formula, on the same embedding: equal to float32 rounding.
    assert np.abs(source_latent(source_face.embedding, swapper.emap) - ref).max() < 1e-6
    # End to end from the image: within the embedding's own tolerance (a few crop pixels 1 level apart).
    image, face = source
    ours = swapper.latent_for(image, face.landmarks)
    assert np.abs(ours - ref).max() <= 1e-3 * np.abs(ref).max()


@pytest.fixture(scope="module")
def swapped(portrait, target, source, swapper):
    image, face = source
    latent = swapper.latent_for(image, face.landmarks)
    return latent, swapper.swapped_crop(portrait, target.landmarks, latent)


def test_swapped_face_matches_insightface(portrait, target, source, reference, source_face, swapped, swapper):
    ins, _ = reference
    ref_face, ref_m = ins.get(portrait, Face(kps=_kps(target.landmarks)), source_face, paste_back=False)
    _, (face, m) = swapped
    assert np.abs(m - ref_m).max() < 1e-4
    diff = face.astype(int) - ref_face
    assert np.abs(diff - 0.5).max() <= 1.5 and np.isin(diff, (0, 1)).mean() >= 0.999  # nearest vs truncated
    assert (diff == 1).mean() > 0.2  # ...and the rounding really is the difference (half the pixels or so)
    # The replica is no near-constant: another identity, or another target, gives a clearly different face.
    other = swapper.swapped_crop(portrait, target.landmarks, source_latent(np.ones((1, 512), np.float32), swapper.emap))
    assert np.abs(other[0].astype(int) - face).mean() > 10
    image, source_face_mesh = source
    other = swapper.swapped_crop(image, source_face_mesh.landmarks, swapped[0])
    assert np.abs(other[0].astype(int) - face).mean() > 10


def _white_face_session(session):
    """A session whose swapped face is pure white whatever it is given: pasted by INSwapper onto a
    black frame, the result is its blend mask (x 255). Only used to measure that mask."""

    class WhiteFace:
        def get_inputs(self):
            return session.get_inputs()

        def get_outputs(self):
            return session.get_outputs()

        def run(self, names, feeds):
            return [np.ones((1, 3, 128, 128), np.float32)]

    return WhiteFace()


def test_pasted_frame_matches_insightface_where_both_masks_are_one(
    portrait, target, replicas, reference, source_face, swapped, swapper
):
    ins, _ = reference
    latent, (face, m) = swapped
    kps = _kps(target.landmarks)
    ref_frame = ins.get(portrait, Face(kps=kps), source_face, paste_back=True).astype(int)
    frame = portrait.copy()
    assert swapper.swap_face(frame, target.landmarks, latent, keep_mouth=False)
    ours = frame.astype(int)

    # Each side's blend weight in the frame: facecast's own mask through its own paste; InsightFace's
    # measured by pasting a white face onto a black frame.
    white = np.full((128, 128, 3), 255, np.uint8)
    alpha_ours = paste_into(np.zeros_like(portrait), white, face_mask(), invert(m))[..., 0] / 255.0
    measuring = INSwapper(str(replicas / "inswapper_128.onnx"), session=_white_face_session(swapper.swapper.session))
    alpha_ref = measuring.get(np.zeros_like(portrait), Face(kps=kps), source_face)[..., 0] / 255.0

    x0, y0, x1, y1 = paste_region(invert(m), 128, portrait.shape[:2])
    both_one = (alpha_ours >= 254 / 255) & (alpha_ref >= 254 / 255)
    assert both_one.sum() > 0.35 * (alpha_ours > 0.5).sum()  # the middle of the face, not a sliver
    diff = np.abs(ours - ref_frame).max(axis=2)
    # Error budget there: +1 (nearest level vs truncation of the face), each side's float blend
    # truncated to uint8 (0 or -1 each: masks of 0.99999 rather than 1), and (1 - alpha) x contrast
    # with alpha >= 254/255 (at most 1).
    assert diff[both_one].max() <= 3 and np.abs(ours - ref_frame)[both_one].mean() < 1.5

    # Everywhere else the difference is the masks' difference: |a - b| <= |alpha_a - alpha_b| x |face - frame|,
    # + 4 levels: nearest vs truncated face (1), the two sides' uint8 truncation of the blend (1), and
    # both masks measured through uint8 frames (under 1/255 x contrast each: 2).
    h, w = portrait.shape[:2]
    face_in_frame = cv2.warpAffine(face, invert(m), (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    contrast = np.abs(face_in_frame.astype(int) - portrait).max(axis=2)
    bound = np.abs(alpha_ours - alpha_ref) * contrast + 4
    assert (diff <= bound).all()

    # facecast touches nothing outside the face's box; InsightFace also pastes the crop's corners
    # (redrawn hair and background) where facecast's ellipse is 0.
    outside = np.ones(portrait.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(frame[outside], portrait[outside])
    corners = (alpha_ref >= 0.99) & (alpha_ours <= 0.01)
    assert corners.sum() > 200 and diff[corners].mean() > 10  # the deliberate difference, and it is visible
