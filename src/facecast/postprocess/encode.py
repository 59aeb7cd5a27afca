"""Encode BGR frames at an exact frame rate, with the audio packets of another file copied in."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from facecast.types import Image


def encode_video(dst: Path, frames: Iterable[Image], rate: Fraction, audio_from: Path | None = None) -> int:
    """Write `frames` (HxWx3 BGR) to `dst` at `rate`; when `audio_from` has audio, its audio packets
    are copied in untouched (no re-encoding). Returns the frames written."""
    import av

    from facecast.media.video import add_video_stream, container_format

    source = av.open(str(audio_from)) if audio_from is not None else None
    count = 0
    try:
        audio_in = source.streams.audio[0] if source is not None and source.streams.audio else None
        with av.open(str(dst), mode="w", format=container_format(dst)) as out:
            video = None
            audio_out: Any = None
            for image in frames:
                if video is None:  # every stream before the first packet: the header goes out then
                    video = add_video_stream(out, image.shape[1], image.shape[0], rate, crf=18)
                    audio_out = out.add_stream_from_template(audio_in) if audio_in is not None else None
                bgr = np.ascontiguousarray(image[: video.height, : video.width, :3])
                frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
                frame.pts = count
                out.mux(video.encode(frame))
                count += 1
            if video is None:
                raise ValueError("no frames to write")
            out.mux(video.encode(None))
            if audio_in is not None and source is not None:
                for packet in source.demux(audio_in):
                    if packet.dts is None:
                        continue  # the demuxer's flush packet
                    packet.stream = audio_out
                    out.mux(packet)
    finally:
        if source is not None:
            source.close()
    return count
