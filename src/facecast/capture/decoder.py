"""How many threads FFmpeg decodes a video file or a network stream with (`decoder_threads`).

OpenCV's FFmpeg backend decodes with one thread per core by default (two here, many more on a
streamer's PC), and for H.264 and HEVC that means frame threading: each thread decodes a frame of its
own, so the decoder holds back one frame per thread beyond the first before it gives one out (FFmpeg's
doc/multithreading.txt; counted over a stream that stalls in tests/test_capture_decoder.py). For a
live stream each extra thread is a frame interval of delay. The threads also hand every frame to
each other: decoding alone on the 2-core development machine (8 rounds, medians) took 4.81 ms of CPU
per frame of the 720p60 bench clip with OpenCV's two threads and 4.52 ms with one, 10.11 and 9.13 ms
at 1080p (docs/PERFORMANCE.md has the whole pipeline's figures).

`auto` decodes with one thread while one thread keeps up: up to 1920x1080 at 60 fps (one thread
decodes the 1080p60 bench clip in 5.9 ms a frame here, of the 16.7 ms it has). A larger or faster
video is reopened with OpenCV's default. A number is used as given (1 = the least delay and CPU).
Cameras are not decoded through this: their backends (V4L2, Media Foundation, DirectShow) decode
their MJPEG themselves, frame by frame.
"""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import cv2
from pydantic import BeforeValidator, Field

log = logging.getLogger(__name__)

# The most pixels a second `auto` leaves to one decoding thread.
ONE_THREAD_MAX_PIXEL_RATE = 1920 * 1080 * 60


def _auto_or_threads(value: object) -> object:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return value
    raise ValueError("allowed: auto or a number of threads, at least 1")


# The config key's type (capture.file.decoder_threads, capture.url.decoder_threads).
DecoderThreads = Annotated[
    int | Literal["auto"],
    BeforeValidator(_auto_or_threads),
    Field(
        description="threads FFmpeg decodes with: auto = 1 up to 1920x1080 at 60 fps (the least delay and CPU), "
        "OpenCV's default (one per core) above; or a number, at least 1"
    ),
]


def open_ffmpeg(source: str, threads: DecoderThreads, params: list[int] | None = None) -> cv2.VideoCapture:
    """`source` opened with OpenCV's FFmpeg backend, decoding with `threads` (see the module's
    docstring). `params` are further VideoCapture open parameters (timeouts). The capture may not
    be open: the caller checks `isOpened()` and says what failed."""
    params = list(params or [])
    cap = cv2.VideoCapture(
        source, cv2.CAP_FFMPEG, [*params, cv2.CAP_PROP_N_THREADS, 1 if threads == "auto" else threads]
    )
    if threads == "auto" and cap.isOpened():
        width, height = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if 0 < fps <= 240 else 60.0
        if width * height * fps > ONE_THREAD_MAX_PIXEL_RATE:
            log.info(
                "decoding %dx%d at %.0f fps with OpenCV's default threads: more than one thread keeps up with",
                width,
                height,
                fps,
            )
            cap.release()
            cap = cv2.VideoCapture(source, cv2.CAP_FFMPEG, params)
    return cap


def decoding_threads(cap: cv2.VideoCapture) -> int:
    """The threads an open capture decodes with, as FFmpeg was asked for them (`FrameReader.decoder_threads`)."""
    return int(cap.get(cv2.CAP_PROP_N_THREADS))


def threads_note(threads: int) -> str:
    """', 1 decoding thread' for a source's description; '' before it is open."""
    return f", {threads} decoding thread{'' if threads == 1 else 's'}" if threads else ""
