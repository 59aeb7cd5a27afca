#!/usr/bin/env python3
"""Make the pictures of docs/CHARACTERS.md with facecast itself.

    .venv/bin/python tools/make_doc_images.py                   # writes docs/images/*.png
    .venv/bin/python tools/make_doc_images.py --variants DIR    # also keeps the full-size test images in DIR

Every picture starts from the bundled portrait (astronaut.png, public domain):
crops and variants of it are the "before" (the same variants `facecast character check` is run on
in the guide), and the "after" frames are what the real `animate` mesh effect makes of each variant
when the synthetic driver (the same portrait moved by a scripted head motion, tracked by the real
MediaPipe tracker) drives it. Transparent pixels are shown over a checkerboard. The PNGs are
quantised to a small palette so that the whole set stays a few hundred KB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

import cv2  # noqa: E402
import numpy as np  # noqa: E402

TILE = 192  # pixels per picture in a strip
GAP = 8
PAPER = (245, 245, 245)  # BGR of the space between tiles


@dataclass(frozen=True)
class Variant:
    name: str  # file name, also the name the guide's check transcript shows
    image: np.ndarray  # BGR, or BGRA where the variant is about alpha


def bundled_portrait() -> np.ndarray:
    from facecast.assets import default_portrait

    image = cv2.imread(str(default_portrait()), cv2.IMREAD_COLOR)
    if image is None:
        raise SystemExit(f"cannot read the bundled portrait {default_portrait()}")
    return image


def _landmarks(image: np.ndarray) -> np.ndarray:
    from facecast.tracking.face_mesh import track_image

    faces = track_image(image[:, :, :3])
    if not faces:
        raise SystemExit("the bundled portrait has no face?")
    return faces[0].landmarks


def _head_alpha(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """A hand-made cut-out: the head and the top of the neck only, soft edge (what an image editor gives)."""
    from facecast.effects.warp import FACE_OVAL

    h, w = image.shape[:2]
    oval = lm[FACE_OVAL, :2]
    cx, cy = oval.mean(0)
    rx, ry = np.ptp(oval[:, 0]) / 2, np.ptp(oval[:, 1]) / 2
    alpha = np.zeros((h, w), np.uint8)
    # Hair: a larger ellipse around the upper head; neck: a rectangle under the chin.
    cv2.ellipse(alpha, (int(cx), int(cy - 0.15 * ry)), (int(rx * 1.45), int(ry * 1.35)), 0, 0, 360, (255,), -1)
    chin = lm[152, :2]
    cv2.rectangle(alpha, (int(cx - rx * 0.55), int(cy)), (int(cx + rx * 0.55), int(chin[1] + ry * 0.35)), (255,), -1)
    return cv2.GaussianBlur(alpha, (0, 0), 3)


def _with_glasses(image: np.ndarray, lm: np.ndarray) -> np.ndarray:
    """Dark rectangular frames drawn over both eyes, a bridge and the temples."""
    out = image.copy()
    colour, thick = (30, 30, 35), 3
    eyes = []
    for corner_a, corner_b in ((33, 133), (362, 263)):
        a, b = lm[corner_a, :2], lm[corner_b, :2]
        centre = (a + b) / 2 + np.array([0.0, 2.0])
        half_w = np.linalg.norm(b - a) * 0.85
        half_h = half_w * 0.62
        p0 = (int(centre[0] - half_w), int(centre[1] - half_h))
        p1 = (int(centre[0] + half_w), int(centre[1] + half_h))
        cv2.rectangle(out, p0, p1, colour, thick, cv2.LINE_AA)
        eyes.append((p0, p1))
    (l0, l1), (r0, r1) = sorted(eyes)
    y = (l0[1] + l1[1]) // 2 - 3
    cv2.line(out, (l1[0], y), (r0[0], y), colour, thick, cv2.LINE_AA)
    cv2.line(out, (l0[0], y), (int(lm[234, 0]), y + 3), colour, thick, cv2.LINE_AA)
    cv2.line(out, (r1[0], y), (int(lm[454, 0]), y + 3), colour, thick, cv2.LINE_AA)
    return out


def variants(portrait: np.ndarray) -> list[Variant]:
    """The test images of the guide, all made from the bundled portrait."""
    lm = _landmarks(portrait)
    h, w = portrait.shape[:2]
    tilted = cv2.warpAffine(
        portrait, cv2.getRotationMatrix2D((225, 140), 50, 1.0), (w, h), borderMode=cv2.BORDER_REPLICATE
    )
    alpha = _head_alpha(portrait, lm)
    return [
        Variant("portrait.png", portrait),
        Variant("head-and-shoulders.png", portrait[0:320, 64:384]),
        Variant("with-alpha.png", np.dstack([portrait, alpha])),
        Variant("chin-cut-off.png", portrait[0:150, :]),
        Variant("face-too-small.png", cv2.resize(portrait, (256, 256), interpolation=cv2.INTER_AREA)),
        Variant("tiny.png", cv2.resize(portrait, (100, 100), interpolation=cv2.INTER_AREA)),
        Variant("tilted.png", tilted),
        Variant("no-face.png", portrait[125:, :]),
        Variant("inverted-alpha.png", np.dstack([portrait, 255 - alpha])),
        Variant("glasses.png", _with_glasses(portrait, lm)[0:320, 64:384]),
    ]


def write_variants(folder: Path, portrait: np.ndarray | None = None) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if portrait is None:
        portrait = bundled_portrait()
    paths = []
    for v in variants(portrait):
        path = folder / v.name
        if not cv2.imwrite(str(path), v.image):
            raise SystemExit(f"cannot write {path}")
        paths.append(path)
    return paths


# -- the driver: the synthetic face, tracked once, replayed into every character ---------------------


@dataclass(frozen=True)
class DriverFrame:
    t: float
    faces: list
    yaw: float
    roll: float
    mouth: float
    eyes: float


def driver(frames: int = 96, fps: float = 30.0, start_s: float = 2.3) -> list[DriverFrame]:
    """The synthetic driver with wider moves than its defaults, tracked by the real tracker. It starts
    where its head turn passes zero, so the neutral pose (the first tracked frames) looks ahead."""
    from facecast.capture.synthetic import SyntheticConfig, SyntheticReader
    from facecast.tracking.face_mesh import FaceTracker, TrackingConfig

    cfg = SyntheticConfig(yaw_deg=25.0, pitch_deg=8.0, roll_deg=14.0, mouth=0.45, realtime=False)
    reader = SyntheticReader(cfg, 480, 360, fps)
    reader.open()
    tracker = FaceTracker(TrackingConfig())
    first = round(start_s * fps)
    out = []
    try:
        for i in range(frames):
            frame = reader.render(first + i)
            t = i / fps
            truth = frame.truth
            assert truth is not None  # the synthetic driver always says what it did
            out.append(
                DriverFrame(
                    t, tracker.detect(frame.image, t), truth.yaw_deg, truth.roll_deg, truth.mouth_open, truth.eye_open
                )
            )
    finally:
        tracker.close()
    return out


def pick_frames(frames: list[DriverFrame], calibration: int = 10) -> list[int]:
    """Three moments that show the rig: the widest head turn, the mouth wide open, mid-blink."""
    later = range(calibration + 2, len(frames))
    yaw0 = float(np.mean([f.yaw for f in frames[:calibration]]))
    turn = max(later, key=lambda i: abs(frames[i].yaw - yaw0))
    mouth = max((i for i in later if abs(i - turn) > 15), key=lambda i: frames[i].mouth)  # another moment
    blink = min(later, key=lambda i: frames[i].eyes)
    return [turn, mouth, blink]


class _One:
    def __init__(self, character) -> None:
        self.active = character

    def characters(self) -> list:
        return [self.active]


def animate(character, frames: list[DriverFrame], picks: list[int], **overrides) -> list[np.ndarray]:
    """BGRA outputs of the real animate mesh effect at the picked frames (it sees every frame)."""
    from facecast.effects.animate_mesh import AnimateMesh, AnimateMeshConfig
    from facecast.types import FramePacket

    effect = AnimateMesh(AnimateMeshConfig(width=TILE * 2, height=TILE * 2, **overrides), _One(character))
    effect.start()
    shots = {}
    for i, f in enumerate(frames[: max(picks) + 1]):
        image = effect.apply(
            FramePacket(
                seq=i,
                image=np.zeros((360, 480, 3), np.uint8),
                t_capture_ns=int(f.t * 1e9),
                faces=f.faces,
                source_fps=30.0,
            )
        )
        if i in picks:
            shots[i] = image
    effect.close()
    return [shots[i] for i in picks]


# -- drawing ---------------------------------------------------------------------------------------------


def checkerboard(h: int, w: int, cell: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    light = (yy // cell + xx // cell) % 2 == 0
    board = np.where(light[..., None], 235, 200).astype(np.uint8)
    return np.repeat(board, 3, axis=2)


def tile(
    image: np.ndarray, size: int = TILE, box: tuple[int, int, int, int] | None = None, scale: bool = True
) -> np.ndarray:
    """Fit an image (BGR or BGRA; `box` = x, y, w, h to zoom in) in a size x size square, scaled to
    fill it or (scale=False) as it is; transparency over a checkerboard."""
    if box is not None:
        x, y, w, h = box
        image = image[y : y + h, x : x + w]
    h, w = image.shape[:2]
    s = size / max(h, w) if scale else min(1.0, size / max(h, w))
    small = cv2.resize(
        image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    )
    sh, sw = small.shape[:2]
    out = np.full((size, size, 3), PAPER, np.uint8)
    y0, x0 = (size - sh) // 2, (size - sw) // 2
    if small.shape[2] == 4:
        a = small[:, :, 3:4].astype(np.float32) / 255.0
        under = checkerboard(sh, sw)
        small = (small[:, :, :3] * a + under * (1 - a)).astype(np.uint8)
    out[y0 : y0 + sh, x0 : x0 + sw] = small[:, :, :3]
    return out


def arrow(height: int = TILE, width: int = 28) -> np.ndarray:
    out = np.full((height, width, 3), PAPER, np.uint8)
    y = height // 2
    cv2.arrowedLine(out, (4, y), (width - 4, y), (90, 90, 90), 2, cv2.LINE_AA, tipLength=0.35)
    return out


def row(*parts: np.ndarray) -> np.ndarray:
    gap = np.full((parts[0].shape[0], GAP, 3), PAPER, np.uint8)
    pieces = []
    for p in parts:
        pieces += [p, gap]
    return np.hstack(pieces[:-1])


def column(*rows: np.ndarray) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    padded = [np.hstack([r, np.full((r.shape[0], width - r.shape[1], 3), PAPER, np.uint8)]) for r in rows]
    gap = np.full((GAP, width, 3), PAPER, np.uint8)
    pieces = []
    for p in padded:
        pieces += [p, gap]
    return np.vstack(pieces[:-1])


def before_after(source: np.ndarray, outputs: list[np.ndarray]) -> np.ndarray:
    return row(tile(source), arrow(), *[tile(o) for o in outputs])


def save_png(path: Path, bgr: np.ndarray, colours: int = 192) -> int:
    """A palette PNG (photographs quantise well at this size); returns its size in bytes."""
    from PIL import Image as PILImage

    rgb = PILImage.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    rgb.quantize(colors=colours, method=PILImage.Quantize.MEDIANCUT, dither=PILImage.Dither.NONE).save(
        path, optimize=True
    )
    return path.stat().st_size


# -- the set -----------------------------------------------------------------------------------------------


def make_images(out: Path, keep_variants: Path | None = None) -> dict[str, int]:
    from facecast.characters.library import check_files

    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="facecast-doc-images-") as tmp:
        folder = keep_variants or Path(tmp)
        paths = write_variants(folder)
        checked = {p.name: (c, why) for p, c, why in check_files(paths)}
    sources = {v.name: v.image for v in variants(bundled_portrait())}
    frames = driver()
    picks = pick_frames(frames)

    def char(name: str):
        character, why = checked[name]
        if character is None:
            raise SystemExit(f"{name} was refused ({why}); the guide expects it to load")
        return character

    sizes: dict[str, int] = {}
    # Thumbnails of every variant at a quarter of its pixel size (so small images look small), for
    # the table of what `facecast character check` says.
    for name, image in sources.items():
        h, w = image.shape[:2]
        quarter = cv2.resize(image, (max(1, w // 4), max(1, h // 4)), interpolation=cv2.INTER_AREA)
        sizes[f"check-{name}"] = save_png(out / f"check-{name}", tile(quarter, 128, scale=False), colours=128)
    # Good framing, and a framing the check accepts but that animates badly.
    for name in ("portrait.png", "head-and-shoulders.png", "chin-cut-off.png", "glasses.png"):
        strip = before_after(sources[name], animate(char(name), frames, picks))
        sizes[f"animate-{name}"] = save_png(out / f"animate-{name}", strip)
    # Alpha: segmentation guesses the person; your own alpha channel decides exactly what shows.
    grid = column(
        row(tile(sources["portrait.png"]), arrow(), tile(animate(char("portrait.png"), frames, picks[:1])[0])),
        row(tile(sources["with-alpha.png"]), arrow(), tile(animate(char("with-alpha.png"), frames, picks[:1])[0])),
    )
    sizes["alpha.png"] = save_png(out / "alpha.png", grid)
    # Background modes of the same frame: transparent (alpha for OBS), original, color.
    shots = [
        animate(char("portrait.png"), frames, picks[:1], background=mode)[0]
        for mode in ("transparent", "original", "color")
    ]
    sizes["backgrounds.png"] = save_png(out / "backgrounds.png", row(*[tile(s) for s in shots]))
    # Turned faces: the driver's widest turn as it is (pose.yaw: 1), then tripled (pose.yaw: 3), which
    # the 2-D warp clamps at its 40 degrees; zoomed on the face.
    widest = [max(range(len(frames)), key=lambda i: abs(frames[i].yaw - frames[0].yaw))]
    face = (64, 0, 256, 256)
    turns = [
        animate(char("head-and-shoulders.png"), frames, widest, pose={"yaw": k, "pitch": 1.0, "roll": 1.0})[0]
        for k in (1.0, 3.0)
    ]
    sizes["limits-turn.png"] = save_png(out / "limits-turn.png", row(*[tile(t, box=face) for t in turns]))
    return sizes


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=REPO / "docs" / "images", help="where the PNGs go (default docs/images)"
    )
    parser.add_argument(
        "--variants",
        type=Path,
        metavar="DIR",
        help="also keep the full-size test images here (to run facecast character check on them)",
    )
    args = parser.parse_args(argv)
    sizes = make_images(args.out, args.variants)
    for name, size in sorted(sizes.items()):
        print(f"{args.out / name}: {size / 1024:.0f} KB")
    print(f"{len(sizes)} images, {sum(sizes.values()) / 1024:.0f} KB in all")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
