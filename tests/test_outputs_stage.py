"""Each output on its own thread: slow, stuck or failing outputs never hold up the others or the
pipeline; paced outputs repeat at a steady rate; recordings get every frame, in order."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest

from facecast.outputs.base import Output, OutputUnavailable
from facecast.outputs.stage import OutputStage
from facecast.pipeline.stage import StartupError
from facecast.pipeline.stats import PipelineStats
from facecast.types import STAGE_NAMES, FramePacket


class Collecting(Output):
    """Records what it was given; optionally slow (a stalled receiver) or failing."""

    def __init__(
        self,
        name: str,
        delivery: str = "paced",
        fps: float = 0.0,
        delay_s: float = 0.0,
        fail_on: set[int] | None = None,
    ) -> None:
        super().__init__(name)
        self.delivery = delivery  # type: ignore[assignment]
        self.fps = fps
        self.delay_s = delay_s
        self.fail_on = fail_on or set()
        self.seqs: list[int] = []
        self.times: list[float] = []
        self.opens = 0
        self.closes = 0
        self.thread_names: set[str] = set()

    def open(self) -> None:
        self.opens += 1
        self.thread_names.add(threading.current_thread().name)

    def write(self, packet: FramePacket) -> None:
        self.thread_names.add(threading.current_thread().name)
        if self.delay_s:
            time.sleep(self.delay_s)
        if packet.seq in self.fail_on:
            self.fail_on.discard(packet.seq)
            raise OSError(f"device went away at frame {packet.seq}")
        self.seqs.append(packet.seq)
        self.times.append(time.perf_counter())

    def close(self) -> None:
        self.closes += 1


def packet(seq: int) -> FramePacket:
    return FramePacket(seq=seq, image=np.zeros((8, 8, 3), np.uint8), t_capture_ns=time.perf_counter_ns())


def feed(stage: OutputStage, count: int, rate_hz: float, start: int = 0) -> list[float]:
    """Push `count` frames at `rate_hz` through process(); returns how long each call took."""
    durations = []
    next_t = time.perf_counter()
    for seq in range(start, start + count):
        t0 = time.perf_counter()
        assert stage.process(packet(seq)).seq == seq
        durations.append(time.perf_counter() - t0)
        next_t += 1.0 / rate_hz
        time.sleep(max(0.0, next_t - time.perf_counter()))
    return durations


def non_decreasing(seqs: list[int]) -> bool:
    return all(a <= b for a, b in itertools.pairwise(seqs))


@pytest.fixture
def stats() -> PipelineStats:
    return PipelineStats(STAGE_NAMES)


def test_a_slow_output_stalls_neither_the_pipeline_nor_the_other_outputs(stats):
    slow = Collecting("slow", delivery="paced", fps=60, delay_s=0.25)  # a receiver that blocks 250 ms
    fast = Collecting("fast", delivery="paced", fps=50)
    record = Collecting("rec", delivery="every")
    stage = OutputStage({}, stats, outputs={"slow": slow, "fast": fast, "rec": record})
    stage.start()
    try:
        durations = feed(stage, 60, rate_hz=60)  # one second of frames
        time.sleep(0.3)
    finally:
        stage.close()
    assert max(durations) < 0.05  # handing a frame over never waits for an output
    assert len(slow.seqs) <= 7  # the slow one got what it could
    # The fast paced output kept its rate: ~50 sends over the ~1.3 s it ran.
    span = fast.times[-1] - fast.times[0]
    assert 40 <= len(fast.seqs) <= 75 and abs((len(fast.seqs) - 1) / span - 50) < 8
    assert record.seqs == list(range(60))  # the recording got every frame once, in order
    assert {"output.slow", "output.fast", "output.rec"} == slow.thread_names | fast.thread_names | record.thread_names


def test_paced_output_repeats_the_last_frame_at_its_rate_and_never_goes_back(stats):
    out = Collecting("ndi-like", delivery="paced", fps=50)
    stage = OutputStage({}, stats, outputs={"o": out})
    stage.start()
    try:
        feed(stage, 20, rate_hz=20)  # the pipeline is slower than the output: 20 fps in, 50 out
        time.sleep(0.2)  # no new frame at all: the last one keeps going out
        running = stats.snapshot()["outputs"]["o"]
        worker = stage.workers["o"]
    finally:
        stage.close()
    # The counts once it has stopped: a snapshot taken while it runs may miss the send under way.
    snap = worker.snapshot()
    assert non_decreasing(out.seqs)
    assert set(out.seqs) >= set(range(0, 20, 2))  # most frames made it (at 20 in / 50 out, all should)
    assert out.seqs[-3:] == [19, 19, 19]
    repeats = len(out.seqs) - len(set(out.seqs))
    assert repeats >= 25  # ~1.2 s at 50 fps = ~60 sends for 20 frames
    assert snap["repeated"] == repeats and snap["new"] == len(set(out.seqs))
    assert running["target_fps"] == 50 and running["state"] == "running"
    gaps = np.diff(out.times)
    assert np.median(gaps) == pytest.approx(0.02, abs=0.004)


def test_paced_output_skips_frames_it_cannot_send_newest_first(stats):
    out = Collecting("o", delivery="paced", fps=20)
    stage = OutputStage({}, stats, outputs={"o": out})
    stage.start()
    try:
        feed(stage, 60, rate_hz=100)  # 100 fps in, 20 out
        time.sleep(0.1)
        dropped = stats.snapshot()["outputs"]["o"]["dropped"]
    finally:
        stage.close()
    fresh = sorted(set(out.seqs))
    assert non_decreasing(out.seqs)
    assert len(fresh) < 30 and fresh[-1] == 59  # the newest frame wins
    assert dropped >= 60 - len(fresh) - 1


def test_failing_output_is_counted_reopened_and_the_others_go_on(stats):
    flaky = Collecting("flaky", delivery="every", fail_on={5})
    steady = Collecting("steady", delivery="paced", fps=50)
    stage = OutputStage({}, stats, outputs={"flaky": flaky, "steady": steady})
    stage.start()
    try:
        feed(stage, 30, rate_hz=30)  # the failure at frame 5 closes flaky for 0.5 s
        deadline = time.monotonic() + 3
        while flaky.opens < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        feed(stage, 10, rate_hz=30, start=30)
        time.sleep(0.1)
        snap = stats.snapshot()
    finally:
        stage.close()
    assert stats.errors["output.flaky"] == 1
    assert snap["outputs"]["flaky"]["reopens"] == 1 and flaky.opens == 2 and flaky.closes == 2
    assert flaky.seqs[:5] == [0, 1, 2, 3, 4] and flaky.seqs[-10:] == list(range(30, 40))
    assert snap["outputs"]["flaky"]["dropped"] > 0  # what came in while it was down
    assert 5 not in flaky.seqs
    assert steady.seqs[-1] == 39 and len(steady.seqs) > 50  # never interrupted


def test_lossless_source_makes_a_recording_wait_instead_of_dropping(stats):
    record = Collecting("rec", delivery="every", delay_s=0.002)
    stage = OutputStage({}, stats, lossless=True, outputs={"rec": record})
    stage.start()
    try:
        for seq in range(100):  # as fast as possible: far more than the 32-frame queue
            stage.process(packet(seq))
    finally:
        stage.close()  # drains what is queued before closing
    assert record.seqs == list(range(100))
    assert record.closes == 1


def test_an_unpaced_synthetic_driver_is_a_lossless_source_like_a_file(stats):
    """Rendered as fast as the pipeline takes frames (`capture.synthetic.realtime: false`, how the
    benchmark clips are made), the synthetic driver has no clock to keep up with: a recording of it
    must keep every frame, as one of a file does. Paced, it is live and a recorder must not hold it.
    Wired as the daemon wires it: the capture stage's `lossless` goes to the output stage."""
    from facecast.capture.stage import CaptureConfig, CaptureStage, make_reader
    from facecast.capture.synthetic import SyntheticConfig

    def capture(realtime: bool) -> CaptureStage:
        return CaptureStage(
            make_reader(CaptureConfig(source="synthetic", synthetic=SyntheticConfig(realtime=realtime)))
        )

    assert not capture(realtime=True).lossless
    record = Collecting("rec", delivery="every", delay_s=0.002)
    stage = OutputStage({}, stats, lossless=capture(realtime=False).lossless, outputs={"rec": record})
    stage.start()
    try:
        for seq in range(100):  # as fast as possible: far more than the 32-frame queue
            stage.process(packet(seq))
    finally:
        stage.close()
    assert record.seqs == list(range(100))


def test_a_stuck_output_is_reported_by_the_watchdog(stats, caplog):
    stuck = Collecting("stuck", delivery="latest", delay_s=0.6)
    stage = OutputStage({}, stats, watchdog_s=0.3, outputs={"stuck": stuck})
    stage.start()
    try:
        feed(stage, 25, rate_hz=50)
    finally:
        stage.close()
    assert stats.stuck["output.stuck"] >= 1
    assert "stuck in one write" in caplog.text


class Broken(Output):
    def open(self) -> None:
        raise RuntimeError("needs a thing: pip install thing")

    def write(self, packet: FramePacket) -> None:  # pragma: no cover - never opened
        raise AssertionError


class Missing(Output):
    def open(self) -> None:
        raise OutputUnavailable("no display")

    def write(self, packet: FramePacket) -> None:  # pragma: no cover
        raise AssertionError


def test_startup_error_names_the_output_and_stops_the_others(stats):
    ok = Collecting("ok", delivery="latest")
    stage = OutputStage({}, stats, outputs={"ok": ok, "bad": Broken("bad")})
    with pytest.raises(StartupError, match=r"output bad .*cannot start: needs a thing: pip install thing"):
        stage.start()
    assert ok.closes == 1


def test_unavailable_output_is_skipped(stats, caplog):
    ok = Collecting("ok", delivery="latest")
    stage = OutputStage({}, stats, outputs={"ok": ok, "gone": Missing("gone")})
    stage.start()
    try:
        assert list(stage.outputs) == ["ok"]
        assert "output gone" in caplog.text and "skipped: no display" in caplog.text
    finally:
        stage.close()


def test_a_recording_that_falls_behind_a_live_source_drops_the_oldest_and_says_so(stats, caplog):
    record = Collecting("rec", delivery="every", delay_s=0.02)  # 50 fps at best
    stage = OutputStage({}, stats, outputs={"rec": record})  # live source: never wait for it
    stage.start()
    try:
        durations = feed(stage, 80, rate_hz=400)
        snap = stats.snapshot()["outputs"]["rec"]
    finally:
        stage.close()
    assert max(durations) < 0.05
    assert snap["dropped"] > 0 and "output rec cannot keep up" in caplog.text
    assert record.seqs == sorted(record.seqs) and record.seqs[-1] == 79  # in order, the newest kept
