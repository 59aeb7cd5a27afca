"""`swap` with backend `mesh`: the active character's face on every tracked face, on the CPU.

No neural network and no downloaded weights. Per target face and frame:

1. Warp: a thin-plate spline through the source face's landmarks (fixed, so its grid basis is
   precomputed per character) carries the source face onto the target's landmarks, after a
   similarity that takes out position, size and roll. The backward map is found on a coarse grid
   over the target's face box (Newton inversion, see warp.py), upsampled, applied with one remap.
2. Colour and light (neural/blend.py): the warped face keeps its own detail but takes the
   target's low-frequency light and colour, measured over the target's visible skin (so the
   source's own shadows are not pasted in as dark patches); the correction is measured on every
   LIGHT_EVERY-th frame and smoothed over time.
3. Occlusion: pixels of the target's face far from its own skin colour (a microphone, hair) stay
   in front of the swapped face; with `occlusion_hands`, so do hands MediaPipe Hands finds over it.
4. Blend: a mask of the target's face oval, with the middle of the target's own eyes (`eye_size`:
   the iris, so gaze and blinks follow the person; the eye corners and lid lines, which carry much
   of the identity, stay the source's) and its mouth interior (teeth, tongue) cut out so they show
   through: hard, feathered, or Poisson
   (`blend: seamless`, on the face's box only). The landmarks are steadied first (jitter held
   back, motion followed) so the pasted face does not shimmer.
5. Enhancer (optional, effects/enhancer.py): a face restoration model over the pasted face.

Steps 2-4 are `paste_face`, which the inswapper backend (swap_inswapper.py) pastes through too.
Faces entering and leaving the frame need no state beyond the colour and landmark smoothing, which
restart whenever the number of faces changes.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Literal, Protocol, cast

import cv2
import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.effects import warp
from facecast.effects.base import Effect
from facecast.effects.debug import own_frame
from facecast.effects.enhancer import EnhanceConfig, FaceEnhancerStep
from facecast.engines.gate import Priority
from facecast.neural import blend
from facecast.neural.blend import BlendMode
from facecast.tracking.hands import FaceHands, Hand
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
LIGHT_EVERY = 2  # the light and colour correction is measured on every this many frames (smoothed over 0.3 s anyway)
POSE_HYSTERESIS_DEG = 5.0  # another source photo is taken only when its pose is this much closer


class PasteConfig(StrictModel):
    """How a swapped face goes into the frame (`paste_face`): the keys both swap backends share."""

    max_faces: int = Field(
        4, ge=1, le=8, description="faces swapped per frame (tracking.max_faces limits how many are tracked)"
    )
    blend: BlendMode = Field(
        "feather",
        description="hard = binary mask (fastest) | feather = soft edge | seamless = Poisson blending (slower)",
    )
    feather: float = Field(0.08, ge=0.0, le=0.3, description="width of the soft edge, fraction of the face size")
    color_match: bool = Field(True, description="give the pasted face the person's light and skin colour")
    shading_scale: float = Field(
        0.06,
        ge=0.0,
        le=0.5,
        description="size of the light taken from the person, fraction of the face size (0 = one colour shift)",
    )
    color_smoothing_s: float = Field(0.3, ge=0, le=5, description="time constant of the colour match (no flicker)")
    steady: float = Field(
        0.01, ge=0.0, le=0.05, description="landmark moves below this fraction of the face size are held back (0 = off)"
    )
    occlusion: bool = Field(True, description="things in front of the face that are not skin-coloured stay in front")
    occlusion_threshold: float = Field(
        3.0, ge=1.0, le=10.0, description="how unlike the skin a pixel must be to count as in front (lower = more)"
    )
    occlusion_hands: bool = Field(
        False,
        description="a hand in front of the face stays in front (MediaPipe Hands: 5-20 ms CPU per face and frame)",
    )
    keep_mouth: bool = Field(True, description="show the target's own mouth interior when it speaks")
    opacity: float = Field(1.0, ge=0, le=1, description="1 = the swapped face fully, lower = mixed with the target")
    enhance: EnhanceConfig = EnhanceConfig()


class SwapMeshConfig(PasteConfig):
    backend: Literal["mesh"] = Field("mesh", description="mesh = landmark-driven warp on the CPU, no weights")
    keep_eyes: bool = Field(True, description="show the target's own eyes (gaze and blinks follow the person)")
    eye_size: float = Field(
        0.6,
        ge=0.2,
        le=1.0,
        description="how much of the target's eye opening is kept (about its centre): the iris; the corners "
        "and lid lines, part of the identity, are the source's",
    )


@dataclass(frozen=True)
class SwapSource:
    """A character prepared as a swap source: its image, landmarks and the TPS basis over its face box."""

    image: Image
    landmarks: np.ndarray  # (478, 2)
    control: np.ndarray  # the landmark indices the TPS passes through
    tps: warp.TpsField
    levels: tuple[Image, ...]  # the image halved again and again (pyrDown): the small copy's patch samples one
    _marks: dict[tuple[int, float], np.ndarray] = field(default_factory=dict, compare=False, repr=False)

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
        levels = [image[:, :, :3]]
        while len(levels) < 6 and min(levels[-1].shape[:2]) >= 64:
            levels.append(cast(Image, cv2.pyrDown(levels[-1])))
        return cls(
            image=image, landmarks=lm.astype(np.float32), control=np.array(control), tps=tps, levels=tuple(levels)
        )

    def marks(self, level: int, threshold: float) -> np.ndarray:
        """uint8 over pyramid `level`, 1 where the face is not its own skin colour (tattoos, paint,
        make-up: `blend.not_skin` against its own skin). Found once per level and threshold: the
        source does not change, so the frames only warp it."""
        key = (level, threshold)
        found = self._marks.get(key)
        if found is None:
            image = self.levels[level]
            lm = self.landmarks.astype(np.float64) / (1 << level)
            shape = (image.shape[0], image.shape[1])
            face, features = _oval_mask(shape, lm, (0.0, 0.0)), _feature_mask(shape, lm, (0.0, 0.0))
            values = blend.lab(image)
            model = blend.skin_model(values, (face > 0) & (features == 0))
            found = np.zeros(shape, np.uint8)
            if model is not None:
                found = blend.not_skin(values, face, features, model, threshold)
            self._marks[key] = found
        return found

    def small_patch(
        self, back: np.ndarray, box_size: tuple[int, int], k: int, scale: float, threshold: float
    ) -> tuple[Image, np.ndarray]:
        """The warped face at the small copy's size (`blend.small_scale`: 1/k of the box) and its
        `marks` there, for the light and colour statistics: sampled from the pyramid level with
        about one pixel per small pixel, so the full-size patch need not be area-averaged. `back`:
        the backward map on its coarse grid over the box (`box_size` = (width, height)); `scale`:
        frame pixels per source pixel."""
        rw, rh = box_size
        rows, cols = back.shape[:2]
        # warp.upsample (cv2.resize) reads the coarse grid at (x + 0.5) * cols / rw - 0.5 for box pixel x;
        # small pixel j is the block of box pixels centred on (j + 0.5) * k - 0.5.
        sx, sy = k * cols / rw, k * rows / rh
        to_grid = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5]])
        size = (max(2, rw // k), max(2, rh // k))
        coords: np.ndarray = cv2.warpAffine(
            back, to_grid, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
        )
        level = int(np.clip(np.floor(np.log2(max(k / max(scale, 1e-6), 1.0))), 0, len(self.levels) - 1))
        if level:
            coords *= 1.0 / (1 << level)  # pyrDown keeps pixel 2i of a level as pixel i of the next
        # cv2's stubs reject map2=None, which remap accepts for a two-channel float map.
        patch = cv2.remap(self.levels[level], coords, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload]
        marks = cv2.remap(self.marks(level, threshold), coords, None, cv2.INTER_NEAREST)  # type: ignore[call-overload]
        return cast(Image, patch), cast(np.ndarray, marks)


_NOSTRILS = [98, 97, 2, 326, 327, 294, 278, 344, 440, 275, 4, 45, 220, 115, 48, 64]


def _feature_mask(shape: tuple[int, int], lm: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    """Eyes, brows, lips and nostrils: parts of a face that are not skin-coloured by nature."""
    mask = np.zeros(shape, np.uint8)
    o = np.array(offset)
    for poly in (warp.EYE_LEFT, warp.EYE_RIGHT, warp.BROW_LEFT, warp.BROW_RIGHT, warp.LIPS_OUTER, _NOSTRILS):
        cv2.fillPoly(mask, [cv2.convexHull(np.round(lm[poly] - o).astype(np.int32))], (255,))
    size = float(np.ptp(lm[warp.FACE_OVAL, 1]))
    k = max(3, int(0.03 * size) | 1)  # their edges (lashes, lip line) too
    return cv2.dilate(mask, np.ones((k, k), np.uint8))


def _oval_mask(shape: tuple[int, int], lm: np.ndarray, offset: tuple[float, float]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round((lm[warp.FACE_OVAL] - np.array(offset)) * 16).astype(np.int32)], (255,), shift=4)
    return mask


SEAMLESS_MARGIN = 0.12  # Poisson blending needs the frame's pixels around the mask (fraction of the face size)


def _face_region(
    landmarks: np.ndarray, shape: tuple[int, ...], margin: float = SEAMLESS_MARGIN
) -> tuple[int, int, int, int] | None:
    """The box (x0, y0, x1, y1) the swap of one face works in: its oval and a `margin` (fraction of
    the face size; hard and feather blends change nothing outside the oval and need only a pixel or
    two), inside the frame; None when the face is too small or off the frame."""
    fh, fw = shape[:2]
    oval = landmarks[warp.FACE_OVAL, :2].astype(np.float64)
    size = float(max(np.ptp(oval[:, 0]), np.ptp(oval[:, 1])))
    if size < 8:
        return None
    pad = max(2.0, margin * size)
    x0, y0 = np.floor(oval.min(0) - pad).astype(int)
    x1, y1 = np.ceil(oval.max(0) + pad).astype(int)
    x0, y0, x1, y1 = max(0, int(x0)), max(0, int(y0)), min(fw, int(x1)), min(fh, int(y1))
    if x1 - x0 < 4 or y1 - y0 < 4:
        return None
    return x0, y0, x1, y1


@dataclass
class FaceState:
    """What is smoothed over time for one face: its landmarks and its lighting correction."""

    steadier: blend.LandmarkSteadier
    correction: np.ndarray | None = None
    t: float = 0.0
    photo: object | None = None  # with several photos of the source: the one this face uses now
    frames: int = 0  # frames pasted so far

    def light_due(self) -> bool:
        """Whether this frame measures the light and colour again (else the last correction holds)."""
        return self.correction is None or self.frames % LIGHT_EVERY == 0

    def smoothed(self, correction: np.ndarray, t: float, tau: float) -> np.ndarray:
        """This frame's lighting correction, smoothed over time with the time constant `tau` (s)."""
        if self.correction is not None:
            keep = float(np.exp(-max(0.0, t - self.t) / tau)) if tau > 0 else 0.0
            correction = keep * self.correction + (1 - keep) * correction
        self.correction, self.t = correction, t
        return correction

    def steady(self, landmarks: Landmarks, reach: float) -> np.ndarray:
        """The face's landmarks (x, y) with jitter under `reach` (fraction of the face size) held back."""
        T = landmarks[:, :2].astype(np.float64)
        self.steadier.reach = reach * float(np.ptp(T[warp.FACE_OVAL, 1]))  # per frame: a live setting
        return self.steadier(T)


class SwapMesh(Effect):
    name = "swap"

    def __init__(self, cfg: SwapMeshConfig, characters, engines=None) -> None:
        """`engines`: () -> the shared EnginePool, called only when `enhance.model` is set."""
        self.cfg = cfg
        self.characters = characters  # CharacterLibrary, or anything with .active
        self._sources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._states: list[FaceState] = []
        self.enhancer = FaceEnhancerStep(cfg.enhance, engines)
        self.priority: Priority = "live"  # "batch" when a job runs it: its model calls step aside for live frames
        self.offline = False  # render and jobs: the enhancer runs on every frame, synchronously
        self.hands = FaceHands()  # used while cfg.occlusion_hands is on (a live setting)

    def start(self) -> None:
        for character in getattr(self.characters, "characters", lambda: [])():
            self.source_for(character)
        self.enhancer.start(self.offline, self.priority)
        self.hands.offline = self.offline
        if self.cfg.occlusion_hands:
            self.hands.warm()

    def close(self) -> None:
        self.enhancer.close()
        self.hands.close()

    def source_for(self, character) -> SwapSource:
        src = self._sources.get(character)
        if src is None:
            src = SwapSource.build(character.image, character.landmarks)
            self._sources[character] = src
        return src

    def reset(self) -> None:
        """Forget what is smoothed over time: the next frame is an unrelated picture."""
        self._states = []
        self.hands.close()  # nor tracked: each picture is searched for hands afresh

    def _photo_for(self, index: int, face: Face, default):
        """With several photos of the source person (`characters.photos`, from `render swap --face DIR`):
        the one whose head pose is closest to the target face's. The choice only changes when another
        photo is closer by POSE_HYSTERESIS_DEG, so a face near the middle does not flip between two."""
        photos = getattr(self.characters, "photos", None)
        if not photos or len(photos) < 2:
            return default

        def gap(photo) -> float:
            p, q = photo.face.pose, face.pose
            return (
                abs(p.yaw - q.yaw) + abs(p.pitch - q.pitch) + 0.25 * abs(p.roll - q.roll)
            )  # roll: the warp takes it out

        state = self._states[index]
        best = min(photos, key=gap)
        if state.photo in photos and gap(state.photo) <= gap(best) + POSE_HYSTERESIS_DEG:
            return state.photo
        state.photo = best
        return best

    def apply(self, packet: FramePacket) -> Image:
        character = self.characters.active
        faces = packet.faces or []
        if character is None or not faces:
            self._states = []
            return packet.image
        faces = sorted(faces, key=lambda f: f.box[2] * f.box[3], reverse=True)[: self.cfg.max_faces]
        faces.sort(key=lambda f: f.box[0])  # a stable order left to right for the smoothing
        if len(faces) != len(self._states):
            self._states = []
        out = own_frame(packet)  # swapped in place: no full-frame copy per frame
        t = packet.t_capture_ns / 1e9
        steadied = [self._steady(i, face) for i, face in enumerate(faces)]
        # Each face reads the frame as the camera gave it (a neighbour's swap may overlap its box).
        margin = SEAMLESS_MARGIN if self.cfg.blend == "seamless" else 0.0
        targets = [
            (i, face, T, box)
            for i, (face, T) in enumerate(zip(faces, steadied, strict=True))
            if (box := _face_region(T, out.shape, margin)) is not None
        ]
        originals = [np.ascontiguousarray(out[y0:y1, x0:x1, :3]) for *_, (x0, y0, x1, y1) in targets]
        hands = [self.hands(i, out, T) if self.cfg.occlusion_hands else [] for i, _, T, _ in targets]
        for (i, face, T, box), region, in_front in zip(targets, originals, hands, strict=True):
            src = self.source_for(self._photo_for(i, face, character))
            try:
                self._swap_one(out, region, box, src, face, T, i, t, in_front)
            except cv2.error as exc:  # a degenerate face box at the frame edge: leave that face as is
                log.debug("swap: face %d skipped: %s", i, exc)
        if self.cfg.enhance.model != "none":
            out = self.enhancer.apply(out, [T for _, _, T, _ in targets], packet.seq)
        return out

    def _steady(self, index: int, face: Face) -> np.ndarray:
        if index >= len(self._states):
            self._states.append(FaceState(blend.LandmarkSteadier(0.0)))
        return self._states[index].steady(face.landmarks, self.cfg.steady)

    def _swap_one(
        self,
        out: Image,
        region: Image,
        box: tuple[int, int, int, int],
        src: SwapSource,
        face: Face,
        T: np.ndarray,
        index: int,
        t: float,
        hands: list[Hand],
    ) -> None:
        cfg = self.cfg
        x0, y0, x1, y1 = box
        rw, rh = x1 - x0, y1 - y0

        # Warp: similarity source -> target, then the TPS residual in source coordinates.
        m = warp.similarity(src.landmarks[warp.RIGID], T[warp.RIGID])
        minv = warp.invert_affine(m)
        disp = (warp.apply_affine(minv, T[src.control]) - src.landmarks[src.control]).astype(np.float32)
        forward = src.tps.field(disp)
        grid = warp.Grid.covering(x0, y0, rw, rh, max(rw, rh) / GRID_CELLS)
        z = grid.mapped(minv)
        back = warp.invert_displacement(src.tps.grid, forward, z)
        fmap = warp.upsample(back, rw, rh)
        # Through a fixed-point copy of the map: OpenCV remaps in fixed point anyway, and converting
        # first costs less than remapping with the float map (the same pixels come out).
        fixed_xy, fixed_frac = cv2.convertMaps(fmap, None, cv2.CV_16SC2)  # type: ignore[call-overload]  # cv2 stubs: map2 may be None
        patch = cast(
            Image, cv2.remap(src.image, fixed_xy, fixed_frac, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        )

        patch_small = marks = None
        if cfg.color_match and self._states[index].light_due():
            scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
            k = round(1 / blend.small_scale((rh, rw))[0])
            patch_small, marks = src.small_patch(back, (rw, rh), k, scale, cfg.occlusion_threshold)
        holes = face_holes(T, face, cfg.keep_eyes, cfg.eye_size, cfg.keep_mouth)
        paste_face(out, region, box, patch, T, holes, self._states[index], t, cfg, patch_small, marks, hands=hands)


class PasteSettings(Protocol):
    """The settings of `paste_face`: both swap backends' configs have them, under the same names."""

    blend: BlendMode
    feather: float
    color_match: bool
    shading_scale: float
    color_smoothing_s: float
    occlusion: bool
    occlusion_threshold: float
    opacity: float


def face_holes(T: np.ndarray, face: Face, keep_eyes: bool, eye_size: float, keep_mouth: bool) -> list[np.ndarray]:
    """The polygons (frame pixels) where the target's own face shows through the swapped one: its
    eyes (`eye_size` of their opening, about the centre) and its open mouth's interior."""
    holes = []
    if keep_eyes:
        for eye in (warp.EYE_LEFT, warp.EYE_RIGHT):
            centre = T[eye].mean(0)
            holes.append(centre + (T[eye] - centre) * eye_size)
    if keep_mouth and face.mouth_openness > 0.04:
        holes.append(T[warp.MOUTH_INNER])
    return holes


def paste_face(
    out: Image,
    region: Image,
    box: tuple[int, int, int, int],
    patch: Image,
    T: np.ndarray,
    holes: list[np.ndarray],
    state: FaceState,
    t: float,
    cfg: PasteSettings,
    patch_small: Image | None = None,
    patch_marks: np.ndarray | None = None,
    coverage: np.ndarray | None = None,
    hands: list[Hand] | None = None,
) -> None:
    """Put the swapped face `patch` (drawn over `box`, `region` = the frame's own pixels there) into
    `out` (neural/blend.py): the target's light and colour, occluders kept in front, the oval's mask
    with `holes`, blended as `cfg.blend` says. `patch_small` / `patch_marks`: the patch's small copy
    and its marks that are not skin (tattoos, paint) when the backend has them cheaper than from the
    patch; `coverage`: where the backend's patch is valid (float, over the box), if not everywhere;
    `hands`: hands' landmarks (frame pixels, tracking/hands.py) kept in front like the occluders."""
    x0, y0, x1, y1 = box
    oval = T[warp.FACE_OVAL]
    size = float(max(np.ptp(oval[:, 0]), np.ptp(oval[:, 1])))
    rw, rh = x1 - x0, y1 - y0
    origin = (x0, y0)
    # Light, colour and occlusion are measured on a small copy of the box (no detail needed).
    f, small_size = blend.small_scale((rh, rw))
    small_shape = (small_size[1], small_size[0])
    T_small = cast(np.ndarray, (T - np.array(origin, np.float64)) * f)
    face_small = _oval_mask(small_shape, T_small, (0.0, 0.0))
    features_small = _feature_mask(small_shape, T_small, (0.0, 0.0))
    skin = (face_small > 0) & (features_small == 0)
    region_small = blend.small(region, small_size)
    in_front = None
    if hands:
        in_front = blend.hand_cover(hands, origin, f, small_shape)
        skin &= in_front == 0  # a hand is skin-coloured but not the face's light
    if cfg.occlusion:
        region_lab = blend.lab(region_small)
        model = blend.skin_model(region_lab, skin)
        if model is not None:
            objects = blend.not_skin(region_lab, face_small, features_small, model, cfg.occlusion_threshold)
            in_front = objects if in_front is None else np.maximum(in_front, objects)
            skin &= objects == 0  # the light is measured on the skin that is really seen
    if cfg.color_match and not state.light_due():
        assert state.correction is not None  # light_due() is True until there is one
        patch = blend.apply_correction(patch, state.correction)
    elif cfg.color_match:
        # The patch's marks that are not skin-coloured (tattoos, paint, make-up) are its identity:
        # left out of its light estimate so the correction does not wash them out.
        if patch_small is None:
            patch_small = blend.small(patch, small_size)
        patch_skin = (face_small > 0) & (features_small == 0)
        if patch_marks is None:
            patch_lab = blend.lab(patch_small)
            own = blend.skin_model(patch_lab, patch_skin)
            if own is not None:
                patch_skin &= blend.not_skin(patch_lab, face_small, features_small, own, cfg.occlusion_threshold) == 0
        else:
            patch_skin &= patch_marks == 0
        now = blend.shading_correction(patch_small, region_small, skin, cfg.shading_scale, patch_skin)
        patch = blend.apply_correction(patch, state.smoothed(now, t, cfg.color_smoothing_s))
    state.frames += 1
    mask = paste_mask(T, origin, (rh, rw), cfg.feather * size, holes, in_front)
    if coverage is not None:
        mask *= coverage
    out[y0:y1, x0:x1, :3] = blend.composite(region, patch, mask, cfg.blend, cfg.opacity)


def paste_mask(
    T: np.ndarray,
    origin: tuple[int, int],
    shape: tuple[int, int],
    feather_px: float,
    holes: list[np.ndarray],
    in_front: np.ndarray | None = None,
) -> np.ndarray:
    """Float mask over the box (`shape` = (rh, rw) at `origin`): 1 = the swapped face, inside the
    target's oval, with a soft edge `feather_px` wide and `holes` cut out. The wide soft edge and the
    occluders (`in_front`, on the small copy) are put together at a quarter of the size and scaled
    up once."""
    o = np.array(origin, dtype=np.float64)
    rh, rw = shape
    size = float(np.ptp(T[warp.FACE_OVAL, 1]))
    q = 0.25
    small: np.ndarray = np.zeros((max(2, round(rh * q)), max(2, round(rw * q))), np.uint8)
    cv2.fillPoly(small, [np.round((T[warp.FACE_OVAL] - o) * q * 16).astype(np.int32)], (255,), cv2.LINE_AA, shift=4)
    feather = feather_px * q
    if feather >= 1:
        # Erode by the blur's reach so the soft edge fades out inside the face oval.
        k = int(1.5 * feather) | 1
        small = cv2.erode(small, np.ones((k, k), np.uint8))
        small = cv2.GaussianBlur(small, (0, 0), feather / 2)
    else:
        small = cv2.erode(small, np.ones((3, 3), np.uint8))  # the upscale blurs by about a pixel
    quarter = small.astype(np.float32) * (1.0 / 255.0)
    if in_front is not None:
        occluded = cv2.GaussianBlur(in_front.astype(np.float32), (0, 0), 0.7)
        # The small copy covers the box's first k * (its size) pixels (blend.small_scale).
        k = rw // in_front.shape[1]
        qw = min(quarter.shape[1], round(in_front.shape[1] * k * q))
        qh = min(quarter.shape[0], round(in_front.shape[0] * k * q))
        quarter[:qh, :qw] *= 1.0 - cv2.resize(occluded, (qw, qh), interpolation=cv2.INTER_LINEAR)
    m = cast(np.ndarray, cv2.resize(quarter, (rw, rh), interpolation=cv2.INTER_LINEAR))
    # Nothing outside the target's face oval ever changes.
    oval = np.zeros(shape, np.uint8)
    cv2.fillPoly(oval, [np.round((T[warp.FACE_OVAL] - o) * 16).astype(np.int32)], (1,), shift=4)
    m *= oval
    sigma = max(0.6, 0.006 * size)
    reach = int(np.ceil(3 * sigma)) + 2  # how far GaussianBlur spreads a hole's edge
    for hole_points in holes:
        # Each hole is cut and softened in its own small box, not across the whole face region
        # (a blur of the full region cost about 1 ms per 1080p frame).
        pts = hole_points - o
        x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - reach, 0)
        x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + reach + 1, (rw, rh))
        if x1 <= x0 or y1 <= y0:
            continue
        hole = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.fillPoly(hole, [np.round((pts - (x0, y0)) * 16).astype(np.int32)], (255,), cv2.LINE_AA, shift=4)
        h = cv2.GaussianBlur(hole, (0, 0), sigma).astype(np.float32) * (1.5 / 255.0)
        m[y0:y1, x0:x1] *= 1.0 - np.minimum(h, 1.0)
    return m
