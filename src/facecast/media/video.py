"""Write BGR frames to an H.264 file at a constant frame rate (PyAV); crash-safe recordings and
their remux into an ordinary MP4."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

# Crash-safe files: the muxer writes (and flushes to the OS) a fragment or cluster this often, so a
# killed process loses at most about this much plus the encoder's own delay (x264 looks ahead some
# frames). Keyframes stay every KEYFRAME_S: fragments need not start on one, and seeking does.
FRAGMENT_S = 0.5
KEYFRAME_S = 2.0
CRASH_SAFE_SUFFIXES = (".mp4", ".mov", ".mkv")


def frame_rate(fps: float) -> Fraction:
    """An exact rational rate: 29.97 -> 30000/1001, 60 -> 60."""
    return Fraction(fps).limit_denominator(1001)


def add_video_stream(
    container,
    width: int,
    height: int,
    rate: Fraction,
    codec: str = "libx264",
    crf: int = 20,
    preset: str = "veryfast",
    threads: int = 0,
    keyframe_interval: int | None = None,
):
    """An H.264 (or other) yuv420p stream at a constant rate; odd sizes are cut to even (yuv420p needs
    them). `threads`: encoder threads, 0 = the encoder decides (1 beside the live stream).
    `keyframe_interval`: frames between keyframes; None = the encoder's default."""
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width - width % 2, height - height % 2, "yuv420p"
    stream.codec_context.time_base = 1 / rate
    if keyframe_interval is not None:
        stream.codec_context.gop_size = keyframe_interval
    if codec == "libx264":
        stream.options = {"crf": str(crf), "preset": preset, "threads": str(threads)}
    return stream


def crash_safe_options(fmt: str, fragment_s: float = FRAGMENT_S) -> dict[str, str]:
    """Muxer options that keep everything up to the last fragment playable after a kill: fragmented
    MP4/MOV (an empty index up front, then self-contained fragments) or Matroska clusters, each
    flushed to the file as soon as it is complete (PyAV's buffered writes would hold them back)."""
    if fmt in ("mp4", "mov"):
        return {
            "movflags": "frag_keyframe+empty_moov+default_base_moof",
            "frag_duration": str(round(fragment_s * 1e6)),
            "flush_packets": "1",
        }
    if fmt in ("matroska", "webm"):
        return {"cluster_time_limit": str(round(fragment_s * 1e3)), "flush_packets": "1"}
    raise ValueError(f"no crash-safe mode for the {fmt} container; use {', '.join(CRASH_SAFE_SUFFIXES)}")


@dataclass(frozen=True, slots=True)
class WrittenVideo:
    """A finished video file, as reported to the streamer."""

    path: Path
    frames: int
    duration_s: float
    note: str = ""  # how it was finalised, e.g. "remuxed to MP4"

    def describe(self) -> str:
        note = f", {self.note}" if self.note else ""
        return f"{self.path} ({self.duration_s:.1f} s, {self.frames} frames{note})"


class VideoFileWriter:
    """Encodes BGR frames into one file at a constant frame rate; frame i is shown at i / fps.

    The stream is added on the first frame: its size sets the stream's (cut to even numbers).
    `crash_safe`: fragmented MP4/MOV or Matroska, flushed every `fragment_s`, so that a process
    killed mid-write leaves a file players decode up to about then.
    """

    def __init__(
        self,
        path: Path,
        fps: float,
        *,
        codec: str = "libx264",
        crf: int = 20,
        preset: str = "veryfast",
        threads: int = 0,
        crash_safe: bool = False,
        fragment_s: float = FRAGMENT_S,
        fmt: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.rate = frame_rate(fps)
        self.codec, self.crf, self.preset, self.threads = codec, crf, preset, threads
        self.fmt = fmt or container_format(self.path)
        self.options = crash_safe_options(self.fmt, fragment_s) if crash_safe else {}
        self.crash_safe = crash_safe
        self.frames = 0
        self._next_pts = 0  # in 1/rate units: the slot after the last frame written
        self._container: Any = None  # av.container.OutputContainer once the first frame arrived
        self._stream: Any = None

    @property
    def size(self) -> tuple[int, int] | None:
        """The stream's width and height once the first frame arrived."""
        return None if self._stream is None else (self._stream.width, self._stream.height)

    @property
    def duration_s(self) -> float:
        return self._next_pts / float(self.rate)

    def write(self, image: np.ndarray, slot: int | None = None) -> None:
        """Append a frame. `slot`: where it is shown, in frames of `rate` from the start (None = right
        after the previous one). A later slot leaves a gap the previous frame is held through; an
        earlier one (two frames in one slot) is moved to the next free slot."""
        import av

        if self._container is None:
            self._open(image.shape[1], image.shape[0])
        stream = self._stream
        bgr = np.ascontiguousarray(image[: stream.height, : stream.width, :3])
        frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
        frame.pts = self._next_pts if slot is None else max(slot, self._next_pts)
        self._container.mux(stream.encode(frame))
        self.frames += 1
        self._next_pts = frame.pts + 1

    def _open(self, width: int, height: int) -> None:
        import av

        container = av.open(str(self.path), mode="w", format=self.fmt, options=self.options)
        try:
            keyframes = max(1, round(KEYFRAME_S * float(self.rate))) if self.crash_safe else None
            self._stream = add_video_stream(
                container, width, height, self.rate, self.codec, self.crf, self.preset, self.threads, keyframes
            )
        except BaseException:
            container.close()
            raise
        self._container = container

    def close(self) -> WrittenVideo:
        """Flush the encoder's delayed frames and close the file (once; later calls do nothing)."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.mux(self._stream.encode(None))
            finally:
                container.close()
        return WrittenVideo(self.path, self.frames, round(self.duration_s, 3))


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float, codec: str = "libx264", crf: int = 20) -> int:
    """Encode `frames` (HxWx3 BGR uint8) to `path`; returns the number of frames written."""
    writer = VideoFileWriter(path, fps, codec=codec, crf=crf)
    try:
        for image in frames:
            writer.write(image)
    finally:
        writer.close()
    return writer.frames


class RemuxAbandoned(RuntimeError):
    """The remux was told to give up (shutdown limit); the source file is untouched."""


def remux_to_mp4(src: Path, dst: Path, give_up: threading.Event | None = None) -> int:
    """Copy the video packets of `src` (fragmented MP4/MOV or Matroska) into an ordinary MP4 at `dst`,
    its index written at the end as every editor expects. No re-encoding. The copy goes to a
    temporary file renamed into place, so `dst` (which may be `src` itself) is never half-written.
    Returns the packets copied. RemuxAbandoned when `give_up` is set meanwhile."""
    import av

    fd, name = tempfile.mkstemp(prefix=f".{dst.stem}.remux-", suffix=".mp4", dir=dst.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        count = 0
        with av.open(str(src)) as inp, av.open(str(tmp), mode="w", format="mp4") as out:
            if not inp.streams.video:
                raise ValueError(f"{src} has no video stream")
            in_stream = inp.streams.video[0]
            out_stream = out.add_stream_from_template(in_stream)
            undated = []  # Matroska gives the first packets of a B-frame stream no dts: set from the first one given
            last_dts = None
            for packet in inp.demux(in_stream):
                if give_up is not None and give_up.is_set():
                    raise RemuxAbandoned(f"remux of {src} stopped")
                if packet.size == 0:
                    continue  # the demuxer's end-of-stream packet
                if packet.dts is None:
                    if last_dts is None:
                        undated.append(packet)
                        continue
                    packet.dts = last_dts + (packet.duration or 1)
                for k, early in enumerate(undated):
                    early.dts = packet.dts - (len(undated) - k) * (packet.duration or 1)
                    early.stream = out_stream
                    out.mux(early)
                    count += 1
                undated.clear()
                last_dts = packet.dts
                packet.stream = out_stream
                out.mux(packet)
                count += 1
        publish(tmp, dst)
        return count
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = _umask()


def publish(temp: Path, final: Path) -> None:
    """Rename a complete temporary file into place with ordinary permissions (mkstemp makes 0600)."""
    os.chmod(temp, 0o666 & ~UMASK)
    os.replace(temp, final)  # atomic: same folder


def container_format(path: Path) -> str:
    """The container for a file name; given explicitly because temporary names (".x.partial.mp4",
    mkstemp names) must still get the final file's format."""
    return {".mov": "mov", ".mkv": "matroska", ".webm": "webm"}.get(path.suffix.lower(), "mp4")
