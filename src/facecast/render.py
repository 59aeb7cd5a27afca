"""`facecast render animate|swap`: the live effects applied to a whole video file, offline.

Every frame of the input is tracked (MediaPipe in video mode, timestamps from the file) and put
through the same Effect the daemon runs; the output keeps the input's frame rate and frame count,
and the input's audio packets are copied into it untouched. The file is written under a temporary
name in the destination folder and renamed when complete, so a crash never leaves a half-written
file under the final name.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import cast

import numpy as np

log = logging.getLogger(__name__)


class RenderError(RuntimeError):
    """The render cannot be done; the message says why, for the user."""


def add_render_arguments(render: argparse.ArgumentParser, add_config_args) -> None:
    kinds = render.add_subparsers(dest="render_kind", required=True)
    animate = kinds.add_parser("animate", help="a character portrait driven by the face in a video")
    animate.add_argument("--character", type=Path, required=True, metavar="IMG", help="the portrait to animate")
    animate.add_argument(
        "--driving", type=Path, required=True, metavar="VIDEO", help="video of the face that drives it"
    )
    swap = kinds.add_parser("swap", help="put the face of an image on every face in a video, an image or a folder")
    swap.add_argument(
        "--face",
        type=Path,
        required=True,
        metavar="IMG|DIR",
        help="the face to put in: an image, or a folder of photos of one person (inswapper averages their "
        "identity; mesh uses the photo whose head pose is closest to each target face)",
    )
    swap.add_argument(
        "--target",
        type=Path,
        required=True,
        metavar="VIDEO|IMG|DIR",
        help="the video, image or folder of images whose faces are replaced",
    )
    for p in (animate, swap):
        p.add_argument(
            "-o",
            "--output",
            type=Path,
            required=True,
            metavar="OUT",
            help="output video (.mp4); for swap: an image file for an image target, a folder for a folder "
            "(each output keeps its input's name)",
        )
        p.add_argument(
            "--backend",
            default=None,
            choices=["mesh", "liveportrait"] if p is animate else ["mesh", "inswapper"],
            help="effect backend (default: the config's, mesh = CPU without weights)",
        )
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        add_config_args(p)


def add_character_arguments(character: argparse.ArgumentParser, add_config_args) -> None:
    actions = character.add_subparsers(dest="character_action", required=True)
    check = actions.add_parser("check", help="say whether each image can be a character, and why not")
    check.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    add_config_args(check)


def run_render(args: argparse.Namespace, cfg) -> int:
    from facecast.characters.library import check_files

    image = args.character if args.render_kind == "animate" else args.face
    video = args.driving if args.render_kind == "animate" else args.target
    if args.render_kind == "swap" and image.is_dir():
        try:
            person = load_person(image, cfg.characters)
        except RenderError as exc:
            print(exc, file=sys.stderr)
            return 2
    else:
        ((_, character, reason),) = check_files([image], cfg.characters)
        if character is None:
            print(f"{image}: cannot use this image: {reason}", file=sys.stderr)
            return 2
        person = Person([character])
    if args.backend is not None:
        use_backend(cfg, args.render_kind, args.backend)
    try:
        if args.render_kind == "swap" and is_still_target(video):
            done, failed = render_stills(person, video, args.output, cfg)
            print(f"wrote {done} image(s) to {args.output}" + (f"; {failed} failed" if failed else ""), file=sys.stderr)
            return 1 if failed else 0
        frames = render_video(
            args.render_kind, person, video, args.output, cfg, progress=None if args.quiet else Progress()
        )
    except RenderError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"wrote {args.output} ({frames} frames)", file=sys.stderr)
    return 0


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def is_still_target(path: Path) -> bool:
    """A folder (of images) or one image file, rather than a video."""
    return path.is_dir() or path.suffix.lower() in IMAGE_SUFFIXES


def load_person(folder: Path, cfg) -> Person:
    """Every usable photo in `folder` (one person); refused ones are named on stderr."""
    from facecast.characters.library import check_files

    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise RenderError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
    photos = []
    for path, character, reason in check_files(files, cfg):
        if character is None:
            print(f"{path}: not used: {reason}", file=sys.stderr)
        else:
            photos.append(character)
    if not photos:
        raise RenderError(f"{folder}: none of its {len(files)} images can be used as the face")
    return Person(photos)


def use_backend(cfg, kind: str, backend: str) -> None:
    """Switch effect.<kind> to another backend (with that backend's defaults) unless it is already it."""
    from pydantic import TypeAdapter

    from facecast.effects.stage import AnimateConfig, SwapConfig

    if getattr(cfg.effect, kind).backend != backend:
        adapter = TypeAdapter(AnimateConfig if kind == "animate" else SwapConfig)
        setattr(cfg.effect, kind, adapter.validate_python({"backend": backend}))


def run_character_check(paths: list[Path], cfg) -> int:
    from facecast.characters.library import check_files

    bad = 0
    for path, character, text in check_files(paths, cfg.characters):
        if character is None:
            bad += 1
            print(f"REFUSED {path}: {text}")
        else:
            print(f"OK      {path}: {text}")
    return 1 if bad else 0


class Person:
    """The character library the effects see in a render: one person, from one photo or several
    (`photos`: the swap backends use them all: inswapper averages their identity, mesh picks the
    photo whose head pose is closest to each target face)."""

    def __init__(self, photos: list) -> None:
        self.photos = photos
        self.active = photos[0]

    def characters(self) -> list:
        return list(self.photos)


def render_video(
    kind: str,
    person,
    src: Path,
    dst: Path,
    cfg,
    progress: Progress | None = None,
    engines=None,
    priority: str = "live",
    in_place: bool = False,
) -> int:
    """Apply `kind` ("animate" or "swap") to every frame of `src`, write `dst`; returns the frame count.
    `engines`: () -> the EnginePool to share (the daemon's); by default one is made for this render.
    `in_place`: write `dst` directly (a job's own temporary file) instead of a temp renamed into place."""
    import av

    from facecast.engines.pool import EnginePool
    from facecast.media.video import add_video_stream, container_format, publish
    from facecast.outputs.base import flatten_alpha
    from facecast.tracking.face_mesh import FaceTracker
    from facecast.types import FramePacket

    try:
        inp = av.open(str(src))
    except (av.error.FFmpegError, OSError) as exc:
        raise RenderError(f"cannot read {src} as a video: {exc}") from exc
    try:
        if not inp.streams.video:
            raise RenderError(f"{src} has no video stream")
        vin = inp.streams.video[0]
        if priority == "batch":
            vin.codec_context.thread_count = 1  # beside the live stream: codecs must not take every core
        else:
            vin.thread_type = "AUTO"
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate or Fraction(30)
        total = vin.frames or (int(float(inp.duration) / 1e6 * float(rate)) if inp.duration else 0)

        section = cfg.effect.animate if kind == "animate" else cfg.effect.swap
        background = tuple(cfg.effect.animate.background_color) if kind == "animate" else (0, 0, 0)
        if engines is None:
            engines = lambda: EnginePool(cfg.models.resolved_dir(), cfg.engine)  # noqa: E731
        effect = _start_effect(kind, section, person, engines, priority)
        tracker = FaceTracker(cfg.tracking)

        dst.parent.mkdir(parents=True, exist_ok=True)
        if in_place:
            tmp = dst  # the caller (a job) already writes to a temporary name of its own
        else:
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.stem}-", suffix=dst.suffix or ".mp4", dir=dst.parent)
            os.close(fd)
            tmp = Path(tmp_name)
        count = 0
        try:
            out = av.open(str(tmp), mode="w", format=container_format(dst))
            # Every stream is added before the first packet is written (the header goes out then).
            if kind == "animate":
                size = (cfg.effect.animate.width, cfg.effect.animate.height)
            else:
                size = (vin.codec_context.width, vin.codec_context.height)
            vout = add_video_stream(out, *size, rate, crf=18, threads=1 if priority == "batch" else 0)
            aout = out.add_stream_from_template(ain) if ain is not None else None
            streams = [s for s in (vin, ain) if s is not None]
            t_start = time.monotonic()
            try:
                for packet in inp.demux(*streams):
                    if packet.stream is ain:
                        if packet.dts is None or aout is None:
                            continue  # the demuxer's flush packet
                        packet.stream = aout
                        out.mux(packet)
                        continue
                    for frame in _decode(packet, src):
                        bgr = frame.to_ndarray(format="bgr24")
                        t = float(frame.time) if frame.time is not None else count / float(rate)
                        faces = tracker.detect(bgr, t)
                        image = effect.apply(
                            FramePacket(
                                seq=count, image=bgr, t_capture_ns=int(t * 1e9), faces=faces, source_fps=float(rate)
                            )
                        )
                        image = flatten_alpha(image, background)
                        h, w = vout.height, vout.width
                        if image.shape[0] < h or image.shape[1] < w:
                            raise RenderError(
                                f"{src}: frame {count} is {image.shape[1]}x{image.shape[0]}, "
                                f"not {w}x{h}: videos that change size are not supported"
                            )
                        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:h, :w]), format="bgr24")
                        vf.pts = count
                        out.mux(vout.encode(vf))
                        count += 1
                        if progress is not None:
                            progress.update(count, total, time.monotonic() - t_start)
                out.mux(vout.encode(None))
            finally:
                out.close()
                tracker.close()
                effect.close()
            if count == 0:
                raise RenderError(f"{src}: no video frame could be decoded")
            if tmp != dst:
                publish(tmp, dst)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            if progress is not None:
                progress.done()
        return count
    finally:
        inp.close()


def _start_effect(kind: str, section, person, engines, priority: str):
    """The effect for an offline render, started: its enhancer (if any) runs on every frame."""
    from facecast.effects.base import Effect
    from facecast.effects.stage import make_effect
    from facecast.effects.swap_mesh import SwapMesh
    from facecast.engines.onnxruntime import EngineError

    if not isinstance(person, Person):
        person = Person([person])  # one character (jobs pass theirs)
    effect: Effect
    try:
        if kind == "swap" and section.backend == "mesh":
            effect = SwapMesh(section, person, engines)  # the pool only if its enhancer is configured
        else:
            effect = make_effect(kind, section, person, engines)
        if hasattr(effect, "priority"):
            effect.priority = priority  # a batch job's engine calls yield to live frames
        if hasattr(effect, "offline"):
            effect.offline = True
        effect.start()
    except EngineError as exc:
        raise RenderError(f"{kind} ({section.backend}): {exc}") from exc
    return effect


def render_stills(person, src: Path, dst: Path, cfg, engines=None) -> tuple[int, int]:
    """Swap the faces of one image (`dst`: an image file) or of every image in a folder (`dst`: a
    folder; each output keeps its input's name). Each image is written under a temporary name and
    renamed when complete. Returns (written, failed); an image without a face is written unchanged."""
    import cv2

    from facecast.engines.pool import EnginePool
    from facecast.outputs.base import flatten_alpha
    from facecast.tracking.face_mesh import FaceTracker
    from facecast.types import FramePacket, Image

    if src.is_dir():
        inputs = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not inputs:
            raise RenderError(f"{src}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        if dst.suffix.lower() in IMAGE_SUFFIXES or (dst.exists() and not dst.is_dir()):
            raise RenderError(f"{src} is a folder: -o must be a folder too (each output keeps its name), not {dst}")
        if dst.resolve() == src.resolve():
            raise RenderError(f"-o {dst} is the input folder: the originals would be overwritten")
        pairs = [(p, dst / p.name) for p in inputs]
    else:
        if not src.is_file():
            raise RenderError(f"{src}: no such image")
        if dst.suffix.lower() not in IMAGE_SUFFIXES:
            raise RenderError(f"{src} is an image: -o must be an image file ({', '.join(IMAGE_SUFFIXES)}), not {dst}")
        pairs = [(src, dst)]
    if engines is None:
        engines = lambda: EnginePool(cfg.models.resolved_dir(), cfg.engine)  # noqa: E731
    effect = _start_effect("swap", cfg.effect.swap, person, engines, "live")
    tracker = FaceTracker(cfg.tracking, static_images=True)
    written = failed = 0
    try:
        for i, (path, out_path) in enumerate(pairs):
            # None for an unreadable file (OpenCV's stubs do not say so).
            image = cast("Image | None", cv2.imread(str(path), cv2.IMREAD_COLOR))
            if image is None:
                print(f"{path}: cannot read this image; skipped", file=sys.stderr)
                failed += 1
                continue
            faces = tracker.detect(image)
            if not faces:
                print(f"{path}: no face found; written unchanged", file=sys.stderr)
            if hasattr(effect, "reset"):
                effect.reset()  # an unrelated picture: nothing is smoothed across images
            result = flatten_alpha(
                effect.apply(FramePacket(seq=i, image=image, t_capture_ns=0, faces=faces)), (0, 0, 0)
            )
            out_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = out_path.with_name(f".{out_path.stem}-partial{out_path.suffix}")
            if not cv2.imwrite(str(tmp), result):
                tmp.unlink(missing_ok=True)
                print(f"{out_path}: cannot write this image; skipped", file=sys.stderr)
                failed += 1
                continue
            os.replace(tmp, out_path)
            written += 1
    finally:
        tracker.close()
        effect.close()
    return written, failed


def _decode(packet, src: Path):
    import av

    try:
        return packet.decode()
    except av.error.FFmpegError as exc:  # a damaged packet: skip it, like a player would
        log.warning("render: %s: a damaged video packet was skipped (%s)", src, exc)
        return []


class Progress:
    """A one-line progress bar on stderr: frames done, fps, time left."""

    def __init__(self, stream=None, interval_s: float = 0.25) -> None:
        self.stream = stream or sys.stderr  # looked up now: the native log filter may have re-pointed it
        self.tty = self.stream.isatty()
        self.interval = interval_s if self.tty else 2.0
        self._last = 0.0
        self._line = ""

    def update(self, done: int, total: int, elapsed: float) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and done != total:
            return
        self._last = now
        fps = done / elapsed if elapsed > 0 else 0.0
        if total:
            left = max(0, total - done) / fps if fps > 0 else 0.0
            width = 30
            filled = int(width * min(done, total) / total)
            bar = "#" * filled + "-" * (width - filled)
            self._line = f"[{bar}] {done}/{total} frames  {fps:5.1f} fps  {_clock(left)} left"
        else:
            self._line = f"{done} frames  {fps:5.1f} fps"
        if self.tty:
            self.stream.write("\r" + self._line)
        else:
            self.stream.write(self._line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty and self._line:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 60}:{s % 60:02d}"
