"""`swap` with backend `mesh`: the active character's face on every tracked face, on the CPU.

No neural network and no downloaded weights. Per target face and frame:

1. Warp: a thin-plate spline through the source face's landmarks (fixed, so its grid basis is
   precomputed per character) carries the source face onto the target's landmarks, after a
   similarity that takes out position, size and roll. The backward map is found on a coarse grid
   over the target's face box (Newton inversion, see warp.py), upsampled, applied with one remap.
2. Colour: the warped face's Lab mean and spread are moved to the target's skin (measured inside
   the target's face each frame, smoothed over time so lighting changes do not flicker).
3. Blend: a feathered mask of the target's face oval, with the target's own eyes (gaze, blinks)
   and mouth interior (teeth, tongue) cut out so they show through; or Poisson blending
   (`blend: seamless`, slower).

Faces entering and leaving the frame need no state beyond the colour smoothing, which restarts
whenever the number of faces changes.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.effects import warp
from facecast.effects.base import Effect
from facecast.effects.debug import own_frame
from facecast.types import Face, FramePacket, Image, Landmarks

log = logging.getLogger(__name__)

_CONTROL = sorted(
    set(
        warp.FACE_OVAL
        + warp.EYE_LEFT
        + warp.EYE_RIGHT
        + warp.BROW_LEFT
        + warp.BROW_RIGHT
        + warp.NOSE
        + warp.LIPS_OUTER
        + warp.CHEEKS
        + warp.FOREHEAD
        + warp.CHIN
        + warp.EYE_LEFT_RING
        + warp.EYE_RIGHT_RING
    )
)
GRID_CELLS = 40  # coarse grid points across a face box


class SwapMeshConfig(StrictModel):
    backend: Literal["mesh"] = Field("mesh", description="mesh = landmark-driven warp on the CPU, no weights")
    max_faces: int = Field(
        4, ge=1, le=8, description="faces swapped per frame (tracking.max_faces limits how many are tracked)"
    )
    blend: Literal["feather", "seamless"] = Field(
        "feather", description="feather = soft edge (fast); seamless = Poisson blending (slower)"
    )
    feather: float = Field(0.08, ge=0.0, le=0.3, description="width of the soft edge, fraction of the face size")
    color_match: bool = Field(True, description="match the source face's colours to the target's skin")
    color_smoothing_s: float = Field(0.3, ge=0, le=5, description="time constant of the colour match (no flicker)")
    keep_mouth: bool = Field(True, description="show the target's own mouth interior when it speaks")
    keep_eyes: bool = Field(True, description="show the target's own eyes (gaze and blinks follow the person)")
    opacity: float = Field(1.0, ge=0, le=1, description="1 = the source face fully, lower = mixed with the target")


@dataclass(frozen=True)
class SwapSource:
    """A character prepared as a swap source: the TPS basis over its face box, its colour statistics."""

    image: Image
    landmarks: np.ndarray  # (478, 2)
    control: np.ndarray  # the landmark indices the TPS passes through
    tps: warp.TpsField
    bgr_mean: np.ndarray
    bgr_std: np.ndarray

    @classmethod
    def build(cls, image: Image, landmarks: Landmarks) -> SwapSource:
        lm = np.asarray(landmarks[:, :2], dtype=np.float64)
        x0, y0 = lm[warp.FACE_OVAL].min(0)
        x1, y1 = lm[warp.FACE_OVAL].max(0)
        pad = 0.25 * max(x1 - x0, y1 - y0)
        x0, y0, x1, y1 = x0 - pad, y0 - pad, x1 + pad, y1 + pad
        step = max(x1 - x0, y1 - y0) / GRID_CELLS
        grid = warp.Grid.covering(x0, y0, round(x1 - x0), round(y1 - y0), step)
        control = list(_CONTROL)
        if np.linalg.norm(lm[13] - lm[14]) > 0.02 * np.ptp(lm[warp.FACE_OVAL, 1]):
            # The source's lips are apart: its inner lip line can follow the target's exactly. (Closed
            # lips would put two centres on one spot and make the spline tear.)
            control = sorted(set(control + warp.INNER_LIP_UPPER + warp.INNER_LIP_LOWER))
        tps = warp.TpsField(lm[control], grid, smoothing=1e-5)
        mean, std = _skin_stats(image, lm)
        return cls(
            image=image, landmarks=lm.astype(np.float32), control=np.array(control), tps=tps, bgr_mean=mean, bgr_std=std
        )


def _skin_mask(shape: tuple[int, int], lm: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """The face oval minus eyes, brows and mouth: where skin colour is measured."""
    mask = np.zeros(shape, np.uint8)
    o = np.array(offset)
    cv2.fillPoly(mask, [np.round(lm[warp.FACE_OVAL] - o).astype(np.int32)], 255)
    for poly in (warp.EYE_LEFT, warp.EYE_RIGHT, warp.LIPS_OUTER):
        pts = np.round(lm[poly] - o).astype(np.int32)
        cv2.fillPoly(mask, [cv2.convexHull(pts)], 0)
    return mask


def _skin_stats(
    image: Image, lm: np.ndarray, offset: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel BGR mean and spread of the skin, measured on a small copy (statistics need no detail)."""
    h, w = image.shape[:2]
    f = min(1.0, 96.0 / max(h, w))
    small = cv2.resize(image[:, :, :3], (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    mask = _skin_mask(small.shape[:2], (lm - np.array(offset)) * f)
    if cv2.countNonZero(mask) < 20:
        mask = None
    mean, std = cv2.meanStdDev(small, mask=mask)
    return mean.ravel().astype(np.float32), np.maximum(std.ravel(), 1.0).astype(np.float32)


def _face_region(face: Face, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1) the swap of one face works in: its oval and a margin, inside the
    frame; None when the face is too small or off the frame."""
    fh, fw = shape[:2]
    oval = face.landmarks[warp.FACE_OVAL, :2].astype(np.float64)
    size = float(max(np.ptp(oval[:, 0]), np.ptp(oval[:, 1])))
    if size < 8:
        return None
    pad = 0.12 * size
    x0, y0 = np.floor(oval.min(0) - pad).astype(int)
    x1, y1 = np.ceil(oval.max(0) + pad).astype(int)
    x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(fw, int(x1)), min(fh, int(y1))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    return x0, y0, x1, y1


@dataclass
class _ColourState:
    mean: np.ndarray
    std: np.ndarray
    t: float


class SwapMesh(Effect):
    name = "swap"

    def __init__(self, cfg: SwapMeshConfig, characters) -> None:
        self.cfg = cfg
        self.characters = characters  # CharacterLibrary, or anything with .active
        self._sources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._colours: list[_ColourState] = []

    def start(self) -> None:
        for character in getattr(self.characters, "characters", lambda: [])():
            self.source_for(character)

    def source_for(self, character) -> SwapSource:
        src = self._sources.get(character)
        if src is None:
            src = SwapSource.build(character.image, character.landmarks)
            self._sources[character] = src
        return src

    def apply(self, packet: FramePacket) -> Image:
        character = self.characters.active
        faces = packet.faces or []
        if character is None or not faces:
            self._colours = []
            return packet.image
        src = self.source_for(character)
        faces = sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)[: self.cfg.max_faces]
        faces.sort(key=lambda f: f.box[0])  # a stable order left to right for the colour smoothing
        if len(faces) != len(self._colours):
            self._colours = []
        out = own_frame(packet)  # swapped in place: no full-frame copy per frame
        t = packet.t_capture_ns / 1e9
        # Each face reads the frame as the camera gave it (a neighbour's swap may overlap its box).
        targets = [(i, face, box) for i, face in enumerate(faces) if (box := _face_region(face, out.shape)) is not None]
        originals = [np.ascontiguousarray(out[y0:y1, x0:x1, :3]) for _, _, (x0, y0, x1, y1) in targets]
        for (i, face, box), region in zip(targets, originals, strict=True):
            try:
                self._swap_one(out, region, box, src, face, i, t)
            except cv2.error as exc:  # a degenerate face box at the frame edge: leave that face as is
                log.debug("swap: face %d skipped: %s", i, exc)
        return out

    def _swap_one(
        self,
        out: Image,
        region: Image,
        box: tuple[int, int, int, int],
        src: SwapSource,
        face: Face,
        index: int,
        t: float,
    ) -> None:
        cfg = self.cfg
        x0, y0, x1, y1 = box
        T = face.landmarks[:, :2].astype(np.float64)
        oval = T[warp.FACE_OVAL]
        size = float(max(np.ptp(oval[:, 0]), np.ptp(oval[:, 1])))
        rw, rh = x1 - x0, y1 - y0

        # Warp: similarity source -> target, then the TPS residual in source coordinates.
        m = warp.similarity(src.landmarks[warp.RIGID], T[warp.RIGID])
        minv = warp.invert_affine(m)
        disp = (warp.apply_affine(minv, T[src.control]) - src.landmarks[src.control]).astype(np.float32)
        forward = src.tps.field(disp)
        grid = warp.Grid.covering(x0, y0, rw, rh, max(rw, rh) / GRID_CELLS)
        z = warp.apply_affine(minv, grid.points().reshape(-1, 2)).reshape(grid.rows, grid.cols, 2).astype(np.float32)
        back = warp.invert_displacement(src.tps.grid, forward, z)
        fmap = warp.upsample(back, rw, rh)
        # Through a fixed-point copy of the map: OpenCV remaps in fixed point anyway, and converting
        # first costs less than remapping with the float map (the same pixels come out).
        fixed_xy, fixed_frac = cv2.convertMaps(fmap, None, cv2.CV_16SC2)
        patch = cv2.remap(src.image, fixed_xy, fixed_frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

        if cfg.color_match:
            patch = self._match_colour(patch, region, src, T, (x0, y0), index, t)

        mask = self._mask(T, (x0, y0), (rh, rw), size, face)
        if cfg.blend == "seamless":
            hard = (mask > 0.5).astype(np.uint8) * 255
            if np.count_nonzero(hard) > 16:
                full = np.ascontiguousarray(out[:, :, :3])
                canvas = np.zeros_like(full)
                canvas[y0:y1, x0:x1] = patch
                full_mask = np.zeros(full.shape[:2], np.uint8)
                full_mask[y0:y1, x0:x1] = hard
                bx, by, bw, bh = cv2.boundingRect(full_mask)
                centre = (bx + bw // 2, by + bh // 2)
                cloned = cv2.seamlessClone(canvas, full, full_mask, centre, cv2.NORMAL_CLONE)
                patch = cloned[y0:y1, x0:x1]
                mask = np.minimum(mask, cv2.GaussianBlur(hard, (0, 0), 2).astype(np.float32) / 255.0)
        a = mask * cfg.opacity if cfg.opacity < 1 else mask
        out[y0:y1, x0:x1, :3] = cv2.blendLinear(patch, region, a, 1.0 - a)

    def _mask(
        self, T: np.ndarray, origin: tuple[int, int], shape: tuple[int, int], size: float, face: Face
    ) -> np.ndarray:
        """Float mask (rh, rw): 1 = source face. The wide soft edge is made at a quarter of the size."""
        cfg = self.cfg
        o = np.array(origin, dtype=np.float64)
        rh, rw = shape
        q = 0.25
        small = np.zeros((max(2, round(rh * q)), max(2, round(rw * q))), np.uint8)
        cv2.fillPoly(small, [np.round((T[warp.FACE_OVAL] - o) * q * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
        feather = cfg.feather * size * q
        if feather >= 1:
            # Erode by the blur's reach so the soft edge fades out inside the face oval.
            k = int(1.5 * feather) | 1
            small = cv2.erode(small, np.ones((k, k), np.uint8))
            small = cv2.GaussianBlur(small, (0, 0), feather / 2)
        else:
            small = cv2.erode(small, np.ones((3, 3), np.uint8))  # the upscale blurs by about a pixel
        m = cv2.resize(small, (rw, rh), interpolation=cv2.INTER_LINEAR).astype(np.float32) * (1.0 / 255.0)
        # Nothing outside the target's face oval ever changes.
        oval = np.zeros(shape, np.uint8)
        cv2.fillPoly(oval, [np.round((T[warp.FACE_OVAL] - o) * 16).astype(np.int32)], 1, shift=4)
        m *= oval
        polys = []
        if cfg.keep_eyes:
            polys += [warp.EYE_LEFT, warp.EYE_RIGHT]
        if cfg.keep_mouth and face.mouth_openness > 0.04:
            polys.append(warp.MOUTH_INNER)
        sigma = max(0.6, 0.006 * size)
        reach = int(np.ceil(3 * sigma)) + 2  # how far GaussianBlur spreads a hole's edge
        for poly in polys:
            # Each hole is cut and softened in its own small box, not across the whole face region
            # (a blur of the full region cost about 1 ms per 1080p frame).
            pts = T[poly] - o
            x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - reach, 0)
            x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + reach + 1, (rw, rh))
            if x1 <= x0 or y1 <= y0:
                continue
            hole = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(hole, [np.round((pts - (x0, y0)) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
            h = cv2.GaussianBlur(hole, (0, 0), sigma).astype(np.float32) * (1.5 / 255.0)
            m[y0:y1, x0:x1] *= 1.0 - np.minimum(h, 1.0)
        return m

    def _match_colour(
        self, patch: Image, region: Image, src: SwapSource, T: np.ndarray, origin: tuple[int, int], index: int, t: float
    ) -> Image:
        mean, std = _skin_stats(region, T, origin)
        if index < len(self._colours):
            state = self._colours[index]
            tau = self.cfg.color_smoothing_s
            keep = float(np.exp(-max(0.0, t - state.t) / tau)) if tau > 0 else 0.0
            state.mean = keep * state.mean + (1 - keep) * mean
            state.std = keep * state.std + (1 - keep) * std
            state.t = t
        else:
            state = _ColourState(mean, std, t)
            self._colours.append(state)
        # out = (in - source mean) * gain + target mean, per channel: one saturating cv2.transform.
        gain = np.clip(state.std / src.bgr_std, 0.5, 2.0)
        matrix = np.zeros((3, 4), np.float32)
        matrix[[0, 1, 2], [0, 1, 2]] = gain
        matrix[:, 3] = state.mean - src.bgr_mean * gain
        return cv2.transform(patch, matrix)
