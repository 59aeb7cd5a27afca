"""The character library: a folder of portraits, each validated and prepared once, one of them active.

A character is a portrait (PNG with or without alpha, JPEG, WebP) with one clear face. Loading it
checks everything an effect will rely on and says in one sentence what is wrong otherwise:
readable, not corrupt or truncated, not tiny, not absurdly large (large images are downscaled), a
face found, big enough and turned towards the camera. The face landmarks and a matte (the image's
own alpha channel, or MediaPipe selfie segmentation) are computed once here; effects add their own
per-character precomputation on top and cache it by character.

Thread-safety: the control API and hotkey threads call `select`/`next`/`add_file` while the effect
thread reads `active` once per frame; a switch is one reference swap under a lock, so it takes
effect on the next frame and a frame never sees half a character.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.types import Face, Image, Landmarks

log = logging.getLogger(__name__)

EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_FORMATS = {"PNG", "JPEG", "MPO", "WEBP"}  # MPO: JPEG from phone cameras
REMOVED_DIR = "removed"  # removed characters' files go here (a subfolder is never loaded)
# Pillow refuses to open images over twice its MAX_IMAGE_PIXELS (89.5 megapixels by default) as
# possible decompression bombs. That guard protects the whole process, so it stays on; our own
# limit (characters.max_megapixels) is checked from the header below it, before any decoding.
PILLOW_REFUSES_MEGAPIXELS = 178


class CharactersConfig(StrictModel):
    dir: Path | None = Field(None, description="folder of character images; null = the bundled assets/characters")
    active: str | None = Field(
        None, description="character shown at start (file name without extension); null = the first"
    )
    max_side: int = Field(
        2048, ge=256, le=8192, description="larger images are downscaled to this many pixels on the long side"
    )
    min_side: int = Field(128, ge=32, le=2048, description="images smaller than this on the short side are refused")
    max_megapixels: float = Field(
        50.0, gt=0, le=PILLOW_REFUSES_MEGAPIXELS, description="images with more pixels are refused (memory)"
    )
    min_face_px: int = Field(64, ge=16, le=1024, description="the face must be at least this tall, in pixels")
    max_turn_deg: float = Field(40.0, gt=0, le=90, description="faces turned or tilted further than this are refused")


class CharacterError(ValueError):
    """Why an image cannot be a character: one sentence for the streamer."""


@dataclass(frozen=True, eq=False)
class Character:
    """A validated portrait. Immutable: switching characters swaps the whole object."""

    name: str
    path: Path
    image: Image  # BGR uint8, downscaled to max_side
    matte: npt.NDArray[np.uint8]  # HxW, 255 = the character, 0 = background
    face: Face  # the largest face, landmarks in `image` pixels
    matte_source: str  # "alpha channel" or "segmentation"

    @property
    def landmarks(self) -> Landmarks:
        return self.face.landmarks

    @property
    def size(self) -> tuple[int, int]:
        h, w = self.image.shape[:2]
        return w, h

    def describe(self) -> str:
        w, h = self.size
        p = self.face.pose
        return (
            f"{w}x{h}, face {self.face.box[3]} px tall (yaw {p.yaw:+.0f}, pitch {p.pitch:+.0f}, "
            f"roll {p.roll:+.0f}), matte from {self.matte_source}"
        )


def decode_image(data: bytes, cfg: CharactersConfig) -> tuple[Image, npt.NDArray[np.uint8] | None]:
    """Bytes -> (BGR image, alpha or None), downscaled to cfg.max_side. CharacterError if unusable."""
    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    if not data:
        raise CharacterError("the file is empty")
    try:
        with warnings.catch_warnings():
            # Between Pillow's warning and error thresholds our own limit (checked next) decides.
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)
            pil: PILImage.Image = PILImage.open(io.BytesIO(data))  # reads the header only
            fmt = pil.format
            w, h = pil.size
    except PILImage.DecompressionBombError as exc:
        raise CharacterError(
            f"the image is too large to open safely ({exc}); the limit is {cfg.max_megapixels:g} megapixels"
        ) from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CharacterError("not a readable image (corrupt, or not PNG/JPEG/WebP)") from exc
    if fmt not in _FORMATS:
        raise CharacterError(f"{fmt} images are not supported: use PNG, JPEG or WebP")
    if w * h > cfg.max_megapixels * 1e6:
        raise CharacterError(
            f"the image is {w}x{h} ({w * h / 1e6:.0f} megapixels); the limit is {cfg.max_megapixels:g} "
            f"megapixels: scale it down (facecast uses at most {cfg.max_side} px anyway)"
        )
    if min(w, h) < cfg.min_side:
        raise CharacterError(f"the image is only {w}x{h}; at least {cfg.min_side} px on each side is needed")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PILImage.DecompressionBombWarning)  # our limit was checked above
            pil.load()
            pil = ImageOps.exif_transpose(pil)  # phone photos: honour the rotation tag
    except (OSError, ValueError, SyntaxError) as exc:
        raise CharacterError(f"the image is corrupt or truncated ({exc})") from exc
    has_alpha = pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info)
    rgba = np.asarray(pil.convert("RGBA" if has_alpha else "RGB"))
    if rgba.dtype != np.uint8 or rgba.ndim != 3:
        raise CharacterError(f"unsupported pixel format {pil.mode}")
    bgr = cv2.cvtColor(np.ascontiguousarray(rgba[:, :, :3]), cv2.COLOR_RGB2BGR)
    alpha = np.ascontiguousarray(rgba[:, :, 3]) if has_alpha else None
    h, w = bgr.shape[:2]
    if max(w, h) > cfg.max_side:
        f = cfg.max_side / max(w, h)
        size = (max(1, round(w * f)), max(1, round(h * f)))
        bgr = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        if alpha is not None:
            alpha = cv2.resize(alpha, size, interpolation=cv2.INTER_AREA)
    if alpha is not None and np.count_nonzero(alpha < 250) < 0.005 * alpha.size:
        alpha = None  # an alpha channel that is opaque everywhere says nothing about the background
    return cast(Image, bgr), alpha


class CharacterAnalyser:
    """The MediaPipe graphs a character check needs (face mesh on stills, selfie segmentation).

    Not thread-safe by itself: the library serialises calls with its own lock.
    """

    def __init__(self) -> None:
        from facecast.tracking.face_mesh import FaceTracker, TrackingConfig
        from facecast.tracking.one_euro import SmoothingConfig

        cfg = TrackingConfig(max_faces=4, min_detection_confidence=0.5, smoothing=SmoothingConfig(enabled=False))
        self._tracker = FaceTracker(cfg, static_images=True)
        self._segmenter: Any = None  # MediaPipe SelfieSegmentation, made on first use

    def faces(self, image: Image) -> list[Face]:
        return self._tracker.detect(image)

    def segment(self, image: Image) -> npt.NDArray[np.float32]:
        if self._segmenter is None:
            from facecast.tracking.mediapipe_solutions import solution

            self._segmenter = solution("selfie_segmentation").SelfieSegmentation(model_selection=0)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return self._segmenter.process(rgb).segmentation_mask.astype(np.float32)

    def close(self) -> None:
        self._tracker.close()
        if self._segmenter is not None:
            self._segmenter.close()


def prepare_character(
    data: bytes, path: Path, cfg: CharactersConfig, analyser: CharacterAnalyser, name: str | None = None
) -> Character:
    """Validate and prepare one image. Raises CharacterError with the reason."""
    if path.suffix.lower() not in EXTENSIONS:
        raise CharacterError(f"'{path.suffix or path.name}' files are not supported: use PNG, JPEG or WebP")
    image, alpha = decode_image(data, cfg)
    faces = analyser.faces(image)
    if not faces:
        raise CharacterError("no face found: use a clear, well-lit portrait looking at the camera")
    face = max(faces, key=lambda f: f.box[2] * f.box[3])
    if face.box[3] < cfg.min_face_px:
        raise CharacterError(
            f"the face is only {face.box[3]} px tall; at least {cfg.min_face_px} px is needed "
            "(use a larger image or a closer crop)"
        )
    p = face.pose
    turned = max(abs(p.yaw), abs(p.pitch), abs(p.roll))
    if turned > cfg.max_turn_deg:
        raise CharacterError(
            f"the face is turned too far (yaw {p.yaw:+.0f}, pitch {p.pitch:+.0f}, roll {p.roll:+.0f} degrees; "
            f"the limit is {cfg.max_turn_deg:g}): use a portrait looking at the camera"
        )
    matte, source = _matte(image, alpha, face, analyser)
    cx, cy = (int(v) for v in face.landmarks[1, :2])  # nose tip
    if matte[min(cy, matte.shape[0] - 1), min(cx, matte.shape[1] - 1)] < 128:
        raise CharacterError("the face is transparent in the image's alpha channel")
    image.setflags(write=False)
    matte.setflags(write=False)
    face.landmarks.setflags(write=False)
    return Character(name=name or path.stem, path=path, image=image, matte=matte, face=face, matte_source=source)


def _matte(
    image: Image, alpha: npt.NDArray[np.uint8] | None, face: Face, analyser: CharacterAnalyser
) -> tuple[npt.NDArray[np.uint8], str]:
    if alpha is not None:
        return alpha, "alpha channel"
    mask = analyser.segment(image)
    # Sharpen the soft mask a little, then make sure the whole face is inside it.
    matte = np.clip((mask - 0.25) / 0.5, 0.0, 1.0)
    matte = (cv2.GaussianBlur(matte, (0, 0), 1.0) * 255).astype(np.uint8)
    from facecast.effects.warp import FACE_OVAL

    oval = face.landmarks[FACE_OVAL, :2].round().astype(np.int32)
    cv2.fillPoly(matte, [oval], (255,), cv2.LINE_AA)
    return matte, "segmentation"


def check_files(paths: list[Path], cfg: CharactersConfig | None = None) -> list[tuple[Path, Character | None, str]]:
    """(path, character or None, description or reason) for each file: `facecast character check`."""
    cfg = cfg or CharactersConfig()
    analyser = CharacterAnalyser()
    out: list[tuple[Path, Character | None, str]] = []
    try:
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError as exc:
                out.append((path, None, f"cannot read the file ({exc.strerror or exc})"))
                continue
            try:
                character = prepare_character(data, path, cfg, analyser)
                out.append((path, character, character.describe()))
            except CharacterError as exc:
                out.append((path, None, str(exc)))
    finally:
        analyser.close()
    return out


class CharacterLibrary:
    """The characters in one folder, sorted by file name; one of them is active."""

    def __init__(self, folder: Path, cfg: CharactersConfig | None = None) -> None:
        self.folder = Path(folder)
        self.cfg = cfg or CharactersConfig()
        self._lock = threading.RLock()
        self._analyse_lock = threading.Lock()  # MediaPipe graphs: one image at a time
        self._items: list[Character] = []
        self._active: Character | None = None

    # -- loading --------------------------------------------------------------------------------
    def load_all(self) -> list[tuple[Path, str]]:
        """(Re)load every image in the folder; returns (file, reason) for each refused file."""
        if not self.folder.is_dir():
            return [(self.folder, "the characters folder does not exist")]
        files = sorted(
            (p for p in self.folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS), key=lambda p: p.name
        )
        loaded: list[Character] = []
        refused: list[tuple[Path, str]] = []
        with self._analyse_lock:
            analyser = CharacterAnalyser()
            try:
                for path in files:
                    try:
                        data = path.read_bytes()
                    except OSError as exc:
                        refused.append((path, f"cannot read the file ({exc.strerror or exc})"))
                        continue
                    name = _unique_name(path, [c.name for c in loaded])
                    try:
                        loaded.append(prepare_character(data, path, self.cfg, analyser, name))
                    except CharacterError as exc:
                        refused.append((path, str(exc)))
            finally:
                analyser.close()
        for path, reason in refused:
            log.warning("characters: %s refused: %s", path.name, reason)
        with self._lock:
            wanted = self._active.name if self._active is not None else self.cfg.active
            self._items = loaded
            self._active = self._find(wanted) if wanted else None
            if self._active is None and wanted:
                log.warning("characters: %r is not among the loaded characters; using the first", wanted)
            if self._active is None and loaded:
                self._active = loaded[0]
        log.info(
            "characters: %d loaded from %s%s",
            len(loaded),
            self.folder,
            f", active: {self._active.name}" if self._active else "",
        )
        return refused

    # -- queries --------------------------------------------------------------------------------
    def names(self) -> list[str]:
        with self._lock:
            return [c.name for c in self._items]

    def characters(self) -> list[Character]:
        with self._lock:
            return list(self._items)

    @property
    def active(self) -> Character | None:
        return self._active  # one reference read: atomic, no lock needed on the frame path

    def get(self, key: int | str) -> Character:
        """A character by 1-based index or name (file name with or without extension)."""
        with self._lock:
            if isinstance(key, int) or (isinstance(key, str) and key.isdigit() and self._find(key) is None):
                index = int(key)
                if not 1 <= index <= len(self._items):
                    raise KeyError(f"no character number {index}; there are {len(self._items)}")
                return self._items[index - 1]
            found = self._find(str(key))
            if found is None:
                raise KeyError(f"no character named {key!r}; known: {', '.join(self.names()) or 'none'}")
            return found

    # -- switching ------------------------------------------------------------------------------
    def select(self, key: int | str) -> Character:
        """Make a character active (1-based index or name); the effects use it from the next frame."""
        with self._lock:
            character = self.get(key)
            if character is not self._active:
                log.info("characters: active %s -> %s", self._active.name if self._active else "none", character.name)
            self._active = character
            return character

    def next(self) -> Character:
        return self._step(+1)

    def previous(self) -> Character:
        return self._step(-1)

    def _step(self, delta: int) -> Character:
        with self._lock:
            if not self._items:
                raise KeyError("no characters loaded")
            i = self._items.index(self._active) if self._active in self._items else -delta
            return self.select((i + delta) % len(self._items) + 1)

    # -- adding ---------------------------------------------------------------------------------
    def add_file(self, filename: str, data: bytes) -> Character:
        """Validate `data` like a folder file, then save it as `filename` in the folder.

        Raises CharacterError (and changes nothing) when the name or the image is not acceptable.
        The new character is not made active: call select() for that.
        """
        name = Path(filename).name
        if not name or name != filename or "\\" in filename or name.startswith("."):
            raise CharacterError(f"{filename!r} is not a plain file name")
        path = self.folder / name
        if path.suffix.lower() not in EXTENSIONS:
            raise CharacterError(f"'{path.suffix or name}' files are not supported: use PNG, JPEG or WebP")
        with self._lock:
            if path.exists() or any(c.path.name == name for c in self._items):
                raise CharacterError(f"a character file named {name} already exists; pick another name")
        with self._analyse_lock:
            analyser = CharacterAnalyser()
            try:
                with self._lock:
                    unique = _unique_name(path, [c.name for c in self._items])
                character = prepare_character(data, path, self.cfg, analyser, unique)
            finally:
                analyser.close()
        with self._lock:
            if path.exists():
                raise CharacterError(f"a character file named {name} already exists; pick another name")
            _write_atomically(path, data)
            self._items = sorted([*self._items, character], key=lambda c: c.path.name)
            if self._active is None:
                self._active = character
        log.info("characters: added %s (%s)", name, character.describe())
        return character

    # -- removing -------------------------------------------------------------------------------
    def remove(self, key: int | str) -> Character:
        """Take a character out of the library (1-based index or name). Its file is moved into the
        folder's `removed/` subfolder, not deleted: a mis-click is undone by moving it back. An
        active character is replaced by the next one (none after the last). KeyError: no such
        character; CharacterError: its file cannot be moved (nothing changed)."""
        with self._lock:
            character = self.get(key)
            removed = self.folder / REMOVED_DIR
            target, n = removed / character.path.name, 1
            while target.exists():  # removed before under the same name: keep both
                target, n = removed / f"{character.path.stem}-{n}{character.path.suffix}", n + 1
            try:
                removed.mkdir(exist_ok=True)
                os.replace(character.path, target)
            except FileNotFoundError:
                pass  # the file is already gone from the folder: only the library forgets it
            except OSError as exc:
                reason = exc.strerror or exc
                raise CharacterError(f"cannot move {character.path.name} into {removed}: {reason}") from exc
            position = self._items.index(character)
            self._items = [c for c in self._items if c is not character]
            if self._active is character:
                self._active = self._items[min(position, len(self._items) - 1)] if self._items else None
        log.info("characters: removed %s (file moved to %s)", character.name, target)
        return character

    def _find(self, key: str) -> Character | None:
        for c in self._items:
            if key in (c.name, c.path.name):
                return c
        return None


def _unique_name(path: Path, taken: list[str]) -> str:
    return path.stem if path.stem not in taken else path.name


def _write_atomically(path: Path, data: bytes) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=path.suffix, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise CharacterError(f"cannot save into {path.parent}: {exc.strerror or exc}") from exc
