"""A live show loses nothing: recordings that survive SIGKILL, a shutdown that waits for every writer
(bounded, and says so when the bound is hit), `quit` saying what it finalised, capture sources that
back off and time out, credentials kept out of the logs.

Everything runs the real `facecast` process or the real stages; the recordings are checked with
PyAV (FFmpeg's decoder), the network sources with OpenCV's FFmpeg backend against local servers.
About a minute in all on two cores (60-100 s under load), most of it daemon start-ups.
"""

from __future__ import annotations

import itertools
import json
import logging
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from facecast.capture.stage import CaptureStage
from facecast.capture.stream import StreamReader, UrlConfig, redact_url
from facecast.media.video import VideoFileWriter
from facecast.outputs.base import Output
from facecast.outputs.stage import OutputStage
from facecast.types import FramePacket
from tests.conftest import REPO, facecast_env, free_port, popen_facecast
from tests.stream_server import ClipServer, short_clip

FPS = 30


def live_args(port: int, *outputs: tuple[str, Path]) -> list[str]:
    """`facecast run` on the synthetic driver at 30 fps with record outputs `name -> path`."""
    args = [
        "run",
        "--set",
        "capture.source=synthetic",
        "--set",
        "capture.width=320",
        "--set",
        "capture.height=240",
        "--set",
        f"capture.fps={FPS}",
        "--set",
        "tracking.enabled=false",
        "--set",
        "effect.active=passthrough",
        "--set",
        "outputs.preview.enabled=false",
        "--set",
        "stats.interval_s=0",
        "--set",
        f"control.port={port}",
    ]
    # timing: frames — these tests count frames one after another; a loaded machine dropping frames
    # would otherwise leave (correct) gaps at their capture times.
    for name, path in outputs:
        args += ["--set", f'outputs.{name}={{type: record, enabled: true, timing: frames, path: "{path}"}}']
    return args


def stats(port: int) -> dict | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=2, trust_env=False)
        return response.json() if response.status_code == 200 else None
    except httpx.HTTPError:
        return None


def wait_recording(
    proc: subprocess.Popen, port: int, name: str = "record", frames: int = 1, timeout: float = 90
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"facecast run exited early:\n{proc.stdout.read()}")
        snap = stats(port)
        if snap and snap.get("outputs", {}).get(name, {}).get("sent", 0) >= frames:
            return
        time.sleep(0.1)
    raise AssertionError(f"output {name} never wrote {frames} frames")


def decoded(path: Path) -> tuple[int, list[float]]:
    """Frames a real decoder gets out of `path`, and their times (s)."""
    import av

    with av.open(str(path)) as container:
        times = [float(f.time) for f in container.decode(video=0)]
    return len(times), times


def top_level_boxes(path: Path) -> list[str]:
    boxes = []
    with path.open("rb") as f:
        while header := f.read(8):
            if len(header) < 8:
                break
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", f.read(8))[0] - 8
            if size < 8:
                break
            f.seek(size - 8, 1)
            boxes.append(kind.decode("latin-1"))
    return boxes


# -- recordings -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_recording_killed_with_sigkill_plays_up_to_a_second_before_the_kill(tmp_path, suffix):
    path = tmp_path / f"rec{suffix}"
    port = free_port()
    proc = popen_facecast(*live_args(port, ("record", path)))
    try:
        wait_recording(proc, port, frames=15)
        samples: list[tuple[float, int]] = []  # (monotonic time, frames the recorder had written)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            snap = stats(port)
            if snap:
                samples.append((time.monotonic(), snap["outputs"]["record"]["sent"]))
            time.sleep(0.05)
        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.stdout.close()
    written_a_second_before = max(sent for t, sent in samples if t <= killed_at - 1.0)
    written_at_kill = samples[-1][1]
    frames, times = decoded(path)
    # Frames at a constant rate with no gap, from the first: frame i at i / fps after it.
    gapless = next((i for i, t in enumerate(times) if abs(t - times[0] - i / FPS) > 0.002), frames)
    assert gapless >= written_a_second_before, (gapless, frames, written_a_second_before, written_at_kill)
    assert frames <= written_at_kill  # nothing invented: at most what the recorder was given
    # Only the very end may have a hole: the last B-frames (x264 puts up to 3 between P-frames) that
    # were still in the encoder at the kill are missing, the P-frame shown after them is there.
    assert frames - gapless <= 4, times[gapless - 1 :]
    if suffix == ".mp4":
        assert "moof" in top_level_boxes(path)  # fragmented: each fragment stands on its own


def test_quit_waits_for_every_recording_remuxes_them_to_plain_mp4_and_names_them(tmp_path):
    mp4, mkv = tmp_path / "show.mp4", tmp_path / "show2.mkv"
    port = free_port()
    proc = popen_facecast(*live_args(port, ("record", mp4), ("backup", mkv)))
    try:
        wait_recording(proc, port, "record", frames=45)
        wait_recording(proc, port, "backup", frames=45)
        response = httpx.post(f"http://127.0.0.1:{port}/actions/quit", timeout=60, trust_env=False)
        rc = proc.wait(30)
    finally:
        proc.kill()
    log = proc.stdout.read()
    assert response.status_code == 200, response.text
    message = response.json()["message"]
    assert rc == 0, log
    remuxed = mkv.with_suffix(".mp4")
    assert not mkv.exists()  # removed once its MP4 was complete
    for path in (mp4, remuxed):
        assert f"finalised {path} (" in message and "remuxed to MP4" in message, message
        frames = int(message.split(f"finalised {path} (")[1].split(" frames")[0].split(", ")[-1])
        boxes = top_level_boxes(path)
        assert "moov" in boxes and "moof" not in boxes, boxes  # an ordinary MP4: one index, no fragments
        import av

        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.frames == frames  # the index counts every frame the report names
            assert float(stream.duration * stream.time_base) == pytest.approx(frames / FPS, abs=1.5 / FPS)
        assert decoded(path)[0] == frames
    assert "stopped in" in log and f"finalised {mp4} (" in log  # the same report in the daemon's log


SLOW_CLOSE = textwrap.dedent("""
    import sys, time
    from facecast.media import video

    real_close = video.VideoFileWriter.close

    def slow_close(self):  # an encoder flush that takes a long time, as a huge one does
        time.sleep(float(sys.argv[1]))
        return real_close(self)

    video.VideoFileWriter.close = slow_close
    from facecast.cli import main
    raise SystemExit(main(sys.argv[2:]))
""")


def run_with_slow_flush(flush_s: float, *args: str) -> tuple[int, str, float]:
    t0 = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", SLOW_CLOSE, str(flush_s), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=facecast_env(),
    )
    return result.returncode, result.stdout + result.stderr, time.monotonic() - t0


def test_a_flush_past_the_limit_is_named_and_the_process_still_exits(tmp_path):
    # 60 s of flushing, a 1 s limit: the output is named, the process exits anyway and soon.
    # (A flush within the limit is waited for: test_the_output_stage_waits_..., and quit above.)
    path = tmp_path / "stuck.mp4"
    rc, log, took = run_with_slow_flush(
        60.0, *live_args(free_port(), ("record", path)), "--seconds", "1.5", "--set", "pipeline.shutdown_timeout_s=1"
    )
    assert rc == 1, log
    assert "output record did not finish closing within 1 s (pipeline.shutdown_timeout_s): closing " + str(path) in log
    assert "did not finish in time" in log  # the final report says so too
    assert "exiting without waiting for output.record" in log
    assert took < 45, f"took {took:.0f} s"  # start-up + 1.5 s + the 1 s limit, not the 60 s flush
    assert decoded(path)[0] > 10  # and what was recorded plays (crash-safe file, up to its last fragment)


class SlowClosing(Output):
    """Writes a marker file when its (slow) close is done."""

    delivery = "every"

    def __init__(self, name: str, marker: Path, close_s: float) -> None:
        super().__init__(name)
        self.marker, self.close_s = marker, close_s

    def write(self, packet: FramePacket) -> None:
        pass

    def close(self) -> None:
        time.sleep(self.close_s)
        self.marker.write_text("closed")


def test_the_interpreter_waits_for_an_output_thread_it_was_not_told_to_stop(tmp_path):
    marker = tmp_path / "closed.txt"
    script = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout)
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from facecast.outputs.worker import OutputWorker
        from tests.test_reliability_record import SlowClosing
        worker = OutputWorker(SlowClosing("rec", Path({str(marker)!r}), 1.0))
        worker.start()
        worker.ready.wait(5)
        # the main thread ends here without stopping the worker: a daemon thread would die mid-close
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO, env=facecast_env()
    )
    assert result.returncode == 0, result.stderr
    assert marker.read_text() == "closed"
    assert "output rec: the program is exiting without stopping it; closing it now" in result.stdout


def test_the_output_stage_waits_past_the_old_join_time_and_reports(tmp_path, caplog):
    waited, stuck = tmp_path / "waited.txt", tmp_path / "stuck.txt"
    # 2.2 s of closing: more than the 1.5 s per output the stage used to wait, within the limit
    stage = OutputStage({}, outputs={"slow": SlowClosing("slow", waited, 2.2)}, close_timeout_s=10)
    stage.start()
    t0 = time.monotonic()
    stage.close()
    assert time.monotonic() - t0 >= 2.2 and waited.read_text() == "closed"
    assert [(r.name, r.finished) for r in stage.report] == [("slow", True)]

    stage = OutputStage({}, outputs={"stuck": SlowClosing("stuck", stuck, 2.5)}, close_timeout_s=0.5)
    stage.start()
    t0 = time.monotonic()
    with caplog.at_level(logging.ERROR):
        stage.close()
    assert time.monotonic() - t0 < 5.0  # the 0.5 s limit and a 1 s grace, not the 2.5 s close
    assert "output stuck did not finish closing within 0.5 s (pipeline.shutdown_timeout_s): closing" in caplog.text
    [report] = stage.report
    assert not report.finished and "did not finish in time: closing" in report.describe()
    [worker] = [w for w in threading.enumerate() if w.name == "output.stuck"]
    worker.join(5)  # it still closes (not a daemon thread): the file is complete afterwards
    assert stuck.read_text() == "closed"


def test_render_and_jobs_files_stay_ordinary_mp4(tmp_path):
    """The shared writer's crash-safe mode is for recordings only: render/jobs files keep one index."""
    path = tmp_path / "clip.mp4"
    writer = VideoFileWriter(path, FPS)
    for i in range(12):
        writer.write(np.full((64, 96, 3), i * 20, np.uint8))
    written = writer.close()
    assert written.frames == 12 and "moof" not in top_level_boxes(path) and decoded(path)[0] == 12


# -- capture sources -------------------------------------------------------------------------------


def test_a_frozen_stream_read_gives_up_after_read_timeout(tmp_path):
    server = ClipServer(short_clip(tmp_path), hang=True)  # the whole clip at once, then silence
    reader = StreamReader(UrlConfig(url=f"http://127.0.0.1:{server.port}/cam.mkv", read_timeout_s=1.0))
    try:
        reader.open()
        t0 = time.monotonic()
        frames = 0
        while reader.read() is not None:
            frames += 1
            assert frames < 100
        waited = time.monotonic() - t0
    finally:
        reader.close()
        server.close()
    assert frames >= 5
    # Every byte was there at once: the time spent is the read timeout, not a hang.
    assert 0.8 <= waited <= 10.0, f"reading until the stream was given up took {waited:.1f} s"


def test_a_stream_that_keeps_dropping_is_reopened_with_growing_waits(tmp_path, caplog):
    server = ClipServer(short_clip(tmp_path, 3), hang=False)  # 3 frames, then the connection closes
    capture = CaptureStage(StreamReader(UrlConfig(url=f"http://127.0.0.1:{server.port}/cam.mkv")))
    capture.start()
    stop = threading.Thread(target=lambda: (time.sleep(5.0), capture.interrupt()), daemon=True)
    stop.start()
    produced = 0
    with caplog.at_level(logging.WARNING):
        while capture.produce() is not None:
            produced += 1
    capture.close()
    server.close()
    opens = server.connections
    gaps = [b - a for a, b in itertools.pairwise(opens)]
    # Without back-off: a reopen every few ms for 5 s. With it: waits of 0.5, 1, 2 s... between opens.
    assert 2 <= len(opens) <= 5, gaps
    assert all(later > earlier for earlier, later in itertools.pairwise(gaps[1:])), gaps
    assert produced >= 3 * (len(opens) - 1)
    assert "failed again soon after the last reopen" in caplog.text


def test_stream_credentials_never_reach_the_log_and_opening_is_bounded():
    silent = socket.socket()  # accepts connections and never answers: a camera that hangs
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"rtsp://admin:hunter2@127.0.0.1:{silent.getsockname()[1]}/live?token=s3cr3t"
    t0 = time.monotonic()
    try:
        proc = popen_facecast(
            "run",
            "--set",
            "capture.source=url",
            "--set",
            f"capture.url.url={json.dumps(url)}",
            "--set",
            "capture.url.open_timeout_s=1",
            "--set",
            "outputs.preview.enabled=false",
        )
        log = proc.communicate(timeout=90)[0]
    finally:
        silent.close()
    assert proc.returncode == 3, log
    assert time.monotonic() - t0 < 60
    assert "hunter2" not in log and "s3cr3t" not in log and "admin" not in log, log
    assert f"stream rtsp://***@127.0.0.1:{url.split(':')[3].split('/')[0]}/live?token=*** did not open" in log, log


def test_redact_url():
    assert (
        redact_url("rtsp://user:pa:ss@cam.local:554/s?x=1&password=p&y=2")
        == "rtsp://***@cam.local:554/s?x=1&password=***&y=2"
    )
    assert (
        redact_url("error opening srt://u@host:9000 and http://h/x")
        == "error opening srt://***@host:9000 and http://h/x"
    )
    assert redact_url("rtsp://cam.local/stream") == "rtsp://cam.local/stream"


def test_a_source_that_keeps_raising_is_retried_with_growing_waits():
    from facecast.pipeline.runner import Pipeline
    from facecast.pipeline.stage import SourceStage, Stage
    from facecast.pipeline.stats import PipelineStats

    class Broken(SourceStage):  # a driver that raises on every read
        calls = 0

        def produce(self):
            Broken.calls += 1
            raise RuntimeError("driver error")

    class Sink(Stage):
        name = "output"

        def process(self, packet):
            return packet

    stats = PipelineStats(["capture", "output"])
    pipeline = Pipeline(Broken(), [Sink()], stats, status_interval_s=0)
    pipeline.start()
    time.sleep(1.6)
    pipeline.stop()
    # Without back-off: tens of thousands of calls (and error lines). With it: 0.05, 0.1, 0.2, 0.4, 0.8 s.
    assert 3 <= Broken.calls <= 7, Broken.calls
    assert stats.errors["capture"] == Broken.calls


def _recorded(tmp_path: Path, lossless: bool, timing: str) -> tuple[int, list[float]]:
    """30 frames captured 2/60 s apart (a pipeline keeping only every second frame of a 60 fps camera)."""
    from facecast.outputs.record import RecordOutput, RecordOutputConfig

    out = RecordOutput("record", RecordOutputConfig(path=str(tmp_path / f"t-{lossless}-{timing}.mkv"), timing=timing))
    out.source_lossless = lossless
    out.open()
    image = np.zeros((64, 64, 3), np.uint8)
    for i in range(30):
        image[:] = i * 8
        out.write(FramePacket(seq=i, image=image.copy(), t_capture_ns=10**9 + i * 2 * 10**9 // 60, source_fps=60.0))
    out.close()
    return decoded(out.written()[0].path)


def test_a_live_recording_plays_at_real_speed_when_frames_were_dropped(tmp_path):
    # Live source: frames sit at their capture times, so half a second of show lasts half a second.
    frames, times = _recorded(tmp_path, lossless=False, timing="auto")
    assert frames == 30
    assert times[0] == pytest.approx(0.0, abs=1e-3)
    assert times[-1] == pytest.approx(29 * 2 / 60, abs=1 / 60 + 1e-3)
    assert np.allclose(np.diff(times), 2 / 60, atol=1 / 60 + 1e-3)
    # A file source: every frame arrives, one after another at the file's rate.
    frames, times = _recorded(tmp_path, lossless=True, timing="auto")
    assert frames == 30 and times[-1] == pytest.approx(29 / 60, abs=1e-3)
    frames, times = _recorded(tmp_path, lossless=False, timing="frames")
    assert times[-1] == pytest.approx(29 / 60, abs=1e-3)
