"""`animate` with backend `mesh`: a character portrait follows the person on camera, on the CPU.

No neural network and no downloaded weights: the character is a 2-D puppet rigged on its own
MediaPipe face mesh.

- `MeshRig` (one per character and output size, built once): the portrait framed to the output
  size with its matte as alpha, a thin-plate-spline basis over ~200 control points (face mesh, a
  rigid ring around the head, fixed image borders), the skin the eyelids show and the mouth colours.
  `render(RigParams)` turns head angles, eye openness, mouth opening and an expression field into
  the output image: the head's rigid motion mixed from precomputed fields plus a (grid x expressive
  points) matrix product, a Newton inversion on the coarse grid, one cv2.remap, then the eyelids and
  the mouth interior painted in their small boxes.
- `Retargeter` turns the tracked driver face into RigParams, relative to a neutral pose taken from
  the first tracked frames (and again on `recalibrate()`), scaled by the configured multipliers,
  easing back to neutral when the face is lost.
- `AnimateMesh` is the Effect: it reads the active character from the library every frame.
"""

from __future__ import annotations

import logging
import math
import threading
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, cast

import cv2
import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.effects import warp
from facecast.effects.base import Effect
from facecast.tracking.geometry import pose_from_rotation
from facecast.types import Face, FramePacket, Image, Landmarks

log = logging.getLogger(__name__)

BackgroundMode = Literal["transparent", "original", "color"]

GRID_STEP = 8  # output pixels between coarse grid points
# A 2-D warp of a flat portrait shows less rotation than it is given, and nods less than turns:
# MediaPipe reads back about 0.5 of a nod and 0.8 of a turn from the bundled portrait (its depth is the
# mesh's own, flattened so close points never cross). Nods are rendered 1.4 times larger, so the
# character nods about as far as the performer (as the tracker reads both; 0.8 as far at 1.0) and
# small nods stand out from the tracker's noise. More than that bends the mouth and the eyes as read
# back (measured: at 1.6 and 1.8 the mouth's and the eyes' correlation with the performer drop).
RENDER_GAIN = {"pitch": 1.4, "yaw": 1.0}
# The largest angles RigParams may ask for: rendered, about 31 degrees of nod and 40 of turn, the most
# a 2-D warp shows without tearing.
MAX_ANGLE = {"pitch": 22.0, "yaw": 40.0, "roll": 40.0}
MAX_EYE = 1.3  # eyes open wider than the portrait's by at most this much

# The expression regions whose motion relative to the skull is copied from the driver.
_LOWER_OVAL = [361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176, 149, 150, 136, 172, 58, 132]
MOUTH_REGION = sorted(
    set(
        warp.LIPS_OUTER
        + warp.INNER_LIP_UPPER
        + warp.INNER_LIP_LOWER
        + warp.CHIN
        + _LOWER_OVAL
        + [205, 425, 207, 427, 187, 411, 147, 376, 36, 266]
    )
)
BROW_REGION = sorted(set(warp.BROW_LEFT + warp.BROW_RIGHT))
# Regions that a larger rendered nod moves as blocks (see MeshRig.targets).
GAIN_BLOCKS = (
    np.array(sorted(set(warp.LIPS_OUTER + warp.INNER_LIP_UPPER + warp.INNER_LIP_LOWER))),
    np.array(warp.EYE_LEFT),
    np.array(warp.EYE_RIGHT),
)
# Each eye's lids, corner to corner in the same order: (upper, lower) landmark indices.
LIDS = (
    (np.array(warp.EYE_LEFT_UPPER), np.array(warp.EYE_LEFT_LOWER[::-1])),
    (np.array(warp.EYE_RIGHT_UPPER), np.array(warp.EYE_RIGHT_LOWER[::-1])),
)


class PoseMultipliers(StrictModel):
    yaw: float = Field(1.0, ge=0, le=3, description="turning left/right")
    pitch: float = Field(1.0, ge=0, le=3, description="nodding up/down")
    roll: float = Field(1.0, ge=0, le=3, description="tilting the head")


class AnimateMeshConfig(StrictModel):
    backend: Literal["mesh"] = Field("mesh", description="mesh = landmark-driven warp on the CPU, no weights")
    width: int = Field(512, ge=64, le=4096, description="output width in pixels")
    height: int = Field(512, ge=64, le=4096, description="output height in pixels")
    background: BackgroundMode = Field("transparent", description="transparent | original | color")
    background_color: tuple[int, int, int] = Field((0, 177, 64), description="BGR used by background: color")
    pose: PoseMultipliers = PoseMultipliers()
    movement: float = Field(0.5, ge=0, le=2, description="how much the character follows head shifts and zoom")
    eyes: float = Field(1.0, ge=0, le=2, description="blink strength")
    mouth: float = Field(1.0, ge=0, le=3, description="mouth and jaw movement")
    brows: float = Field(1.0, ge=0, le=3, description="eyebrow movement")
    calibration_frames: int = Field(10, ge=1, le=300, description="tracked frames averaged into the neutral pose")
    return_to_neutral_s: float = Field(
        0.35, gt=0, le=10, description="time constant of easing back when no face is tracked"
    )


@dataclass(slots=True)
class RigParams:
    """What the puppet does in one frame, in the character's own terms."""

    pitch: float = 0.0  # degrees, HeadPose convention (chin up > 0)
    yaw: float = 0.0  # face turns toward the image's right > 0
    roll: float = 0.0  # counter-clockwise on screen > 0
    shift: tuple[float, float] = (0.0, 0.0)  # output pixels
    scale: float = 1.0
    eyes: tuple[float, float] = (1.0, 1.0)  # openness relative to the portrait: 0 closed, 1 as drawn
    mouth: float = 0.0  # extra jaw drop in mouth widths (the synthetic driver's knob)
    expression: np.ndarray | None = None  # (478, 3) landmark offsets in output pixels, skull frame


def rotation_from_pose(pitch: float, yaw: float, roll: float) -> np.ndarray:
    """The 3x3 rotation (camera axes: x right, y down, z away) that `pose_from_rotation` reads back
    as HeadPose(pitch, yaw, roll)."""
    p, y, r = (math.radians(-v) for v in (pitch, yaw, roll))
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _face_scale(lm: np.ndarray) -> float:
    pts = lm[warp.RIGID, :2]
    return float(np.sqrt(((pts - pts.mean(0)) ** 2).sum(1).mean()))


def _mouth_drop_weights() -> dict[int, float]:
    """How far each landmark moves down, per unit of jaw drop (the parametric mouth)."""
    w: dict[int, float] = {}
    for i in [*warp.INNER_LIP_LOWER, 375, 321, 405, 314, 17, 84, 181, 91, 146]:
        w[i] = 1.0
    for i in [*warp.INNER_LIP_UPPER, 185, 40, 39, 37, 0, 267, 269, 270, 409]:
        w[i] = -0.06
    for i in (61, 291, 78, 308):
        w[i] = 0.4
    for i in [*warp.CHIN, 152, 148, 176, 377, 400, 378, 149]:
        w[i] = 0.85
    for i, v in (
        (150, 0.6),
        (379, 0.6),
        (136, 0.45),
        (365, 0.45),
        (172, 0.3),
        (397, 0.3),
        (58, 0.15),
        (288, 0.15),
        (205, 0.15),
        (425, 0.15),
        (207, 0.25),
        (427, 0.25),
        (147, 0.1),
        (376, 0.1),
        (36, 0.05),
        (266, 0.05),
    ):
        w[i] = v
    return w


MOUTH_DROP = _mouth_drop_weights()
_CONTROL_FACE = sorted(
    set(
        warp.FACE_OVAL
        + warp.EYE_LEFT
        + warp.EYE_RIGHT
        + warp.EYE_LEFT_RING
        + warp.EYE_RIGHT_RING
        + warp.BROW_LEFT
        + warp.BROW_RIGHT
        + warp.NOSE
        + warp.LIPS_OUTER
        + warp.CHEEKS
        + warp.FOREHEAD
        + warp.CHIN
    )
)


class MeshRig:
    """One character prepared for one output size. Immutable after construction; render() is pure."""

    def __init__(self, image: Image, matte: np.ndarray | None, landmarks: Landmarks, width: int, height: int) -> None:
        self.width, self.height = width, height
        h, w = image.shape[:2]
        lm = np.asarray(landmarks, dtype=np.float64)
        # Frame the portrait: cover the output, centred on the face horizontally, clamped to the image.
        s = max(width / w, height / h)
        cx = float(np.clip(lm[warp.FACE_OVAL, 0].mean() * s - width / 2, 0, w * s - width))
        cy = float(np.clip(h * s / 2 - height / 2, 0, h * s - height))
        self.framing = np.array([[s, 0, -cx], [0, s, -cy]])
        bgra = np.dstack([image[:, :, :3], matte if matte is not None else np.full((h, w), 255, np.uint8)])
        self.source = cv2.warpAffine(
            bgra,
            self.framing,
            (width, height),
            flags=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
        self.landmarks = np.hstack([warp.apply_affine(self.framing, lm[:, :2]), lm[:, 2:3] * s]).astype(np.float32)
        # Depth: a smooth head surface plus a little of the mesh's own relief. Raw per-point depth
        # makes close points with different depth (nose ridge, eye corners) cross over when the head
        # turns, which folds the warp.
        xy = self.landmarks[:, :2].astype(np.float64)
        design = np.column_stack([np.ones(len(xy)), xy, xy**2, xy[:, :1] * xy[:, 1:]])
        coef, *_ = np.linalg.lstsq(design, self.landmarks[:, 2], rcond=None)
        smooth_z = design @ coef
        self.landmarks[:, 2] = (smooth_z + 0.35 * (self.landmarks[:, 2] - smooth_z)).astype(np.float32)
        L = self.landmarks.astype(np.float64)
        self.scale = _face_scale(L)
        self.mouth_width = float(np.linalg.norm(L[61, :2] - L[291, :2]))
        self.rest_gap = float(np.linalg.norm(L[13, :2] - L[14, :2]))
        # Rotation pivot: between the ears, behind the face.
        self.pivot = np.array([*L[warp.RIGID, :2].mean(0), L[[234, 454], 2].mean()])

        # Control points: face mesh points, a ring around the skull that moves rigidly, fixed borders.
        self.face_idx = np.array(_CONTROL_FACE)
        face_xy = L[self.face_idx, :2]
        oval = L[warp.FACE_OVAL]
        centre = oval[:, :2].mean(0)
        # The ring turns with the skull at the top (hair) and stays put at the neck, smoothly between.
        y_eyes, y_chin = L[[33, 263], 1].mean(), L[152, 1]
        ring_points: list[tuple[float, float, float]] = []
        ring_w: list[float] = []
        for p in oval:
            w_rigid = _smoothstep(0.0, 1.0, float((y_chin - p[1]) / max(y_chin - y_eyes, 1.0)))
            for k, weight in ((1.3, w_rigid), (1.65, 0.85 * w_rigid)):
                if k == 1.3 and w_rigid < 0.5:
                    continue  # near the jaw a close fixed point would fold the skin
                q = centre + k * (p[:2] - centre)
                ring_points.append((q[0], q[1], p[2]))
                ring_w.append(weight)
        border_points: list[tuple[float, float]] = []
        for t in np.linspace(0, 1, 6):
            border_points += [
                (t * (width - 1), 0),
                (t * (width - 1), height - 1),
                (0, t * (height - 1)),
                (width - 1, t * (height - 1)),
            ]
        border = np.unique(np.round(np.array(border_points), 3), axis=0)
        margin = 0.08 * min(width, height)
        keep = [
            i
            for i, r in enumerate(ring_points)
            if margin <= r[0] <= width - 1 - margin and margin <= r[1] <= height - 1 - margin
        ]
        ring = np.array([ring_points[i] for i in keep]).reshape(-1, 3)
        self.ring_weight = np.array([ring_w[i] for i in keep])[:, None]
        self.ring = ring
        centres = np.vstack([face_xy, ring[:, :2], border])
        self.n_face, self.n_ring = len(face_xy), len(ring)
        self.grid = warp.Grid.covering(0, 0, width, height, GRID_STEP)
        self.tps = warp.TpsField(centres, self.grid, smoothing=1e-5, pinned=len(border))
        self._field_split()
        self.grid_points = self.grid.points()
        self.n_border = len(border)

        # Eyelids: skin where the eyes are, shown above the closing lid's edge (see _paint_lids).
        self.lid_skin, self.lash = self._lid_skin()
        # Mouth interior colours: a dark throat from the lip colour, teeth if the portrait shows them.
        self.cavity, self.teeth = self._mouth_colours()
        self._upsample = warp.PositionUpsampler(self.grid, width, height)

    # -- per character precomputation ---------------------------------------------------------------
    def _field_split(self) -> None:
        """The spline field of a frame as the head's rigid motion plus what the face does on it.

        Every control point follows the head: target = A (p - pivot) + pivot + shift, A the first two
        rows of scale * rotation; the ring does the same, weighted. That displacement, (A - E) rel +
        shift (E = [I 0]), is linear in the 8 numbers of (A - E) and shift, so its field is 4
        precomputed grid fields mixed per frame. Only the points the face moves on the skull (mouth,
        brows, lids, the lips and eyes that a rendered nod's gain moves as blocks) leave a residual,
        and only their ~110 basis columns are multiplied each frame instead of all ~230.
        """
        L = self.landmarks.astype(np.float64)
        self._rel_face = L[self.face_idx] - self.pivot  # (n_face, 3)
        rel_ring = (self.ring - self.pivot) * self.ring_weight
        columns = np.vstack(
            [
                np.hstack([self._rel_face, np.ones((self.n_face, 1))]),
                np.hstack([rel_ring, self.ring_weight]),
            ]
        )
        self._rigid_fields = np.ascontiguousarray(self.tps.basis @ columns.astype(np.float32))  # (grid, 4)
        moved = (
            set(MOUTH_REGION)
            | set(BROW_REGION)
            | set(np.concatenate(GAIN_BLOCKS).tolist())
            | set(MOUTH_DROP)
            | {upper for upper, _ in warp.LID_PAIRS_LEFT + warp.LID_PAIRS_RIGHT}
        )
        self._expressive = np.array([i for i, idx in enumerate(self.face_idx) if idx in moved])
        self._expressive_basis = np.ascontiguousarray(self.tps.basis[:, self._expressive])

    def _lid_skin(self) -> tuple[np.ndarray, tuple[int, int, int]]:
        """The portrait with its eyes filled in by the skin around them (what a closing lid shows),
        and the colour of the lash line drawn along the lid's edge."""
        bgr = np.ascontiguousarray(self.source[:, :, :3])
        L = self.landmarks
        hole = np.zeros(bgr.shape[:2], np.uint8)
        for poly in (warp.EYE_LEFT, warp.EYE_RIGHT):
            m = np.zeros_like(hole)
            cv2.fillPoly(m, [L[poly, :2].round().astype(np.int32)], (255,))
            eye_w = float(np.linalg.norm(L[poly[0], :2] - L[poly[8], :2]))
            k = max(3, int(eye_w * 0.2) | 1)  # the lash line above the upper lid's landmarks too
            hole |= cast(Image, cv2.dilate(m, np.ones((k, k), np.uint8)))  # cv2 keeps the uint8 input's dtype
        skin = cv2.inpaint(bgr, hole, 5, cv2.INPAINT_TELEA)
        b, g, r = (int(v) for v in np.median(bgr[hole > 0], axis=0) * 0.25)
        return skin, (b, g, r)

    def _mouth_colours(self) -> tuple[np.ndarray, tuple[int, int, int] | None]:
        L = self.landmarks
        bgr = self.source[:, :, :3]
        lips = np.zeros(bgr.shape[:2], np.uint8)
        cv2.fillPoly(lips, [L[warp.LIPS_OUTER, :2].round().astype(np.int32)], (255,))
        inner = np.zeros_like(lips)
        cv2.fillPoly(inner, [L[warp.MOUTH_INNER, :2].round().astype(np.int32)], (255,))
        lip_colour = (
            np.median(bgr[(lips > 0) & (inner == 0)], axis=0)
            if np.any((lips > 0) & (inner == 0))
            else np.array([90, 90, 160])
        )
        cavity = lip_colour * 0.22
        tongue = lip_colour * 0.6
        teeth: tuple[int, int, int] | None = None
        if self.rest_gap > 2.0 and np.count_nonzero(inner) > 10:
            px = bgr[inner > 0].astype(np.float32)
            bright = px[px.mean(1) > np.percentile(px.mean(1), 60)]
            if bright.mean() > 110:
                b, g, r = (int(v) for v in np.median(bright, axis=0))
                teeth = (b, g, r)
        # A vertical gradient: dark throat at the top, the tongue's colour toward the lower lip.
        t = np.linspace(0.0, 1.0, 64)[:, None] ** 2
        ramp = (cavity * (1 - t) + tongue * t).astype(np.float32)
        return ramp, teeth

    # -- per frame -----------------------------------------------------------------------------------
    def targets(self, params: RigParams) -> tuple[np.ndarray, np.ndarray]:
        """Where the landmarks (478, 2) and the skull ring (n, 2) go for these params."""
        lm_t, r = self._landmark_targets(params)
        ring = (self.ring - self.pivot) @ r.T * params.scale + self.pivot
        return lm_t, ring[:, :2] + np.array(params.shift)

    def _landmark_targets(self, params: RigParams) -> tuple[np.ndarray, np.ndarray]:
        """Where the landmarks (478, 2) go, and the head's rotation (3x3, as rendered) that took them."""
        L = self.landmarks.astype(np.float64)
        moved = L.copy()
        if params.expression is not None:
            moved += params.expression
        if params.mouth:
            drop = params.mouth * self.mouth_width
            for i, wgt in MOUTH_DROP.items():
                moved[i, 1] += wgt * drop
        for eye, pairs in zip(params.eyes, (warp.LID_PAIRS_LEFT, warp.LID_PAIRS_RIGHT), strict=True):
            widen = _clamp(eye - 1.0, 0.0, MAX_EYE - 1.0)
            if widen:  # wider than drawn: the upper lid's skin is pulled up (closing is painted instead)
                up, lo = [p[0] for p in pairs], [p[1] for p in pairs]
                moved[up] -= 0.75 * widen * (moved[lo] - moved[up])
        r = rotation_from_pose(params.pitch * RENDER_GAIN["pitch"], params.yaw * RENDER_GAIN["yaw"], params.roll)
        shift = np.array(params.shift)
        rel = moved - self.pivot
        out = rel @ r.T
        if RENDER_GAIN["pitch"] != 1.0 or RENDER_GAIN["yaw"] != 1.0:
            # The lips and the lids take the extra rotation (beyond what was asked) as one block, each
            # at its mean depth: it must not open or close them as the tracker reads them, only move them
            # with the face. Their shape changes with the rotation as asked, like a real head's does.
            asked = rotation_from_pose(params.pitch, params.yaw, params.roll)
            for region in GAIN_BLOCKS:
                block = rel[region]
                flat = block.copy()
                flat[:, 2] = block[:, 2].mean()
                out[region] = block @ asked.T + flat @ (r - asked).T
        out = out * params.scale + self.pivot
        return out[:, :2] + shift, r

    def backward_map(self, params: RigParams) -> tuple[np.ndarray, np.ndarray]:
        """(map (h, w, 2) float32 for cv2.remap, landmark targets (478, 2))."""
        forward, lm_t = self.forward_field(params)
        back = warp.invert_displacement(self.grid, forward, self.grid_points)
        return self._upsample(back), lm_t

    def forward_field(self, params: RigParams) -> tuple[np.ndarray, np.ndarray]:
        """(the spline's displacement field on the coarse grid (rows, cols, 2), landmark targets)."""
        lm_t, r = self._landmark_targets(params)
        rigid = np.vstack([(params.scale * r[:2] - np.eye(2, 3)).T, params.shift])  # [(A - E).T; shift]
        # The image borders stay where they are; the ring moves with the head (rigidly, weighted), so
        # its share is all in the rigid fields.
        forward = (self._rigid_fields @ rigid.astype(np.float32)).reshape(self.grid.rows, self.grid.cols, 2)
        face = lm_t[self.face_idx] - self.landmarks[self.face_idx, :2]
        face -= self._rel_face @ rigid[:3] + rigid[3]  # what the face does beyond the head's motion
        residual = np.abs(face).max(1) > 1e-6
        if residual.any():
            if residual[self._expressive].sum() == residual.sum():
                extra = self._expressive_basis @ face[self._expressive].astype(np.float32)
            else:  # an expression moved other points too (a caller's own RigParams.expression)
                extra = self.tps.basis[:, : self.n_face] @ face.astype(np.float32)
            forward += extra.reshape(forward.shape)
        return forward, lm_t

    def render(self, params: RigParams) -> Image:
        """The character as `params` say: BGRA, straight alpha, the rig's output size."""
        fmap, lm_t = self.backward_map(params)
        # The whole frame through a fixed-point copy of the map (1/32 pixel): converting and remapping
        # costs less than remapping with the float map. The lids sample the float map in their boxes.
        fixed_xy, fixed_frac = cv2.convertMaps(fmap, None, cv2.CV_16SC2)  # type: ignore[call-overload]  # cv2 stubs: map2 may be None
        out = cast(
            Image, cv2.remap(self.source, fixed_xy, fixed_frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        )
        for eye, (upper, lower) in zip(params.eyes, LIDS, strict=True):
            closure = _clamp(1.0 - eye, 0.0, 1.0)
            if closure > 0.01:  # below that the lid would be painted at under 2 % (tracker noise)
                self._paint_lids(out, fmap, lm_t[upper], lm_t[lower], closure)
        self._paint_mouth(out, lm_t)
        return out

    def _roi(self, pts: np.ndarray, pad: float) -> tuple[int, int, int, int] | None:
        x0, y0 = np.floor(pts.min(0) - pad).astype(int)
        x1, y1 = np.ceil(pts.max(0) + pad).astype(int)
        x0, y0, x1, y1 = max(0, x0), max(0, y0), min(self.width, x1), min(self.height, y1)
        return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None

    def _paint_lids(self, out: Image, fmap: np.ndarray, upper: np.ndarray, lower: np.ndarray, closure: float) -> None:
        """Close one eye by `closure` (0 open, 1 shut) the way lids do: the upper lid slides down over
        the eyeball (which is not squashed) and the lower one a little up; they meet a quarter of the
        way up from the lower lid. The lids are the skin around the eye; a lash line runs along the
        upper lid's edge. `upper` and `lower`: (9, 2) output positions, corner to corner."""
        eye_w = float(np.linalg.norm(upper[0] - upper[-1]))
        if eye_w < 2.0:
            return
        gap = lower - upper
        edge_up = upper + 0.75 * closure * gap
        edge_lo = lower - 0.25 * closure * gap
        lash_w = max(1.0, 0.07 * eye_w)
        # The upper lid's skin reaches a lash width above its landmarks, so the portrait's own lash
        # line is covered once the lid has moved.
        above = upper - np.array([0.0, lash_w])
        above[[0, -1]] = upper[[0, -1]]
        roi = self._roi(np.vstack([above, lower]), lash_w + 2)
        if roi is None:
            return
        x0, y0, x1, y1 = roi
        o = np.array([x0, y0])
        fade = _smoothstep(0.0, 0.12, closure)  # no pop as the lid starts to move
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        q = 4.0  # fillPoly with shift=2: quarter-pixel edges
        cv2.fillPoly(
            mask,
            [
                np.round((np.vstack([above, edge_up[::-1]]) - o) * q).astype(np.int32),
                np.round((np.vstack([lower, edge_lo[::-1]]) - o) * q).astype(np.int32),
            ],
            (255,),
            cv2.LINE_AA,
            shift=2,
        )
        region = out[y0:y1, x0:x1, :3]
        skin = cv2.remap(self.lid_skin, fmap[y0:y1, x0:x1], None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload]  # cv2 stubs: map2 may be None
        a = mask.astype(np.float32)[:, :, None] * (fade / 255.0)
        lid = (region * (1.0 - a) + skin * a).astype(np.uint8)
        lash = np.zeros_like(mask)
        cv2.polylines(
            lash,
            [np.round((edge_up - o) * q).astype(np.int32)],
            False,
            (255,),
            max(1, round(lash_w)),
            cv2.LINE_AA,
            shift=2,
        )
        b = lash.astype(np.float32)[:, :, None] * (fade / 255.0)
        region[:] = (lid * (1.0 - b) + np.array(self.lash, np.float32) * b).astype(np.uint8)

    def _paint_mouth(self, out: Image, lm_t: np.ndarray) -> None:
        gap = float(np.linalg.norm(lm_t[13] - lm_t[14]))
        extra = gap - self.rest_gap
        if extra < 1.0:
            return
        poly = lm_t[warp.MOUTH_INNER]
        roi = self._roi(poly, 3)
        if roi is None:
            return
        x0, y0, x1, y1 = roi
        region = out[y0:y1, x0:x1, :3]
        local = np.round((poly - (x0, y0)) * 4).astype(np.int32)
        mask = np.zeros(region.shape[:2], np.uint8)
        cv2.fillPoly(mask, [local], (255,), cv2.LINE_AA, shift=2)
        top, bottom = poly[:, 1].min() - y0, poly[:, 1].max() - y0
        rows = np.clip((np.arange(y1 - y0) - top) / max(bottom - top, 1.0) * 63, 0, 63).astype(int)
        paint = np.empty_like(region)
        paint[:] = self.cavity[rows][:, None, :].astype(np.uint8)
        if self.teeth is not None:
            # Upper teeth hang from the upper lip: the lip line moved down by the teeth height.
            upper = lm_t[warp.INNER_LIP_UPPER] - (x0, y0)
            height = min(max(self.rest_gap, 0.12 * self.mouth_width), 0.6 * gap)
            band = np.vstack([upper, (upper + np.array([0.0, height]))[::-1]])
            teeth = np.zeros(region.shape[:2], np.uint8)
            cv2.fillPoly(teeth, [np.round(band * 4).astype(np.int32)], (255,), cv2.LINE_AA, shift=2)
            ta = cv2.GaussianBlur(teeth, (0, 0), 0.8).astype(np.float32)[:, :, None] / 255.0
            paint = (paint * (1 - ta) + np.array(self.teeth, np.float32) * ta).astype(np.uint8)
        # Fade in over the first pixels of opening so the mouth does not pop.
        strength = min(1.0, extra / 3.0)
        a = (mask.astype(np.float32) * (strength / 255.0))[:, :, None]
        region[:] = (region * (1 - a) + paint * a).astype(np.uint8)


def _clamp(x: float, lo: float, hi: float) -> float:
    """np.clip for one number, at a fraction of its cost (a frame calls it a dozen times)."""
    return float(min(max(x, lo), hi))


def _smoothstep(e0: float, e1: float, x: float) -> float:
    t = min(1.0, max(0.0, (x - e0) / (e1 - e0)))
    return t * t * (3 - 2 * t)


# -- the driver side -------------------------------------------------------------------------------
@dataclass
class Neutral:
    landmarks: np.ndarray  # (478, 3) averaged neutral face, frame pixels
    eyes: tuple[float, float]
    scale: float


CLOSED_DEFAULT = 0.3  # a shut eye's reading, as a share of the open one, until the performer blinks
CLOSED_RANGE = (0.1, 0.5)  # what a learned closed level may be, as a share of the open one
CLOSED_RELAX_S = 60.0  # a learned closed level drifts back to the default over about this long
BLINK_FRAMES = 3  # a closed level must be held this many frames (one low frame is tracker noise)


class EyeCalibration:
    """One eye of one performer: the tracker's openness reading (lid gap / eye width) as the rig's
    eye, 0 shut, 1 as at the neutral pose, up to MAX_EYE wide open, in a straight line between.

    People's eyes differ, and so does what the tracker reads for them: the open level is this eye's
    reading at the neutral pose, the closed level is learned from the performer's own blinks (the
    lowest reading held for BLINK_FRAMES frames, drifting back to the default over CLOSED_RELAX_S).
    """

    def __init__(self, open_level: float) -> None:
        self.open = max(open_level, 1e-3)
        self.default = CLOSED_DEFAULT * self.open
        self.closed = self.default
        self._recent: deque[float] = deque(maxlen=BLINK_FRAMES)

    def __call__(self, reading: float, dt: float) -> float:
        """The rig's eye openness for this reading (before the `eyes` strength is applied)."""
        self.closed += (self.default - self.closed) * (1.0 - math.exp(-dt / CLOSED_RELAX_S))
        self._recent.append(reading)
        if len(self._recent) == BLINK_FRAMES:
            lo, hi = CLOSED_RANGE
            self.closed = min(self.closed, _clamp(max(self._recent), lo * self.open, hi * self.open))
        return (reading - self.closed) / (self.open - self.closed)


@dataclass
class Retargeter:
    """Driver face -> RigParams for one character, relative to the driver's neutral pose."""

    cfg: AnimateMeshConfig
    neutral: Neutral | None = None
    _samples: list[Face] = field(default_factory=list)
    _state: RigParams = field(default_factory=RigParams)
    _last_t: float | None = None
    _eyes: tuple[EyeCalibration, EyeCalibration] | None = None
    _dt: float = 0.0
    _rotation: tuple[MeshRig, Neutral, np.ndarray] | None = None

    def recalibrate(self) -> None:
        self.neutral = None
        self._samples = []
        self._eyes = None

    def update(self, face: Face | None, t: float, rig: MeshRig) -> RigParams:
        dt = 0.0 if self._last_t is None else max(0.0, t - self._last_t)
        self._last_t = t
        self._dt = dt
        if face is None:
            self._state = _ease(self._state, math.exp(-dt / self.cfg.return_to_neutral_s))
            return self._state
        if self.neutral is None:
            self._samples.append(face)
            if len(self._samples) >= self.cfg.calibration_frames:
                self.neutral = _neutral_from(self._samples)
                self._eyes = (EyeCalibration(self.neutral.eyes[0]), EyeCalibration(self.neutral.eyes[1]))
                self._samples = []
                log.info("animate: neutral pose taken from %d frames", self.cfg.calibration_frames)
            self._state = _ease(self._state, math.exp(-dt / self.cfg.return_to_neutral_s))
            return self._state
        self._state = self.params(face, rig)
        return self._state

    def params(self, face: Face, rig: MeshRig) -> RigParams:
        cfg, n = self.cfg, self.neutral
        assert n is not None
        cur = face.landmarks.astype(np.float64)
        s, r, t = warp.kabsch(n.landmarks[warp.RIGID], cur[warp.RIGID])  # the skull frame, for the expression
        pose = pose_from_rotation(warp.kabsch(n.landmarks[warp.POSE], cur[warp.POSE])[1])  # the angles shown
        pitch = _clamp(pose.pitch * cfg.pose.pitch, -MAX_ANGLE["pitch"], MAX_ANGLE["pitch"])
        yaw = _clamp(pose.yaw * cfg.pose.yaw, -MAX_ANGLE["yaw"], MAX_ANGLE["yaw"])
        roll = _clamp(pose.roll * cfg.pose.roll, -MAX_ANGLE["roll"], MAX_ANGLE["roll"])
        # Expression: the landmarks in the neutral skull frame, minus the neutral face.
        in_skull = (cur - t) @ r / s
        resid = in_skull - n.landmarks
        k = rig.scale / n.scale
        q = self._to_rig(rig, n)
        expr = np.zeros((len(cur), 3))
        for idx, mult in ((MOUTH_REGION, cfg.mouth), (BROW_REGION, cfg.brows)):
            if mult:
                expr[idx, :2] = resid[idx, :2] @ q.T * (k * mult)
                expr[idx, 2] = resid[idx, 2] * k * mult
        # Eyes: each on its own, calibrated to this performer (their open and shut readings), so any
        # eye shape closes fully and half-closed eyes are half closed.
        if self._eyes is None:
            self._eyes = (EyeCalibration(n.eyes[0]), EyeCalibration(n.eyes[1]))
        eyes = []
        for reading, calibration in zip(face.eye_openness, self._eyes, strict=True):
            closure = (1.0 - calibration(reading, self._dt)) * cfg.eyes
            eyes.append(_clamp(1.0 - closure, 0.0, MAX_EYE))
        centre_now = cur[warp.RIGID, :2].mean(0)
        centre_neutral = n.landmarks[warp.RIGID, :2].mean(0)
        move = (centre_now - centre_neutral) / n.scale * rig.scale * cfg.movement
        limit = 0.25 * np.array([rig.width, rig.height])
        move = np.clip(move, -limit, limit)
        scale = _clamp(1.0 + (s - 1.0) * cfg.movement, 0.75, 1.33)
        return RigParams(
            pitch=pitch,
            yaw=yaw,
            roll=roll,
            shift=(float(move[0]), float(move[1])),
            scale=scale,
            eyes=(eyes[0], eyes[1]),
            expression=expr,
        )

    def _to_rig(self, rig: MeshRig, n: Neutral) -> np.ndarray:
        """The 2x2 rotation from the performer's neutral face to the character's, kept while both last."""
        if self._rotation is None or self._rotation[0] is not rig or self._rotation[1] is not n:
            q = warp.similarity(n.landmarks[warp.RIGID, :2], rig.landmarks[warp.RIGID, :2])[:, :2]
            self._rotation = (rig, n, q / max(np.sqrt(abs(np.linalg.det(q))), 1e-9))  # rotation only
        return self._rotation[2]


def _neutral_from(faces: list[Face]) -> Neutral:
    ref = faces[0].landmarks.astype(np.float64)
    aligned = []
    for f in faces:
        cur = f.landmarks.astype(np.float64)
        s, r, t = warp.kabsch(cur[warp.RIGID], ref[warp.RIGID])
        aligned.append(cur @ r.T * s + t)
    lm = np.mean(aligned, axis=0)
    eyes = tuple(float(np.median([f.eye_openness[i] for f in faces])) for i in (0, 1))
    return Neutral(landmarks=lm, eyes=(eyes[0], eyes[1]), scale=_face_scale(lm))


def _ease(p: RigParams, keep: float) -> RigParams:
    """Move params a step toward neutral: `keep` of the way from neutral remains."""
    return RigParams(
        pitch=p.pitch * keep,
        yaw=p.yaw * keep,
        roll=p.roll * keep,
        shift=(p.shift[0] * keep, p.shift[1] * keep),
        scale=1.0 + (p.scale - 1.0) * keep,
        eyes=(1.0 - (1.0 - p.eyes[0]) * keep, 1.0 - (1.0 - p.eyes[1]) * keep),
        mouth=p.mouth * keep,
        expression=None if p.expression is None else p.expression * keep,
    )


# -- the effect ------------------------------------------------------------------------------------
class AnimateMesh(Effect):
    """The active character, driven by the first (largest) tracked face."""

    name = "animate"
    # Works from the landmarks alone and renders at its own size: the camera frame is not resized for
    # it (pipeline.work_size), which would cost a resize and save nothing.
    reads_frame = False

    def __init__(self, cfg: AnimateMeshConfig, characters) -> None:
        self.cfg = cfg
        self.characters = characters  # CharacterLibrary (or anything with .active)
        self._rigs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._retarget = Retargeter(cfg)
        self._recalibrate = threading.Event()
        self._blank: Image | None = None
        self.last_params: RigParams | None = None  # what the character was last asked to do (tools read it)

    def start(self) -> None:
        for character in getattr(self.characters, "characters", lambda: [])():
            self.rig_for(character)  # build every rig before the first frame: switching is instant

    def recalibrate(self) -> None:
        """Take the neutral pose again from the next tracked frames (any thread)."""
        self._recalibrate.set()

    def rig_for(self, character) -> MeshRig:
        rig = self._rigs.get(character)
        if rig is None:
            rig = MeshRig(character.image, character.matte, character.landmarks, self.cfg.width, self.cfg.height)
            self._rigs[character] = rig
        return rig

    def apply(self, packet: FramePacket) -> Image:
        character = self.characters.active
        if character is None:
            return self._no_character()
        rig = self.rig_for(character)
        if self._recalibrate.is_set():
            self._recalibrate.clear()
            self._retarget.recalibrate()
        faces = packet.faces or []
        face = max(faces, key=lambda f: f.box[2] * f.box[3]) if faces else None
        params = self._retarget.update(face, packet.t_capture_ns / 1e9, rig)
        self.last_params = params
        return compose_background(rig.render(params), self.cfg.background, self.cfg.background_color)

    def _no_character(self) -> Image:
        if self._blank is None:
            self._blank = np.zeros((self.cfg.height, self.cfg.width, 4), np.uint8)
            cv2.putText(
                self._blank,
                "no character loaded",
                (10, 30),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.7,
                (255, 255, 255, 255),
                2,
                cv2.LINE_AA,
            )
        return self._blank


def compose_background(bgra: Image, mode: BackgroundMode, color: tuple[int, int, int]) -> Image:
    if mode == "transparent":
        return bgra
    if mode == "original":
        return np.ascontiguousarray(bgra[:, :, :3])
    a = bgra[:, :, 3:4].astype(np.float32) * (1.0 / 255.0)
    bg = np.array(color, np.float32)
    return (bgra[:, :, :3] * a + bg * (1.0 - a)).astype(np.uint8)


__all__ = ["AnimateMesh", "AnimateMeshConfig", "MeshRig", "Retargeter", "RigParams", "rotation_from_pose"]
