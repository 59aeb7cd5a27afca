"""Face restoration models after a swap (GFPGAN 1.4, CodeFormer, GPEN-BFR 256/512, RestoreFormer++):
5-point alignment to the model's FFHQ template, prepare / forward / postprocess, and the paste-back.

The result of one enhancement is kept as a **residual**: enhanced minus raw, in the aligned crop's
space (`Enhanced`). Pasting it is `raw + blend x residual` under a feathered mask, so `blend` mixes
the enhanced and the raw face, and the same residual can be carried onto later frames: the crop is
anchored to the face's 5 points, so re-aligning the new frame's face moves the detail with the face
(the live enhancer runs on the frames it can take and carries its detail onto those in between).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np

from facecast.engines.base import Engine
from facecast.engines.gate import Priority
from facecast.neural.crop import invert, paste_into
from facecast.neural.faceswap import alignment, five_points
from facecast.types import Image, Landmarks

# The FFHQ 5-point template (eye centres, nose tip, mouth corners) the restoration models were
# trained on, as fractions of the crop size; GFPGAN's, CodeFormer's and GPEN's alignment all use it.
TEMPLATE_FFHQ = np.array(
    [
        [0.37691676, 0.46864664],
        [0.62285697, 0.46912813],
        [0.50123859, 0.61331904],
        [0.39308822, 0.72541100],
        [0.61150205, 0.72490465],
    ],
    dtype=np.float64,
)


@dataclass(frozen=True, slots=True)
class EnhancerSpec:
    key: str  # contract key (engines/contracts.py) and file key (models/registry.py)
    size: int  # square input and output
    image_input: str
    output: str
    fidelity_input: str | None = None  # CodeFormer's `w`


ENHANCERS: dict[str, EnhancerSpec] = {
    s.key: s
    for s in (
        EnhancerSpec("gfpgan_1.4", 512, "input", "output"),
        EnhancerSpec("codeformer", 512, "x", "y", fidelity_input="w"),
        EnhancerSpec("gpen_bfr_256", 256, "input", "output"),
        EnhancerSpec("gpen_bfr_512", 512, "input", "output"),
        EnhancerSpec("restoreformer_pp", 512, "input", "output"),
    )
}


def align(image: Image, landmarks: Landmarks, size: int) -> tuple[Image, np.ndarray]:
    """The face in `image` warped onto the FFHQ template in a `size` square, and the frame-to-crop matrix."""
    m = alignment(five_points(landmarks), TEMPLATE_FFHQ * size)
    crop = cv2.warpAffine(image[:, :, :3], m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cast(Image, crop), m


def prepare(crop: Image) -> np.ndarray:
    """BGR uint8 -> [1,3,S,S] float32 RGB in [-1, 1]."""
    rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) * (1.0 / 255.0)
    return ((rgb - 0.5) / 0.5).transpose(2, 0, 1)[None]


def postprocess(output: np.ndarray) -> Image:
    """[1,3,S,S] RGB in [-1, 1] -> BGR uint8. NaN (a broken FP16 build) becomes 0 and is caught by `is_valid`."""
    rgb = (np.clip(np.nan_to_num(output[0], nan=-1.0), -1.0, 1.0) + 1.0) * 127.5
    bgr = cv2.cvtColor(np.ascontiguousarray((rgb + 0.5).astype(np.uint8).transpose(1, 2, 0)), cv2.COLOR_RGB2BGR)
    return cast(Image, bgr)


def is_valid(output: np.ndarray) -> bool:
    """False for NaN/inf or a flat single-colour face (GFPGAN's TensorRT FP16 failure, its issue #483)."""
    return bool(np.isfinite(output).all() and float(output.std()) > 1e-3)


def forward(engine: Engine, spec: EnhancerSpec, batch: np.ndarray, fidelity: float, priority: Priority) -> np.ndarray:
    feeds = {spec.image_input: batch}
    if spec.fidelity_input is not None:
        feeds[spec.fidelity_input] = np.array([fidelity], np.float64)
    return engine.run(feeds, priority)[spec.output]


def paste_mask(size: int) -> np.ndarray:
    """Feathered ellipse over the aligned face: the residual fades out before the crop's edge."""
    mask = np.zeros((size, size), np.float32)
    centre = (size // 2, int(size * 0.56))
    cv2.ellipse(mask, centre, (int(size * 0.33), int(size * 0.40)), 0, 0, 360, (1.0,), -1)
    return np.asarray(cv2.GaussianBlur(mask, (0, 0), size * 0.04), np.float32)


@dataclass(slots=True)
class Enhanced:
    """One enhancement: enhanced minus raw in the crop's space (float32 BGR), and what it was made on."""

    residual: np.ndarray
    seq: int  # the frame it was computed on


def enhance_crop(
    engine: Engine, spec: EnhancerSpec, crop: Image, fidelity: float, priority: Priority, seq: int
) -> Enhanced | None:
    """The model on one aligned crop; None when its output is unusable (NaN, flat)."""
    out = forward(engine, spec, prepare(crop), fidelity, priority)
    if not is_valid(out):
        return None
    return Enhanced(postprocess(out).astype(np.float32) - crop.astype(np.float32), seq)


def paste_residual(frame: Image, landmarks: Landmarks, enhanced: Enhanced, blend: float, mask: np.ndarray) -> None:
    """Add `blend` x the residual to the face in `frame` (in place), aligned to the face's current
    5 points, only inside the crop's box."""
    size = enhanced.residual.shape[0]
    raw, m = align(frame, landmarks, size)
    patch = np.clip(raw.astype(np.float32) + enhanced.residual, 0, 255).astype(np.uint8)
    paste_into(frame, patch, mask * blend, invert(m))
