"""A video brought to a higher frame rate by FFmpeg's motion-compensated interpolation.

    .venv/bin/python tools/interpolate_fps.py IN.mp4 OUT.mp4 [--fps 60]

For measurements that need a 60 fps performer when only 25-30 fps recordings are at hand (the
`tracking.max_fps` figures in docs/PERFORMANCE.md): FFmpeg's `minterpolate` filter (mci: motion
estimated both ways, overlapped blocks) through PyAV, encoded with x264 at CRF 16. The frames in
between are made by the filter, not filmed: their motion is the filter's estimate.
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import av


def interpolate(src: Path, dst: Path, fps: int) -> int:
    """Write `src` at `fps` to `dst`; returns the frames written."""
    written = 0
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        encoder = out.add_stream("libx264", rate=Fraction(fps))
        encoder.width, encoder.height, encoder.pix_fmt = (
            stream.codec_context.width,
            stream.codec_context.height,
            "yuv420p",
        )
        encoder.options = {"crf": "16", "preset": "veryfast"}
        graph = av.filter.Graph()
        source = graph.add_buffer(template=stream)
        motion = graph.add("minterpolate", f"fps={fps}:mi_mode=mci:mc_mode=aobmc:me_mode=bidir:vsbmc=1")
        sink = graph.add("buffersink")
        source.link_to(motion)
        motion.link_to(sink)
        graph.configure()

        def drain() -> None:
            nonlocal written
            while True:
                try:
                    frame = graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    return
                if not isinstance(frame, av.VideoFrame):  # a video graph: never audio
                    continue
                frame.pts = None  # the encoder numbers the frames at its own rate
                out.mux(encoder.encode(frame))
                written += 1

        for frame in inp.decode(stream):
            graph.push(frame)
            drain()
        graph.push(None)
        drain()
        out.mux(encoder.encode(None))
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--fps", type=int, default=60)
    args = ap.parse_args(argv)
    if not args.src.is_file():
        print(f"no such video: {args.src}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    frames = interpolate(args.src, args.dst, args.fps)
    print(f"{args.src} -> {args.dst}: {frames} frames at {args.fps} fps in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
