"""facecast's LivePortrait against LivePortrait's own code, number for number, at full size.

The reference is the `mimic-head` package (LivePortrait's MIT network code and per-frame wrapper);
the models are full-size replicas built from that same code with seeded random weights, so the
reference runs the torch modules and facecast runs the ONNX files exported from them. Both sides
get the same 256x256 crops of a real face (the bundled portrait) and of a driving sequence with real
head motion (the synthetic driver: roll, yaw, pitch, zoom, shift, blinks, mouth).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mimic_head")

from mimic_head.config.inference_config import InferenceConfig  # noqa: E402
from mimic_head.live_portrait_wrapper import LivePortraitWrapper  # noqa: E402
from mimic_head.utils.camera import get_rotation_matrix  # noqa: E402
from mimic_head.utils.crop import _estimate_similar_transform_from_pts  # noqa: E402

from facecast.capture.synthetic import SyntheticConfig, synthetic_frames  # noqa: E402
from facecast.engines.onnxruntime import EngineConfig  # noqa: E402
from facecast.engines.pool import EnginePool  # noqa: E402
from facecast.models.replicas import ensure_replicas  # noqa: E402
from facecast.models.replicas.liveportrait import build_modules  # noqa: E402
from facecast.neural import liveportrait as lp  # noqa: E402
from facecast.neural.crop import CROP_POINTS, EYE_L, EYE_R, crop_transform, warp_crop  # noqa: E402
from facecast.tracking.face_mesh import track_image  # noqa: E402
from facecast.tracking.geometry import LIP_BOTTOM_INNER, LIP_TOP_INNER  # noqa: E402

SEED = 0
# Tolerances. Keypoints: both sides compute in float32 from the same weights; what differs is the
# order of floating-point operations (onnxruntime's kernels vs torch's, facecast's float64 maths
# after the model): ~1e-6 relative, far inside 1e-4 on values of order 1.
KP_ATOL = 1e-4
# Generated images (0..1): the warping+SPADE graph is ~140 layers deep; float32 kernel differences
# and the 1e-6 keypoint differences leave ~1e-5 on the output. 2e-3 is half a grey level of the
# 8-bit image the user sees, and PSNR above 60 dB means indistinguishable.
IMAGE_ATOL = 2e-3
IMAGE_MIN_PSNR = 60.0


# -- the crop rule ---------------------------------------------------------------------------------
def reference_points(landmarks: np.ndarray) -> np.ndarray:
    """facecast's landmarks in the layout LivePortrait's crop code reads: it takes its two anchor
    points from fixed rows of a 101-point set (eye contours 39/42/45/48 and 51/54/57/60, lip centres
    75/81) and the face box from every row. The header carries our anchors in those rows (the
    other header rows repeat a box point, which moves neither the box nor the anchors) and the box
    points follow."""
    pts = landmarks[:, :2].astype(np.float64)
    box = pts[CROP_POINTS]
    header = np.repeat(box[:1], 101, axis=0)
    header[[39, 42, 45, 48]] = pts[EYE_L]
    header[[51, 54, 57, 60]] = pts[EYE_R]
    header[75], header[81] = pts[LIP_TOP_INNER], pts[LIP_BOTTOM_INNER]
    return np.vstack([header, box])


@pytest.fixture(scope="module")
def face(portrait):
    return track_image(portrait)[0]


def _rotated(landmarks: np.ndarray, degrees: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    m = cv2.getRotationMatrix2D((300.0, 350.0), degrees, scale)
    m[:, 2] += shift
    out = landmarks.copy()
    out[:, :2] = landmarks[:, :2] @ m[:, :2].T + m[:, 2]
    return out


@pytest.mark.parametrize("crop", [lp.SOURCE_CROP, lp.DRIVING_CROP], ids=["source", "driving"])
@pytest.mark.parametrize("pose", [(0, 1, (0, 0)), (23, 0.7, (40, -15)), (-35, 1.6, (-80, 60))])
def test_crop_follows_the_reference_rule(face, crop, pose):
    landmarks = _rotated(face.landmarks, *pose)
    for size in (256, 512):
        ours = crop_transform(landmarks, size, *crop)
        theirs, _ = _estimate_similar_transform_from_pts(
            reference_points(landmarks), size, scale=crop[0], vy_ratio=crop[1]
        )
        assert np.allclose(ours, theirs, atol=1e-6), (ours, theirs)


# -- the per-frame algorithm ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def modules():
    torch.set_num_threads(2)
    return build_modules(SEED)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    models_dir = ensure_replicas(SEED, parts=("liveportrait",))
    pool = EnginePool(
        models_dir, EngineConfig(device="cpu", warmup=False, cpu_threads=2, cache_dir=tmp_path_factory.mktemp("cache"))
    )
    return lp.LivePortrait(pool, stitching=True, lip_zero=True)


def reference_wrapper(modules) -> LivePortraitWrapper:
    """LivePortrait's wrapper with the replica's torch modules (its constructor would load weight
    files; everything else is its own code)."""
    wrapper = LivePortraitWrapper.__new__(LivePortraitWrapper)
    wrapper.appearance_feature_extractor = modules.appearance
    wrapper.motion_extractor = modules.motion
    wrapper.warping_module = modules.warping
    wrapper.spade_generator = modules.spade
    wrapper.stitching_retargeting_module = modules.retargeting_dict()
    wrapper.cfg = InferenceConfig(flag_use_half_precision=False, device_id=0)
    wrapper.device, wrapper.device_id = "cpu", 0
    return wrapper


@pytest.fixture(scope="module")
def crops(portrait):
    """The character's 256 crop and five driving crops (BGR), cut by facecast's crop from real tracking."""
    source = track_image(portrait)[0]
    src_crop = warp_crop(portrait, crop_transform(source.landmarks, 256, *lp.SOURCE_CROP), 256)
    cfg = SyntheticConfig(roll_deg=15, yaw_deg=20, pitch_deg=12, mouth=0.4, realtime=False)
    driving = []
    for frame in synthetic_frames(5, 640, 480, fps=1.3, cfg=cfg):  # ~0.77 s apart: large motion each step
        tracked = track_image(frame.image)[0]
        driving.append(warp_crop(frame.image, crop_transform(tracked.landmarks, 256, *lp.DRIVING_CROP), 256))
    return src_crop, source, driving


def _rgb(bgr: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def reference_frame(
    wrapper: LivePortraitWrapper, state: dict, driving_rgb: np.ndarray, eye=None, lip=None, decode: bool = True
):
    """One driving frame through LivePortrait's own functions (get_kp_info, get_rotation_matrix,
    transform_keypoint, stitching, retarget_eye/lip, warp_decode), composed as in its per-frame
    pipeline (mimic_head LivePortraitPipeline.process, whose module cannot be imported without gradio)
    and the paper's Algorithm 1 for retargeting. One line differs from mimic-head 0.1.5's webcam
    pipeline: the z of the translation is set to 0, as in LivePortrait's official pipeline and the
    paper; mimic-head leaves it out, which pushes every driving keypoint by the source's own tz."""
    x_d_i_info = wrapper.get_kp_info(wrapper.prepare_driving_videos([driving_rgb])[0])
    R_d_i = get_rotation_matrix(x_d_i_info["pitch"], x_d_i_info["yaw"], x_d_i_info["roll"])
    if "R_d_0" not in state:
        state["R_d_0"], state["x_d_0_info"] = R_d_i, x_d_i_info
    s, d0 = state["x_s_info"], state["x_d_0_info"]
    R_new = (R_d_i @ state["R_d_0"].permute(0, 2, 1)) @ state["R_s"]
    delta_new = s["exp"] + (x_d_i_info["exp"] - d0["exp"])
    scale_new = s["scale"] * (x_d_i_info["scale"] / d0["scale"])
    t_new = s["t"] + (x_d_i_info["t"] - d0["t"])
    t_new[..., 2] = 0  # official LivePortrait: zero tz
    x_d_i_new = scale_new * (s["kp"] @ R_new + delta_new) + t_new
    x_d_i_new = wrapper.stitching(state["x_s"], x_d_i_new)
    if eye is not None:
        ratio = torch.tensor([[*state["eye_ratio"], eye]], dtype=torch.float32)
        x_d_i_new = x_d_i_new + wrapper.retarget_eye(state["x_s"], ratio).reshape(1, 21, 3)
    if lip is not None:
        ratio = torch.tensor([[state["lip_ratio"], lip]], dtype=torch.float32)
        x_d_i_new = x_d_i_new + wrapper.retarget_lip(state["x_s"], ratio).reshape(1, 21, 3)
    else:
        x_d_i_new = x_d_i_new + state["lip_delta_before_animation"].reshape(1, 21, 3)
    if not decode:  # the warp-decode costs seconds on a CPU: only where the image is compared
        return _np(x_d_i_new[0]), None
    out = wrapper.warp_decode(state["f_s"], state["x_s"], x_d_i_new)["out"]
    return _np(x_d_i_new[0]), _np(out)


def reference_source(wrapper: LivePortraitWrapper, source_rgb: np.ndarray, eye_ratio, lip_ratio) -> dict:
    """What LivePortraitPipeline.set_source_image computes, from its own wrapper calls."""
    I_s = wrapper.prepare_source(source_rgb)
    x_s_info = wrapper.get_kp_info(I_s)
    x_s = wrapper.transform_keypoint(x_s_info)
    lip_zero = torch.tensor([[lip_ratio, 0.0]], dtype=torch.float32)
    return {
        "x_s_info": x_s_info,
        "x_s": x_s,
        "f_s": wrapper.extract_feature_3d(I_s),
        "R_s": get_rotation_matrix(x_s_info["pitch"], x_s_info["yaw"], x_s_info["roll"]),
        "eye_ratio": eye_ratio,
        "lip_ratio": lip_ratio,
        "lip_delta_before_animation": wrapper.retarget_lip(x_s, lip_zero),
    }


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_liveportrait_equals_the_reference(modules, model, crops):
    src_crop, _source_face, driving = crops
    wrapper = reference_wrapper(modules)
    # The same retargeting ratios on both sides (facecast measures them with MediaPipe; the
    # reference with its 203-point model: the networks only see the numbers).
    eye_ratio, lip_ratio = (0.31, 0.29), 0.12
    state = reference_source(wrapper, _rgb(src_crop), eye_ratio, lip_ratio)

    # The source: facecast's prepare_source on the same crop (its own crop rule is tested above).
    prep = lp.prepare_image(src_crop)
    feature = model.appearance.run({"img": prep})["output"]
    motion = lp.motion_from_outputs(model.motion.run({"img": prep}))
    assert np.abs(feature - _np(state["f_s"])).max() < 1e-4
    for name in ("pitch", "yaw", "roll"):
        assert getattr(motion, name) == pytest.approx(float(state["x_s_info"][name]), abs=1e-4)
    x_s = lp.keypoints(motion)
    assert np.abs(x_s - _np(state["x_s"][0])).max() < KP_ATOL
    src = lp.PreparedSource(
        image=src_crop,
        feature=feature,
        motion=motion,
        x_s=x_s,
        m_c2o=np.eye(2, 3),
        mask=np.ones((512, 512), np.float32),
        eye_ratio=eye_ratio,
        lip_ratio=lip_ratio,
        lip_delta_before=model._lip_delta(x_s, lip_ratio, 0.0, "live"),
    )

    neutral = None
    checked_images = 0
    kp_errors, image_errors = [], []
    for index, crop in enumerate(driving):
        drv = lp.motion_from_outputs(model.motion.run({"img": lp.prepare_image(crop)}))
        neutral = neutral or drv
        # frames 0-2: motion only (with lip zero); frame 3: eye and lip retargeting too
        eye, lip = (0.05, 0.4) if index == 3 else (None, None)
        x_d = model.driving_keypoints(src, drv, neutral, eye_ratio=eye, lip_ratio=lip)
        # the warp-decode is the costly part (seconds a frame on a CPU): its image is compared on
        # frame 3, which is both far from the neutral frame and eye/lip retargeted
        decode = index == 3
        with torch.no_grad():
            want_kp, want_image = reference_frame(wrapper, state, _rgb(crop), eye, lip, decode=decode)
        kp_errors.append(float(np.abs(x_d - want_kp).max()))
        if decode:
            got = model.warping.run(
                {
                    "feature_3d": src.feature,
                    "kp_driving": x_d[None].astype(np.float32),
                    "kp_source": x_s[None].astype(np.float32),
                }
            )["out"]
            image_errors.append((float(np.abs(got - want_image).max()), psnr(got, want_image)))
            checked_images += 1
    print(
        f"keypoints max abs diff per frame: {[f'{e:.2e}' for e in kp_errors]}; "
        f"images (max abs, PSNR dB): {[(f'{a:.2e}', round(p, 1)) for a, p in image_errors]}"
    )
    # the driving sequence really moves: keypoints differ from the neutral frame's by far more than the tolerance
    assert max(kp_errors) < KP_ATOL
    assert checked_images == 1
    for max_abs, db in image_errors:
        assert max_abs < IMAGE_ATOL and db > IMAGE_MIN_PSNR


def test_the_driving_sequence_has_real_motion(model, crops):
    """Guards the test above against a still driver: the motions differ from the neutral frame."""
    _, _, driving = crops
    motions = [lp.motion_from_outputs(model.motion.run({"img": lp.prepare_image(c)})) for c in driving]
    moved = [float(np.abs(lp.keypoints(m) - lp.keypoints(motions[0])).max()) for m in motions[1:]]
    assert min(moved) > 100 * KP_ATOL
