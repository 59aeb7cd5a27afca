"""Putting a swapped face into the frame: lighting transfer, occlusion, blend modes, steadiness.

Pure functions on one face's box (`region`: the frame's pixels there, `patch`: the swapped face
drawn over the same box), shared by the swap backends. Statistics, low-pass and occlusion work on a
small copy of the box (about SMALL pixels across): they need no detail, and the full-size work per
frame stays one resize and one add per step.

- Lighting: the swapped face keeps its own detail (features, texture) but takes the target's
  low-frequency light and colour: both are low-passed over the skin only (normalised convolution,
  so eyes, brows and lips do not darken the estimate) and the difference is added to the patch.
  The source's own shadows (eye sockets, a lamp from one side) are low frequencies, so they
  are replaced by the target's instead of pasted as dark blotches.
- Occlusion: a robust model of the target's skin colour (median and spread in CIELAB chroma and
  lightness); pixels inside the face that are far from it (a microphone, hair, a coloured object)
  are not replaced. Eyes, brows, lips and nostrils are always face. Skin-coloured occluders (a
  hand) are not detected by colour (measured: a patch of the portrait's own cheek pasted over its
  mouth is swapped over as if absent; MediaPipe moves the mouth landmarks 11 px, guessing the mouth
  beneath, and gives no per-landmark visibility to tell); MediaPipe's bundled selfie segmentation labels a microphone in
  front of the face as person too (measured: 0.98 on a grey bar), so it cannot help here.
  Hands are found by MediaPipe Hands instead (tracking/hands.py, `occlusion_hands`) and cut out by
  `hand_cover`, a mask drawn from their landmarks.
- Blend modes: hard (a binary mask), feather (a soft mask), seamless (Poisson, `cv2.seamlessClone`
  on the face's box only, never on the whole frame).
"""

from __future__ import annotations

from typing import Literal, cast

import cv2
import numpy as np

from facecast.types import Image

BlendMode = Literal["hard", "feather", "seamless"]
SHADING_GRID = 48  # the lighting correction is kept at this size over the face box (smoothed over time there)
SMALL = 96  # statistics, low-pass and occlusion work on the face box scaled to about this many pixels


def small_scale(shape: tuple[int, ...]) -> tuple[float, tuple[int, int]]:
    """(factor, (width, height)) of the small copy of a face box of `shape`: an integer reduction
    (1/k), so the copy is one area average per k x k block (OpenCV's fast path; a fractional one
    costs three times as much), the box's last few rows and columns left out."""
    h, w = shape[:2]
    k = max(1, -(-max(h, w) // SMALL))
    return 1.0 / k, (max(2, w // k), max(2, h // k))


def lab(image: Image) -> np.ndarray:
    """float32 CIELAB: L 0..100, a and b about -127..127."""
    return cv2.cvtColor(image[:, :, :3].astype(np.float32) * (1.0 / 255.0), cv2.COLOR_BGR2Lab)


def small(image: Image, size: tuple[int, int]) -> Image:
    """The small copy (`small_scale`) of a box: its top-left `k * size` pixels area-averaged."""
    k = max(1, min(image.shape[1] // size[0], image.shape[0] // size[1]))
    return cast(Image, cv2.resize(image[: size[1] * k, : size[0] * k], size, interpolation=cv2.INTER_AREA))


def low_pass(values: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """The weighted Gaussian low-pass of `values` (H, W, C) where `weight` > 0 (normalised
    convolution); where the weight is thin the mean over the weight fills in (no division by almost
    nothing)."""
    w = weight.astype(np.float32)
    total = float(w.sum())
    mean = (values * w[..., None]).sum((0, 1)) / total if total > 0 else values.reshape(-1, values.shape[-1]).mean(0)
    num = cv2.GaussianBlur(values * w[..., None], (0, 0), sigma)
    den = cv2.GaussianBlur(w, (0, 0), sigma)[..., None]
    prior = 0.05  # weight of the mean: only decides where almost no skin is near
    return ((num + prior * mean) / (den + prior)).astype(np.float32)


def shading_correction(
    patch_small: Image, region_small: Image, skin: np.ndarray, scale: float, patch_skin: np.ndarray | None = None
) -> np.ndarray:
    """BGR difference (SHADING_GRID square, 3 channels, float32) that gives the patch the
    low-frequency light and colour of the region. Inputs are the small copies (`small_scale`):
    `skin`: the target's visible skin there; `patch_skin`: the patch's own skin (default `skin`;
    leave out marks that are not skin-coloured, such as tattoos or paint, so they are kept rather
    than averaged into the light); `scale`: the low-pass's sigma as a fraction of the box size
    (0 = one mean shift). Added in BGR (not CIELAB) so the full-size patch needs no colour
    conversion: for the slow, smooth differences it carries the two agree closely."""
    w_dst = (skin > 0).astype(np.float32)
    w_src = w_dst if patch_skin is None else (patch_skin > 0).astype(np.float32)
    src, dst = patch_small.astype(np.float32), region_small.astype(np.float32)
    if scale <= 0 or w_dst.sum() < 4 or w_src.sum() < 4:
        mean_dst = (dst * w_dst[..., None]).sum((0, 1)) / max(float(w_dst.sum()), 1e-6)
        mean_src = (src * w_src[..., None]).sum((0, 1)) / max(float(w_src.sum()), 1e-6)
        delta = (mean_dst - mean_src).astype(np.float32)
        return np.broadcast_to(delta, (SHADING_GRID, SHADING_GRID, 3)).copy()
    sigma = max(0.8, scale * max(dst.shape[:2]))
    # A blur this wide needs few samples: the weighted values are area-averaged to about 1.5 pixels
    # per sigma first (the same normalised convolution, at a quarter of the cost or less).
    r = max(1, int(sigma / 1.5))
    if r > 1:
        size = (max(2, dst.shape[1] // r), max(2, dst.shape[0] // r))
        dst, w_dst = _reduced(dst, w_dst, size)
        src, w_src = _reduced(src, w_src, size)
        sigma /= r
    delta = low_pass(dst, w_dst, sigma) - low_pass(src, w_src, sigma)
    return cast(np.ndarray, cv2.resize(delta, (SHADING_GRID, SHADING_GRID), interpolation=cv2.INTER_LINEAR))


def _reduced(values: np.ndarray, weight: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """`values` and `weight` area-averaged to `size`, the values weighted (so the normalised
    convolution of the result equals that of the input blurred the same way)."""
    w = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    v = cv2.resize(values * weight[..., None], size, interpolation=cv2.INTER_AREA)
    return (v / np.maximum(w, 1e-6)[..., None]).astype(np.float32), w


def apply_correction(patch: Image, correction: np.ndarray) -> Image:
    """`patch` (BGR uint8) with a BGR correction field (any size, stretched over the patch) added."""
    h, w = patch.shape[:2]
    delta = cv2.resize(correction, (w, h), interpolation=cv2.INTER_LINEAR)
    return cast(Image, cv2.add(patch, delta, dtype=cv2.CV_8U))


def skin_model(lab_small: np.ndarray, skin: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Robust CIELAB median and spread (1.4826 x MAD) of the skin pixels; None when too few."""
    if cv2.countNonZero(skin.astype(np.uint8)) > 1600:  # a median needs no more: every fourth pixel, evenly
        lab_small, skin = lab_small[::2, ::2], skin[::2, ::2]
    pix = np.ascontiguousarray(lab_small[skin > 0].T, dtype=np.float32)  # (3, n): each channel contiguous
    n = pix.shape[1]
    if n < 30:
        return None
    # The middle value by partition (np.median's checks and copies cost five times as much here).
    median = np.partition(pix, n // 2, axis=1)[:, n // 2]
    spread = 1.4826 * np.partition(np.abs(pix - median[:, None]), n // 2, axis=1)[:, n // 2]
    return median, spread.astype(np.float32)


def not_skin(
    lab_small: np.ndarray, face: np.ndarray, protect: np.ndarray, model: tuple[np.ndarray, np.ndarray], threshold: float
) -> np.ndarray:
    """uint8 mask (1 = in front of the face: not the target's skin) over the small copy.

    `face`: where the face is; `protect`: eyes, brows, lips, nostrils (never occluders: they are not
    skin-coloured by nature). A pixel is an occluder when its distance to the skin model, in units
    of the skin's own spread (at least 3 in chroma and 12 in lightness, so an even-toned face does
    not make every shadow an occluder), exceeds `threshold`. Lightness counts half: shading
    changes it on real skin."""
    median, spread = model
    floor = np.array([12.0, 3.0, 3.0], np.float32)
    weight = np.array([0.5, 1.0, 1.0], np.float32) / np.maximum(spread, floor)
    z = (lab_small - median) * weight
    np.multiply(z, z, out=z)
    hit = ((z.sum(2) > threshold * threshold) & (face > 0) & (protect == 0)).astype(np.uint8)
    hit = cv2.morphologyEx(hit, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # specks are noise, not objects
    return cast(np.ndarray, cv2.dilate(hit, np.ones((3, 3), np.uint8)))  # cover the object's anti-aliased edge


PALM = [0, 1, 2, 5, 9, 13, 17]  # MediaPipe Hands' wrist and the fingers' base joints
FINGERS = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20]]  # base to tip


def hand_cover(hands: list[np.ndarray], origin: tuple[int, int], f: float, shape: tuple[int, int]) -> np.ndarray:
    """uint8 mask (1 = a hand in front of the face) over the small copy (`shape`, the box at
    `origin` scaled by `f`) from hands' 21 landmarks (frame pixels): the palm's filled hull and each
    finger as a line as thick as a finger (the spacing of the knuckles), so the gaps between spread
    fingers stay face. Dilated by a pixel like `not_skin`'s occluders, for the hand's soft edge."""
    cover = np.zeros(shape, np.uint8)
    for hand in hands:
        pts = (hand[:, :2].astype(np.float64) - origin) * f
        knuckles = pts[[5, 9, 13, 17]]
        width = max(1, round(1.1 * float(np.linalg.norm(np.diff(knuckles, axis=0), axis=1).mean())))
        cv2.fillConvexPoly(cover, cv2.convexHull(np.round(pts[PALM] * 16).astype(np.int32)), (1,), cv2.LINE_8, shift=4)
        for finger in FINGERS:
            chain = np.round(pts[finger] * 16).astype(np.int32)
            cv2.polylines(cover, [chain], False, (1,), width, cv2.LINE_8, shift=4)
            tip = (int(chain[-1, 0]), int(chain[-1, 1]))
            cv2.circle(cover, tip, width * 8, (1,), -1, cv2.LINE_8, shift=4)  # the fingertip's round end
    return cast(np.ndarray, cv2.dilate(cover, np.ones((3, 3), np.uint8)))


def composite(region: Image, patch: Image, mask: np.ndarray, mode: BlendMode, opacity: float = 1.0) -> Image:
    """The box's pixels with `patch` put in through `mask` (float [0,1], 1 = patch)."""
    if mode == "hard":
        alpha = (mask > 0.5).astype(np.float32)
    elif mode == "seamless":
        hard = (mask > 0.5).astype(np.uint8) * 255
        # seamlessClone needs the mask inside the destination with a border: the box has a margin.
        hard[:1, :], hard[-1:, :], hard[:, :1], hard[:, -1:] = 0, 0, 0, 0
        if cv2.countNonZero(hard) > 16:
            bx, by, bw, bh = cv2.boundingRect(hard)
            centre = (bx + bw // 2, by + bh // 2)
            # A copy: OpenCV 4.11's seamlessClone writes into the mask it is given.
            cloned = cv2.seamlessClone(patch, np.ascontiguousarray(region), hard.copy(), centre, cv2.NORMAL_CLONE)
            patch = cast(Image, cloned)
        # Outside the hard mask the clone changes nothing; its edge is softened by the feathered mask.
        alpha = np.minimum(mask, cv2.GaussianBlur(hard, (0, 0), 2).astype(np.float32) / 255.0)
    else:
        alpha = mask
    if opacity < 1:
        alpha = alpha * opacity
    return cast(Image, cv2.blendLinear(patch, region, alpha, 1.0 - alpha))


class LandmarkSteadier:
    """Holds still the landmark jitter of one face while following real motion at once.

    Each point moves by `min(1, (distance / reach)²)` of the way towards its new position: moves
    well under `reach` (tracker noise, a pixel or so) are mostly held back, moves of `reach` or more
    (the head moving) pass untouched, so the pasted face neither shimmers nor lags."""

    def __init__(self, reach_px: float) -> None:
        self.reach = reach_px
        self.points: np.ndarray | None = None

    def __call__(self, points: np.ndarray) -> np.ndarray:
        p = np.asarray(points, np.float64)
        if self.points is None or self.points.shape != p.shape or self.reach <= 0:
            self.points = p.copy()
            return p
        step = p - self.points
        dist = np.linalg.norm(step, axis=1, keepdims=True)
        self.points = self.points + step * np.minimum(1.0, (dist / self.reach) ** 2)
        return self.points.copy()


def delta_e(image: Image, inner: np.ndarray, outer: np.ndarray) -> float:
    """CIELAB ΔE (CIE76) between the median colour of `image` over `inner` (the pasted skin along
    the paste's edge) and over `outer` (the target's own skin around it). A patch of the wrong
    colour or lightness shows as a step between the two."""
    values = lab(image)
    a, b = np.median(values[inner > 0], axis=0), np.median(values[outer > 0], axis=0)
    return float(np.linalg.norm(a - b))
