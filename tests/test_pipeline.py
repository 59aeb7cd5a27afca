"""The runner with real stages and real threads: errors, stuck stages, ordering, shutdown, reopen."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from facecast.capture.reader import CapturedFrame, FrameReader
from facecast.capture.stage import CaptureStage, ReconnectConfig
from facecast.pipeline.runner import Pipeline
from facecast.pipeline.stage import Stage
from facecast.pipeline.stats import PipelineStats
from facecast.types import FramePacket

IMAGE = np.zeros((8, 8, 3), np.uint8)


class CountingReader(FrameReader):
    """A source of `n` tiny frames at `fps` (paced by the capture stage like a file or synthetic)."""

    def __init__(self, n: int, fps: float = 200.0, lossless: bool = False) -> None:
        self.n, self.fps, self.lossless, self.i = n, fps, lossless, 0

    def open(self) -> None: ...

    def read(self) -> CapturedFrame | None:
        if self.i >= self.n:
            return None
        self.i += 1
        return CapturedFrame(IMAGE)

    def describe(self) -> str:
        return "counting"


class FlakyCamera(FrameReader):
    """A camera that drops after 5 frames and refuses the first reopen, like a USB cable pulled and replugged."""

    live = True
    self_paced = False
    fps = 200.0

    def __init__(self) -> None:
        self.frames = 0
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens == 2:
            raise OSError("device busy")

    def read(self) -> CapturedFrame | None:
        self.frames += 1
        return None if self.frames == 6 else CapturedFrame(IMAGE)

    def describe(self) -> str:
        return "flaky camera"


class Collect(Stage):
    name = "output"

    def __init__(self, delay: float = 0.0) -> None:
        self.seqs: list[int] = []
        self.delay = delay

    def process(self, packet: FramePacket) -> FramePacket:
        time.sleep(self.delay)
        self.seqs.append(packet.seq)
        return packet


class FailOn(Stage):
    name = "effect"

    def __init__(self, bad_seq: int) -> None:
        self.bad_seq = bad_seq

    def process(self, packet: FramePacket) -> FramePacket:
        if packet.seq == self.bad_seq:
            raise RuntimeError("broken frame")
        return packet


class SlowOnce(Stage):
    name = "effect"

    def __init__(self, seq: int, seconds: float) -> None:
        self.seq, self.seconds = seq, seconds

    def process(self, packet: FramePacket) -> FramePacket:
        if packet.seq == self.seq:
            time.sleep(self.seconds)
        return packet


def _pipeline(reader: FrameReader, *stages: Stage, **kw) -> tuple[Pipeline, PipelineStats]:
    stats = PipelineStats(["capture", *(s.name for s in stages)])
    kw.setdefault("status_interval_s", 0)
    return Pipeline(CaptureStage(reader, ReconnectConfig(first_delay_s=0.05)), list(stages), stats, **kw), stats


def test_a_stage_that_raises_on_one_frame_is_counted_and_the_stream_goes_on(caplog):
    out = Collect()
    pipeline, stats = _pipeline(CountingReader(20, lossless=True), FailOn(7), out)
    pipeline.start()
    assert pipeline.wait(10)
    pipeline.stop()
    assert stats.errors["effect"] == 1
    assert out.seqs == [i for i in range(20) if i != 7]
    assert "broken frame" in caplog.text


def test_a_stuck_stage_is_reported(caplog):
    caplog.set_level(logging.INFO)
    out = Collect()
    pipeline, stats = _pipeline(CountingReader(10, lossless=True), SlowOnce(3, 0.8), out, watchdog_s=0.3)
    pipeline.start()
    assert pipeline.wait(10)
    pipeline.stop()
    assert stats.stuck["effect"] == 1
    assert "effect has been stuck" in caplog.text
    assert len(out.seqs) == 10


def test_slow_consumer_drops_oldest_and_never_reorders():
    out = Collect(delay=0.02)
    pipeline, stats = _pipeline(CountingReader(150, fps=400), out, queue_capacity=1)
    pipeline.start()
    pipeline.wait(15)
    pipeline.stop()
    assert out.seqs == sorted(out.seqs) and len(set(out.seqs)) == len(out.seqs)
    dropped = stats.dropped()["capture->output"]
    assert dropped > 0 and len(out.seqs) + dropped <= 150
    assert out.seqs[-1] >= 140  # the newest frames got through: latency stayed shallow


def test_lossless_source_delivers_every_frame_through_a_slow_stage():
    out = Collect(delay=0.005)
    pipeline, stats = _pipeline(CountingReader(60, fps=1000, lossless=True), out, queue_capacity=1)
    pipeline.start()
    assert pipeline.wait(15)
    pipeline.stop()
    assert out.seqs == list(range(60)) and sum(stats.dropped().values()) == 0


def test_frame_limit_and_latency_bookkeeping():
    out = Collect()
    pipeline, stats = _pipeline(CountingReader(1000), FailOn(-1), out, max_frames=25)
    pipeline.start()
    assert pipeline.wait(10)
    pipeline.stop()
    snap = stats.snapshot()
    assert snap["frames"] == 25 == len(out.seqs)
    assert snap["latency_ms"]["p50"] >= snap["stages"]["output"]["p50"]


def test_stop_ends_every_thread_within_two_seconds_even_mid_stream():
    pipeline, _ = _pipeline(CountingReader(10**9, fps=60), Collect(delay=0.01))
    pipeline.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert pipeline.stop(timeout=2.0)
    assert time.monotonic() - t0 < 2.0
    assert not [t for t in threading.enumerate() if t.name in ("capture", "output")]


def test_a_camera_that_drops_is_reopened_with_back_off(caplog):
    caplog.set_level(logging.INFO)
    camera = FlakyCamera()
    out = Collect()
    pipeline, _stats = _pipeline(camera, out, max_frames=20)
    capture = pipeline.source
    pipeline.start()
    assert pipeline.wait(10), "the stream must go on after the camera comes back"
    pipeline.stop()
    assert capture.reconnects == 1 and camera.opens == 3  # initial, refused retry, successful retry
    assert "reopen failed (device busy)" in caplog.text and "is back" in caplog.text
    assert out.seqs == sorted(out.seqs) and len(out.seqs) == 20
