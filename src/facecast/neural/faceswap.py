"""inswapper_128 on onnxruntime: 5-point alignment from MediaPipe, ArcFace latent through the
model's own emap, swap, feathered paste-back into the face box only, FP32 fallback on NaN/black.

Held equal to InsightFace's own algorithm (`INSwapper`, `ArcFaceONNX`, `face_align`) by
tests/test_reference_inswapper.py; the deliberate differences (edge fill, rounding, the mask) are
explained where they are made."""

from __future__ import annotations

import logging
from concurrent.futures import Future
from pathlib import Path
from typing import cast

import cv2
import numpy as np

from facecast.engines.contracts import ContractError
from facecast.engines.gate import Priority
from facecast.engines.pool import EnginePool
from facecast.neural.crop import invert, paste_into
from facecast.neural.liveportrait import postprocess_image
from facecast.types import Image, Landmarks

log = logging.getLogger(__name__)

MODELS = ["inswapper_128", "w600k_r50"]
# ArcFace's 5-point template for 112x112 (image-left eye, image-right eye, nose tip, mouth corners).
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
TEMPLATE_128 = TEMPLATE_112 + np.array([8.0, 0.0])  # the 112 template placed in a 128 box
IRIS_LEFT, IRIS_RIGHT, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT = 468, 473, 1, 61, 291
INNER_LIPS = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95]


def five_points(landmarks: Landmarks) -> np.ndarray:
    return landmarks[[IRIS_LEFT, IRIS_RIGHT, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT], :2].astype(np.float64)


def alignment(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift) from the face's 5 points
    to the template: the closed form of Umeyama's fit, which is what InsightFace aligns with
    (`face_align.estimate_norm`), so the models see crops framed as in their training.

    Every point counts. A robust fit (RANSAC/LMEDS) drops whichever point it deems an outlier; with
    5 points the chosen subset flips from frame to frame, so the crop jitters and leaves the
    reference framing (OpenCV's LMEDS fit: on the bundled portrait with 3 px landmark noise, 11% of
    draws landed over 0.5 px from InsightFace's crop, up to 37 px).
    """
    src = np.asarray(points, np.float64)
    dst = np.asarray(template, np.float64)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    spread = float((s * s).sum())
    if spread < 1e-9:
        raise ValueError("cannot align the face (degenerate landmarks)")
    # x' = a x - b y + tx, y' = b x + a y + ty minimises the squared error in closed form.
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / spread
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / spread
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (dst_mean - rot @ src_mean)[:, None]])


def align_crop(image: Image, landmarks: Landmarks, template: np.ndarray, size: int) -> tuple[Image, np.ndarray]:
    """The face warped onto `template` in a `size` square, and the image-to-crop matrix.

    Where the crop leaves the frame its edge pixels are repeated (InsightFace fills black): for a
    face cut by the frame edge the models see the picture continued rather than a black band, which
    no real face has (those pixels are never pasted back). Inside the frame the two crops agree.
    """
    m = alignment(five_points(landmarks), template)
    crop = cv2.warpAffine(image[:, :, :3], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cast(Image, crop), m


def read_emap(path: Path) -> np.ndarray:
    """The 512x512 identity projection stored as the inswapper graph's last initializer."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    if not model.graph.initializer:
        raise ContractError(f"{path.name}: no initializers, so no emap: is this inswapper_128.onnx?")
    emap = numpy_helper.to_array(model.graph.initializer[-1])
    if emap.shape != (512, 512):
        raise ContractError(f"{path.name}: the last initializer (emap) is {list(emap.shape)}, expected [512, 512]")
    return emap.astype(np.float32)


def prepare_arcface(crop112: Image) -> np.ndarray:
    rgb = cv2.cvtColor(crop112[:, :, :3], cv2.COLOR_BGR2RGB).astype(np.float32)
    return ((rgb - 127.5) / 127.5).transpose(2, 0, 1)[None]


def prepare_target(crop128: Image) -> np.ndarray:
    rgb = cv2.cvtColor(crop128[:, :, :3], cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    return rgb.transpose(2, 0, 1)[None]


def source_latent(embedding: np.ndarray, emap: np.ndarray) -> np.ndarray:
    e = embedding.reshape(1, -1).astype(np.float32)
    e /= max(float(np.linalg.norm(e)), 1e-12)
    latent = e @ emap
    return latent / max(float(np.linalg.norm(latent)), 1e-12)


def output_is_valid(out: np.ndarray) -> bool:
    """False for NaN/inf or an all-black face (the FP16 failure seen on some GPUs)."""
    return bool(np.isfinite(out).all() and out.max() > 0.02)


def face_mask(size: int = 128) -> np.ndarray:
    """Soft ellipse over the aligned face, feathered so no box edge shows after paste-back."""
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (size // 2, int(size * 0.54)), (int(size * 0.36), int(size * 0.44)), 0, 0, 360, (1.0,), -1)
    return np.asarray(cv2.GaussianBlur(mask, (0, 0), size * 0.05), np.float32)


def mouth_mask(landmarks: Landmarks, m: np.ndarray, size: int = 128) -> np.ndarray:
    """1 inside the target's own mouth opening (in crop space), feathered; keeps speech natural."""
    pts = landmarks[INNER_LIPS, :2].astype(np.float64)
    crop_pts = np.hstack([pts, np.ones((len(pts), 1))]) @ m.T
    mask = np.zeros((size, size), np.float32)
    cv2.fillPoly(mask, [np.round(crop_pts).astype(np.int32)], (1.0,))
    dilated = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2)
    return np.asarray(cv2.GaussianBlur(dilated, (0, 0), 2.0), np.float32)


class InSwapper:
    def __init__(self, pool: EnginePool) -> None:
        pool.require(MODELS, "inswapper")
        self.pool = pool
        self.swapper = pool.get("inswapper_128")
        self.arcface = pool.get("w600k_r50")
        self.emap = read_emap(pool.path_of("inswapper_128"))
        self.fell_back = False  # switched to the FP32 session after a NaN/black output
        self.bad_outputs = 0
        self._fp32_loading: Future | None = None  # the FP32 session, loading on a loader thread

    def embedding_for(self, image: Image, landmarks: Landmarks, priority: Priority = "live") -> np.ndarray:
        """ArcFace's raw [1,512] embedding of the face in `image`."""
        crop, _ = align_crop(image, landmarks, TEMPLATE_112, 112)
        return self.arcface.run({"input.1": prepare_arcface(crop)}, priority)["683"]

    def latent_for(self, image: Image, landmarks: Landmarks, priority: Priority = "live") -> np.ndarray:
        """The identity latent of the face in `image` (compute once per character and cache it)."""
        return source_latent(self.embedding_for(image, landmarks, priority), self.emap)

    def averaged_latent(self, faces: list[tuple[Image, Landmarks]], priority: Priority = "live") -> np.ndarray:
        """The latent of one person from several photos: the mean of their L2-normalised ArcFace
        embeddings (the identity they share; pose, light and expression average out)."""
        if not faces:
            raise ValueError("no photos to average")
        embeddings = [self.embedding_for(image, landmarks, priority).reshape(-1) for image, landmarks in faces]
        unit = [e / max(float(np.linalg.norm(e)), 1e-12) for e in embeddings]
        return source_latent(np.mean(unit, axis=0), self.emap)

    def upload_latent(self, latent: np.ndarray):
        return self.swapper.upload(latent)

    def resident_latent(self, image: Image, landmarks: Landmarks, priority: Priority = "live"):
        """The latent uploaded once to where the swapper runs: each frame then sends only the target
        face (196 KB) and takes back the swapped one."""
        return self.upload_latent(self.latent_for(image, landmarks, priority))

    def _swap(self, target: np.ndarray, latent, priority: Priority) -> np.ndarray | None:
        out = self.swapper.run({"target": target, "source": latent}, priority)["output"]
        if output_is_valid(out):
            return out
        self.bad_outputs += 1
        if not self.fell_back:
            fp32 = self._fp32_session(priority)
            if fp32 is None:
                return None  # frames stay untouched until the FP32 session is ready
            self.fell_back = True
            log.warning("inswapper returned a NaN/black face (%s); switching to FP32", self.swapper.precision)
            self.swapper = fp32
            out = self.swapper.run({"target": target, "source": latent}, priority)["output"]
            if output_is_valid(out):
                return out
            self.bad_outputs += 1
        return None

    def swapped_crop(
        self, frame: Image, landmarks: Landmarks, latent: np.ndarray, priority: Priority = "live"
    ) -> tuple[Image, np.ndarray] | None:
        """The swapped 128x128 face (BGR uint8) and the frame-to-crop matrix; None when the model
        gave no usable face."""
        crop, m = align_crop(frame, landmarks, TEMPLATE_128, 128)
        out = self._swap(prepare_target(crop), latent, priority)
        # Rounded to the nearest level (InsightFace truncates, a -0.5 level bias: at most 1 apart).
        return None if out is None else (postprocess_image(out), m)

    def _fp32_session(self, priority: Priority):
        """The FP32 inswapper session, or None while it loads off the live thread (a TensorRT build
        takes minutes); batch work (render, jobs) simply waits for it."""
        if priority == "batch":
            return self.pool.get("inswapper_128", precision="fp32")
        engine = self.pool.ready("inswapper_128", "fp32")
        if engine is None and self._fp32_loading is None:
            log.warning("inswapper returned a NaN/black face (%s); loading the FP32 session", self.swapper.precision)
            self._fp32_loading = self.pool.prefetch(["inswapper_128"], "fp32")
        return engine

    def swap_face(
        self,
        frame: Image,
        landmarks: Landmarks,
        latent: np.ndarray,
        keep_mouth: bool = False,
        priority: Priority = "live",
    ) -> bool:
        """Swap one face in `frame` in place. False when the model gave no usable face (frame unchanged).

        The face is blended through a feathered ellipse, only inside the crop's box. InsightFace
        blends the whole 128 square (eroded, blurred) over a full-frame warp: its corners carry the
        target's hair and background as the model redrew them, which shows as a square seam when
        they move. Where both masks are 1 the two give the same pixels (within 3 levels of rounding).
        """
        swapped = self.swapped_crop(frame, landmarks, latent, priority)
        if swapped is None:
            return False
        face, m = swapped
        mask = face_mask()
        if keep_mouth:
            mask = mask * (1.0 - mouth_mask(landmarks, m))
        paste_into(frame, face, mask, invert(m))
        return True
