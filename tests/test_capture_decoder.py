"""`decoder_threads` for files and network streams: what FFmpeg is asked for, that one thread decodes
the same frames, and what each frame thread costs a live stream, counted with FFmpeg itself."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecast.capture.stream import StreamReader, UrlConfig
from facecast.capture.video_file import FileConfig, VideoFileReader
from facecast.config import ConfigError, load_config
from facecast.media.video import VideoFileWriter
from tests.stream_server import ClipServer, short_clip


def _clip(path: Path, width: int, height: int, frames: int, fps: float = 60) -> Path:
    rng = np.random.default_rng(3)
    writer = VideoFileWriter(path, fps)
    base = rng.integers(0, 256, (height, width, 3), np.uint8)
    for i in range(frames):
        writer.write(np.roll(base, 7 * i, axis=1))  # texture that moves: inter frames with real motion
    writer.close()
    return path


def _opencv_default_threads(path: Path) -> int:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        return int(cap.get(cv2.CAP_PROP_N_THREADS))
    finally:
        cap.release()


def test_auto_decodes_up_to_1080p60_with_one_thread_and_the_same_frames(tmp_path):
    clip = _clip(tmp_path / "small.mp4", 320, 240, 24)
    reader = VideoFileReader(FileConfig(path=clip, loop=False))
    reader.open()
    try:
        assert reader.decoder_threads == 1
        assert "1 decoding thread" in reader.describe()
        ours = []
        while (frame := reader.read()) is not None:
            ours.append(frame.image)
    finally:
        reader.close()
    cap = cv2.VideoCapture(str(clip), cv2.CAP_FFMPEG)  # OpenCV's own default threads
    theirs = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        theirs.append(image)
    cap.release()
    assert len(ours) == len(theirs) == 24
    assert all(np.array_equal(a, b) for a, b in zip(ours, theirs, strict=True))

    at_the_limit = VideoFileReader(FileConfig(path=_clip(tmp_path / "1080p60.mp4", 1920, 1080, 2)))
    at_the_limit.open()
    assert at_the_limit.decoder_threads == 1
    at_the_limit.close()


def test_auto_leaves_a_larger_video_to_opencvs_threads_and_a_number_is_used_as_given(tmp_path, caplog):
    large = _clip(tmp_path / "1440p60.mp4", 2560, 1440, 2)
    reader = VideoFileReader(FileConfig(path=large))
    with caplog.at_level(logging.INFO, logger="facecast.capture.decoder"):
        reader.open()
    assert reader.decoder_threads == _opencv_default_threads(large)
    assert "decoding 2560x1440 at 60 fps with OpenCV's default threads" in caplog.text
    reader.close()
    given = VideoFileReader(FileConfig(path=large, decoder_threads=3))
    given.open()
    assert given.decoder_threads == 3 and "3 decoding threads" in given.describe()
    given.close()


@pytest.mark.parametrize("value", ["0", "many", "1.5", "true"])
def test_a_bad_decoder_threads_names_the_key_and_the_allowed_values(value):
    for key in ("capture.file.decoder_threads", "capture.url.decoder_threads"):
        with pytest.raises(ConfigError) as info:
            load_config(None, [f"{key}={value}"])
        message = str(info.value)
        assert key in message and "auto" in message and "at least 1" in message


def _frames_before_the_stall(server: ClipServer, threads: int | str) -> tuple[int, int]:
    """(frames a reader gets while the stream is still sending, frames it gets in all): the server sends
    the whole clip at once and then nothing, as a camera that froze; OpenCV gives up on the read
    after `read_timeout_s` and then drains what the decoder still holds."""
    reader = StreamReader(
        UrlConfig(url=f"http://127.0.0.1:{server.port}/cam.mkv", read_timeout_s=1.0, decoder_threads=threads)
    )
    reader.open()
    try:
        assert reader.decoder_threads == (1 if threads == "auto" else threads)
        prompt = total = 0
        while True:
            t0 = time.monotonic()
            frame = reader.read()
            if frame is None:
                break
            total += 1
            if time.monotonic() - t0 < 0.5 and total == prompt + 1:  # no read timeout before it
                prompt += 1
            assert total < 100
    finally:
        reader.close()
    return prompt, total


def test_each_decoding_thread_beyond_the_first_holds_a_frame_of_a_live_stream_back(tmp_path):
    # A live stream's delay, counted: every frame has been sent; the frames the reader cannot have
    # until the stream sends more are frames the viewer sees late. FFmpeg's frame threading holds one
    # more back for each thread beyond the first (the clip's B-frames hold some back either way).
    server = ClipServer(short_clip(tmp_path, 10), hang=True)
    try:
        one, one_total = _frames_before_the_stall(server, "auto")
        four, four_total = _frames_before_the_stall(server, 4)
    finally:
        server.close()
    assert one_total == four_total == 10
    assert one - four == 3, f"frames read before the stall: {one} with one thread, {four} with four"
