"""LivePortrait on onnxruntime: the per-character preparation and the per-frame algorithm.

prepare_* and the keypoint maths are pure numpy; every model call goes through `OnnxEngine.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from facecast.engines.gate import Priority
from facecast.engines.pool import EnginePool
from facecast.neural.crop import crop_transform, feathered_mask, invert, paste_into, warp_crop
from facecast.types import Image, Landmarks

MODELS = [
    "liveportrait/appearance_feature_extractor",
    "liveportrait/motion_extractor",
    "liveportrait/warping_spade",
    "liveportrait/stitching",
    "liveportrait/stitching_eye",
    "liveportrait/stitching_lip",
]
SOURCE_CROP = (2.3, -0.125)  # scale, vy_ratio (negative: the centre moves towards the forehead)
DRIVING_CROP = (2.2, -0.1)
LIP_ZERO_THRESHOLD = 0.03  # the reference closes the source's mouth first only when it is open at least this much
BINS = np.arange(66, dtype=np.float64)


# -- pure maths ---------------------------------------------------------------------------------
def prepare_image(crop_bgr: Image) -> np.ndarray:
    """256x256 BGR crop -> [1,3,256,256] RGB in 0..1."""
    rgb = cv2.cvtColor(crop_bgr[:, :, :3], cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return rgb.transpose(2, 0, 1)[None]


def postprocess_image(out: np.ndarray) -> Image:
    """[1,3,H,W] RGB 0..1 -> HxWx3 BGR uint8."""
    rgb = np.clip(out[0].transpose(1, 2, 0), 0.0, 1.0)
    return cv2.cvtColor((rgb * 255.0 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)


def angle_from_logits(logits: np.ndarray) -> float:
    """Degrees from 66 bins: softmax-weighted bin index * 3 - 97.5."""
    x = logits.reshape(-1).astype(np.float64)
    p = np.exp(x - x.max())
    p /= p.sum()
    return float((p * BINS).sum() * 3.0 - 97.5)


def rotation(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """(Rz(roll) Ry(yaw) Rx(pitch))^T for angles in degrees, as LivePortrait composes them."""
    p, y, r = np.radians([pitch, yaw, roll])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return (rz @ ry @ rx).T


@dataclass(slots=True)
class Motion:
    pitch: float
    yaw: float
    roll: float
    rot: np.ndarray  # 3x3
    t: np.ndarray  # [3]
    exp: np.ndarray  # [21,3]
    scale: float
    kp: np.ndarray  # [21,3] canonical keypoints


def motion_from_outputs(out: dict[str, np.ndarray]) -> Motion:
    """Bind the motion extractor's outputs by name (their order differs between exports)."""
    pitch, yaw, roll = (angle_from_logits(out[k]) for k in ("pitch", "yaw", "roll"))
    return Motion(
        pitch,
        yaw,
        roll,
        rotation(pitch, yaw, roll),
        out["t"].reshape(3).astype(np.float64),
        out["exp"].reshape(21, 3).astype(np.float64),
        float(out["scale"].reshape(-1)[0]),
        out["kp"].reshape(21, 3).astype(np.float64),
    )


def keypoints(m: Motion) -> np.ndarray:
    """x = scale * (kp R + exp) + [tx, ty, 0]."""
    return m.scale * (m.kp @ m.rot + m.exp) + np.array([m.t[0], m.t[1], 0.0])


def relative_keypoints(
    src: Motion, drv: Motion, neutral: Motion, pose_multiplier: float = 1.0, expression_multiplier: float = 1.0
) -> np.ndarray:
    """Driving keypoints for the source: the driver's motion since its neutral frame, applied to the source."""
    r_rel = drv.rot @ neutral.rot.T
    if pose_multiplier != 1.0:  # scale the relative rotation's angle
        rvec, _ = cv2.Rodrigues(r_rel)
        r_rel, _ = cv2.Rodrigues(rvec * pose_multiplier)
    r_new = r_rel @ src.rot
    exp_new = src.exp + (drv.exp - neutral.exp) * expression_multiplier
    scale_new = src.scale * drv.scale / (neutral.scale if abs(neutral.scale) > 1e-9 else 1e-9)
    t_new = src.t + (drv.t - neutral.t)
    t_new[2] = 0.0
    return scale_new * (src.kp @ r_new + exp_new) + t_new


# -- the pipeline ---------------------------------------------------------------------------------
@dataclass
class PreparedSource:
    """What is computed once per character."""

    image: Image  # the character, BGR
    feature: Any  # f_s [1,32,16,64,64], resident where the models run (engine.upload / keep_on_device)
    motion: Motion
    x_s: np.ndarray  # [21,3]
    m_c2o: np.ndarray  # 512 crop -> character image
    mask: np.ndarray  # 512x512 feathered paste-back mask
    eye_ratio: tuple[float, float]
    lip_ratio: float
    # "lip zero": the lip network's delta that closes the character's own mouth, so an open-mouthed
    # portrait follows the performer's mouth instead of staying open (None: mouth already closed)
    lip_delta_before: np.ndarray | None = None
    kp_source: Any = None  # x_s as the warping model's resident input
    crop_box: tuple[int, int, int, int] = field(default=(0, 0, 0, 0))


class LivePortrait:
    def __init__(self, pool: EnginePool, stitching: bool = True, lip_zero: bool = True) -> None:
        pool.require(MODELS, "liveportrait")
        self.pool = pool
        self.stitching = stitching
        self.lip_zero = lip_zero
        self.appearance = pool.get("liveportrait/appearance_feature_extractor")
        self.motion = pool.get("liveportrait/motion_extractor", precision="fp32")  # FP16 overflows
        self.warping = pool.get("liveportrait/warping_spade")
        self.stitcher = pool.get("liveportrait/stitching")
        self.eye = pool.get("liveportrait/stitching_eye")
        self.lip = pool.get("liveportrait/stitching_lip")

    def extract_motion(
        self, image: Image, landmarks: Landmarks, crop: tuple[float, float], priority: Priority = "live"
    ) -> tuple[Motion, np.ndarray]:
        m = crop_transform(landmarks, 256, *crop)
        out = self.motion.run({"img": prepare_image(warp_crop(image, m, 256))}, priority)
        return motion_from_outputs(out), m

    def prepare_source(
        self,
        image: Image,
        landmarks: Landmarks,
        eye_ratio: tuple[float, float],
        lip_ratio: float,
        priority: Priority = "live",
    ) -> PreparedSource:
        """Once per character. Its appearance volume (8 MiB) and keypoints stay where the models run:
        each frame then sends only the driving crop and its keypoints, and takes back the image."""
        m256 = crop_transform(landmarks, 256, *SOURCE_CROP)
        crop = prepare_image(warp_crop(image, m256, 256))
        feature = self.appearance.run({"img": crop}, priority, keep_on_device=("output",))["output"]
        motion = motion_from_outputs(self.motion.run({"img": crop}, priority))
        m512 = crop_transform(landmarks, 512, *SOURCE_CROP)
        x_s = keypoints(motion)
        lip_delta = None
        if self.lip_zero and lip_ratio >= LIP_ZERO_THRESHOLD:
            lip_delta = self._lip_delta(x_s, lip_ratio, 0.0, priority)
        return PreparedSource(
            image=image,
            feature=feature,
            motion=motion,
            x_s=x_s,
            m_c2o=invert(m512),
            mask=feathered_mask(512),
            eye_ratio=eye_ratio,
            lip_ratio=lip_ratio,
            lip_delta_before=lip_delta,
            kp_source=self.warping.upload(x_s[None].astype(np.float32)),
        )

    def _lip_delta(self, x_s: np.ndarray, source_ratio: float, driving_ratio: float, priority: Priority) -> np.ndarray:
        feed = np.concatenate([x_s.reshape(-1), [source_ratio, driving_ratio]])[None].astype(np.float32)
        return self.lip.run({"input": feed}, priority)["output"].reshape(21, 3).astype(np.float64)

    def driving_keypoints(
        self,
        src: PreparedSource,
        drv: Motion,
        neutral: Motion,
        *,
        pose_multiplier: float = 1.0,
        expression_multiplier: float = 1.0,
        eye_ratio: float | None = None,
        lip_ratio: float | None = None,
        priority: Priority = "live",
    ) -> np.ndarray:
        """Algorithm 1 of the paper: the driver's motion relative to its neutral frame applied to the
        source, plus the stitching, eye and lip deltas (each computed from x_s and the ratios)."""
        x_d = relative_keypoints(src.motion, drv, neutral, pose_multiplier, expression_multiplier)
        if self.stitching:
            feed = np.concatenate([src.x_s.reshape(-1), x_d.reshape(-1)])[None].astype(np.float32)
            delta = self.stitcher.run({"input": feed}, priority)["output"].reshape(-1)
            x_d = x_d + delta[:63].reshape(21, 3)
            x_d[:, :2] += delta[63:65]
        if eye_ratio is not None:
            feed = np.concatenate([src.x_s.reshape(-1), src.eye_ratio, [eye_ratio]])[None].astype(np.float32)
            x_d = x_d + self.eye.run({"input": feed}, priority)["output"].reshape(21, 3)
        if lip_ratio is not None:
            x_d = x_d + self._lip_delta(src.x_s, src.lip_ratio, lip_ratio, priority)
        elif src.lip_delta_before is not None:
            x_d = x_d + src.lip_delta_before
        return x_d

    def generate(self, src: PreparedSource, x_d: np.ndarray, priority: Priority = "live") -> Image:
        """The animated 512x512 face crop (BGR)."""
        out = self.warping.run(
            {
                "feature_3d": src.feature,
                "kp_driving": x_d[None].astype(np.float32),
                "kp_source": src.kp_source if src.kp_source is not None else src.x_s[None].astype(np.float32),
            },
            priority,
        )["out"]
        return postprocess_image(out)

    @staticmethod
    def paste_back(src: PreparedSource, face: Image) -> Image:
        """The character image with the generated face blended in (only inside the crop's box)."""
        return paste_into(src.image.copy(), face, src.mask, src.m_c2o)
