"""Dense image warps driven by a few hundred control points, cheap enough for every frame.

The recipe (shared by the `animate` and `swap` mesh backends and the synthetic driver):

1. Per character, once: a thin-plate spline (TPS) over fixed control points, evaluated on a coarse
   grid. Because the centres never move, the whole interpolation collapses into one matrix
   `basis` (grid points x control points): the displacement field of a frame is `basis @ d`.
2. Per frame: that matrix product gives the forward displacement f(x) = x + d(x) on the grid.
   Image warping needs the backward map g = f^-1 (for each output pixel, where to read from); it
   is found by fixed-point iteration x <- y - d(x), sampling d bilinearly on the tiny grid.
3. The coarse backward map is upsampled with cv2.resize and applied with one cv2.remap.

Everything here is pure numpy/OpenCV: no model, no state between frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import cv2
import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]

# Mesh landmark groups (MediaPipe face mesh indices), ordered along each contour.
FACE_OVAL = [
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
]
LIPS_OUTER = [61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146]
INNER_LIP_UPPER = [78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308]
INNER_LIP_LOWER = [308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78]
MOUTH_INNER = INNER_LIP_UPPER + INNER_LIP_LOWER[1:-1]  # closed polygon, upper lip left to right then back
# Eyes as seen in the image: "left" = the eye on the image's left (the subject's right eye).
EYE_LEFT_UPPER = [33, 246, 161, 160, 159, 158, 157, 173, 133]
EYE_LEFT_LOWER = [133, 155, 154, 153, 145, 144, 163, 7, 33]
EYE_RIGHT_UPPER = [362, 398, 384, 385, 386, 387, 388, 466, 263]
EYE_RIGHT_LOWER = [263, 249, 390, 373, 374, 380, 381, 382, 362]
EYE_LEFT = EYE_LEFT_UPPER + EYE_LEFT_LOWER[1:-1]
EYE_RIGHT = EYE_RIGHT_UPPER + EYE_RIGHT_LOWER[1:-1]
# Upper/lower lid pairs (same position along the eye), for closing the eyes.
LID_PAIRS_LEFT = [(246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155)]
LID_PAIRS_RIGHT = [(398, 382), (384, 381), (385, 380), (386, 374), (387, 373), (388, 390), (466, 249)]
EYE_LEFT_RING = [130, 25, 110, 24, 23, 22, 26, 112, 243]  # skin below the lower lid
EYE_RIGHT_RING = [359, 255, 339, 254, 253, 252, 256, 341, 463]
BROW_LEFT = [70, 63, 105, 66, 107, 46, 53, 52, 65, 55]
BROW_RIGHT = [300, 293, 334, 296, 336, 276, 283, 282, 295, 285]
NOSE = [1, 2, 4, 5, 6, 168, 195, 197, 98, 327, 94, 129, 358, 49, 279]
CHEEKS = [50, 280, 205, 425, 187, 411, 123, 352, 116, 345, 147, 376, 207, 427, 36, 266]
FOREHEAD = [151, 9, 108, 337, 69, 299, 104, 333]
CHIN = [175, 199, 200, 18, 83, 313, 32, 262, 201, 421, 208, 428]
# Points that move with the skull only (no expression): used to find head rotation and scale.
RIGID = [
    10,
    151,
    9,
    8,
    168,
    6,
    197,
    195,
    5,
    4,
    1,
    33,
    133,
    362,
    263,
    234,
    454,
    93,
    323,
    127,
    356,
    162,
    389,
    21,
    251,
    54,
    284,
    103,
    332,
    109,
    338,
    116,
    345,
    98,
    327,
]

# The head's angles for the puppet: the points of RIGID that stay with the skull whatever the face
# does (the nose's bridge and tip, the eye corners, the face's sides at eye level). The forehead's
# points move against the skull (raised brows pull its skin; on real videos they moved most of
# RIGID's, in height and in depth) and the cheeks with a smile, which RIGID's fit read as nods
# (tools/judge_animate.py, 16 real videos: nod correlation pooled 0.761 -> 0.777, at most 0.76 -> 0.87,
# see docs/PERFORMANCE.md).
POSE = [168, 6, 197, 195, 5, 4, 1, 33, 133, 362, 263, 234, 454, 93, 323, 127, 356]


def _tps_u(r2: np.ndarray) -> np.ndarray:
    """TPS radial basis r^2 log r, written with r^2 (0 at r = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        u = 0.5 * r2 * np.log(r2)
    return np.nan_to_num(u, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass(frozen=True)
class Grid:
    """A coarse grid whose point (i, j) sits at (x0 + j*sx, y0 + i*sy) in image pixels."""

    x0: float
    y0: float
    sx: float
    sy: float
    cols: int
    rows: int

    @classmethod
    def covering(cls, x: float, y: float, width: int, height: int, step: float) -> Grid:
        """The grid that cv2.resize of a (rows, cols) array to (height, width) interpolates exactly.

        Coarse sample j sits at fine coordinate (j + 0.5) * width / cols - 0.5 (OpenCV's pixel-centre
        convention), offset by (x, y).
        """
        cols = max(2, round(width / step))
        rows = max(2, round(height / step))
        sx, sy = width / cols, height / rows
        return cls(x + 0.5 * sx - 0.5, y + 0.5 * sy - 0.5, sx, sy, cols, rows)

    def points(self) -> FloatArray:
        xs = self.x0 + self.sx * np.arange(self.cols, dtype=np.float32)
        ys = self.y0 + self.sy * np.arange(self.rows, dtype=np.float32)
        gx, gy = np.meshgrid(xs, ys)
        return np.stack([gx, gy], axis=-1).astype(np.float32)  # (rows, cols, 2)

    def mapped(self, m: np.ndarray) -> FloatArray:
        """The grid's points taken through the 2x3 affine `m`, (rows, cols, 2) float32: built from
        one row and one column (an affine map of a regular grid is a sum of the two), not from every
        point."""
        xs = self.x0 + self.sx * np.arange(self.cols)
        ys = self.y0 + self.sy * np.arange(self.rows)
        out = np.empty((self.rows, self.cols, 2), np.float32)
        for k in (0, 1):
            out[..., k] = (m[k, 0] * xs + m[k, 2])[None, :] + (m[k, 1] * ys)[:, None]
        return out

    def sample(self, field: FloatArray, at: FloatArray) -> FloatArray:
        """Bilinear sample of a (rows, cols, 2) field at image points `at` (..., 2); edges replicate."""
        u = ((at[..., 0] - self.x0) / self.sx).astype(np.float32)
        v = ((at[..., 1] - self.y0) / self.sy).astype(np.float32)
        # cv2 returns the input's dtype (float32), which its stubs cannot express
        return cast(FloatArray, cv2.remap(field, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))


class TpsField:
    """Thin-plate spline through fixed centres, pre-evaluated on a grid: field = basis @ values.

    `pinned`: how many of the last centres always have the value 0 (image borders that never move).
    They shape the spline but add nothing to the product, so their columns are left out of `basis`
    and `field()` takes values for the other centres only.
    """

    def __init__(self, centres: np.ndarray, grid: Grid, smoothing: float = 1e-4, pinned: int = 0) -> None:
        centres = np.asarray(centres, dtype=np.float64)
        k = len(centres)
        if k < 3:
            raise ValueError("a thin-plate spline needs at least 3 control points")
        scale = float(max(grid.cols * grid.sx, grid.rows * grid.sy))
        c = centres / scale  # normalised coordinates keep the system well conditioned
        d2 = ((c[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        big_k = _tps_u(d2) + smoothing * np.eye(k)
        p = np.hstack([np.ones((k, 1)), c])
        lhs = np.zeros((k + 3, k + 3))
        lhs[:k, :k], lhs[:k, k:], lhs[k:, :k] = big_k, p, p.T
        inv = np.linalg.pinv(lhs)[:, :k]  # (k+3, k): values -> [weights; affine]
        g = grid.points().reshape(-1, 2).astype(np.float64) / scale
        gd2 = ((g[:, None, :] - c[None, :, :]) ** 2).sum(-1)
        design = np.hstack([_tps_u(gd2), np.ones((len(g), 1)), g])
        self.grid = grid
        self.centres = centres.astype(np.float32)
        if not 0 <= pinned < k:
            raise ValueError(f"pinned must be 0 to {k - 1} centres, got {pinned}")
        self.moving = k - pinned
        self.basis = np.ascontiguousarray((design @ inv)[:, : self.moving], dtype=np.float32)  # (rows*cols, moving)

    def field(self, values: np.ndarray) -> FloatArray:
        """The (rows, cols, 2) field interpolating `values` (moving, 2) given at the moving centres."""
        out = self.basis @ np.asarray(values, dtype=np.float32)
        return out.reshape(self.grid.rows, self.grid.cols, 2)


def invert_displacement(grid: Grid, disp: FloatArray, targets: FloatArray, iterations: int = 3) -> FloatArray:
    """Solve x + d(x) = y for each y in `targets` (..., 2), d given on `grid`: the backward map.

    Newton steps with the field's Jacobian (sampled from the grid like the field itself) converge
    where the warp stretches a lot (a jaw dropping opens the lips to several times their gap), where
    plain fixed-point iteration x <- y - d(x) would not. Where the warp folds (det J <= 0) the step
    falls back to the fixed-point one.

    Runs on every frame: the field and its four derivatives are packed into one 4-channel and one
    2-channel grid (cv2.remap samples up to 4 channels in one call), and the step is computed in
    float32 on contiguous planes, in place where it can be.
    """
    rows, cols = disp.shape[:2]
    to_u, to_v = np.float32(1.0 / grid.sx), np.float32(1.0 / grid.sy)
    field_a = np.empty((rows, cols, 4), np.float32)  # d_x, d_y, dd_x/dx, dd_x/dy
    field_b = np.empty((rows, cols, 2), np.float32)  # dd_y/dx, dd_y/dy
    field_a[..., :2] = disp
    d_dx, d_dy = _differences(disp)  # per grid step, each (rows, cols, 2)
    np.multiply(d_dx[..., 0], to_u, out=field_a[..., 2])
    np.multiply(d_dy[..., 0], to_v, out=field_a[..., 3])
    np.multiply(d_dx[..., 1], to_u, out=field_b[..., 0])
    np.multiply(d_dy[..., 1], to_v, out=field_b[..., 1])
    tx, ty = np.ascontiguousarray(targets[..., 0]), np.ascontiguousarray(targets[..., 1])
    start = grid.sample(disp, targets)
    x, y = tx - start[..., 0], ty - start[..., 1]
    cap = np.float32(3.0 * max(grid.sx, grid.sy))  # Newton can overshoot across a fold: a few grid cells
    for _ in range(iterations):
        u = (x - np.float32(grid.x0)) * to_u
        v = (y - np.float32(grid.y0)) * to_v
        dx, dy, a, b = cv2.split(cv2.remap(field_a, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        c, d = cv2.split(cv2.remap(field_b, u, v, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        r0 = x + dx - tx  # residual f(x) - y
        r1 = y + dy - ty
        a += 1.0
        d += 1.0
        det = a * d - b * c
        fold = det <= 0.05
        folded = bool(fold.any())
        if folded:
            det[fold] = 1.0
        step0 = (d * r0 - b * r1) / det
        step1 = (a * r1 - c * r0) / det
        if folded:
            step0[fold] = r0[fold]
            step1[fold] = r1[fold]
        x -= np.clip(step0, -cap, cap, out=step0)
        y -= np.clip(step1, -cap, cap, out=step1)
    return np.dstack([x, y])


def _differences(field: FloatArray) -> tuple[FloatArray, FloatArray]:
    """np.gradient of a (rows, cols, k) field along x and y (central inside, one-sided at the edges),
    at a fraction of its cost on a small grid."""
    d_dx, d_dy = np.empty_like(field), np.empty_like(field)
    np.subtract(field[:, 2:], field[:, :-2], out=d_dx[:, 1:-1])
    d_dx[:, 1:-1] *= np.float32(0.5)
    np.subtract(field[:, 1], field[:, 0], out=d_dx[:, 0])
    np.subtract(field[:, -1], field[:, -2], out=d_dx[:, -1])
    np.subtract(field[2:], field[:-2], out=d_dy[1:-1])
    d_dy[1:-1] *= np.float32(0.5)
    np.subtract(field[1], field[0], out=d_dy[0])
    np.subtract(field[-1], field[-2], out=d_dy[-1])
    return d_dx, d_dy


def upsample(coarse: FloatArray, width: int, height: int) -> FloatArray:
    """A (rows, cols, 2) coarse field to (height, width, 2), bilinear, matching Grid.covering."""
    return cast(FloatArray, cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR))  # float32 in, out


class PositionUpsampler:
    """A coarse map of absolute positions on `grid` (from `Grid.covering(x, y, width, height, ...)`)
    to every pixel of that box, bilinear: what `upsample(positions - grid points) + identity` gives,
    without the full-size identity map and the full-size add (0.25 ms a frame for 512x512).

    Positions are linear across the grid where nothing moves, and cv2.resize reproduces a linear
    function exactly, except in the outer half cell, where it repeats the edge sample. There, and only
    there, the identity's share is added back: per column for x, per row for y.
    """

    def __init__(self, grid: Grid, width: int, height: int, x: float = 0.0, y: float = 0.0) -> None:
        self.width, self.height = width, height
        correction = identity_map(width, height, x, y) - upsample(grid.points(), width, height)
        self._cx, self._cy = correction[0, :, 0].copy(), correction[:, 0, 1].copy()
        self._columns = _edge_bands(self._cx)
        self._rows = _edge_bands(self._cy)

    def __call__(self, positions: FloatArray) -> FloatArray:
        fine = upsample(positions, self.width, self.height)
        for band in self._columns:
            fine[:, band, 0] += self._cx[band]
        for band in self._rows:
            fine[band, :, 1] += self._cy[band, None]
        return fine


def _edge_bands(correction: np.ndarray, tolerance: float = 1e-3) -> list[slice]:
    """The slices at either end of a 1-D correction where it is not ~0 (resize's clamped edges)."""
    off = np.flatnonzero(np.abs(correction) > tolerance)
    n = len(correction)
    head = off[off < n // 2]
    tail = off[off >= n // 2]
    bands = []
    if len(head):
        bands.append(slice(0, int(head.max()) + 1))
    if len(tail):
        bands.append(slice(int(tail.min()), n))
    return bands


def identity_map(width: int, height: int, x: float = 0.0, y: float = 0.0) -> FloatArray:
    xs = np.arange(width, dtype=np.float32) + x
    ys = np.arange(height, dtype=np.float32) + y
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx, gy], axis=-1)


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation) taking src to dst."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    denom = (a**2).sum()
    if denom < 1e-9:
        return np.array([[1, 0, md[0] - ms[0]], [0, 1, md[1] - ms[1]]], dtype=np.float64)
    c = (a * b).sum() / denom
    s = (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum() / denom
    rot = np.array([[c, -s], [s, c]])
    t = md - rot @ ms
    return np.hstack([rot, t[:, None]])


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def invert_affine(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m.astype(np.float64))


def kabsch(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Scale s, rotation r (3x3) and translation t with s * r @ src + t ~ dst (points as rows)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    h = a.T @ b
    u, sv, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(vt.T @ u.T))
    fix = np.diag([1.0, 1.0, d])
    r = vt.T @ fix @ u.T
    s = float((sv * np.diag(fix)).sum() / max((a**2).sum(), 1e-12))
    t = md - s * r @ ms
    return s, r, t
