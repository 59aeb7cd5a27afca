"""The NDI output, received the way OBS receives it: the NDI finder on loopback and a BGRA receiver."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

ndi = pytest.importorskip("NDIlib", reason="ndi-python is not installed (pip install ndi-python)")

from facecast.outputs.ndi import NdiOutput, NdiOutputConfig, frame_rate_fields  # noqa: E402
from facecast.outputs.scaling import fit_into  # noqa: E402
from facecast.types import FramePacket  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FACECAST = Path(sys.executable).with_name("facecast")


class Receiver:
    """An NDI receiver like OBS's NDI source: finds a sender by name on loopback, receives BGRA."""

    def __init__(self, sender_name: str, timeout_s: float = 20.0) -> None:
        assert ndi.initialize()
        settings = ndi.FindCreate()
        settings.extra_ips = "127.0.0.1"  # multicast discovery does not work in a sandbox
        self._find = ndi.find_create_v2(settings)
        self.source = None
        deadline = time.monotonic() + timeout_s
        while self.source is None and time.monotonic() < deadline:
            ndi.find_wait_for_sources(self._find, 500)
            for source in ndi.find_get_current_sources(self._find):
                if source.ndi_name.endswith(f"({sender_name})"):
                    self.source = source
        assert self.source is not None, f"no NDI source named ({sender_name}) appeared within {timeout_s} s"
        self.ndi_name = self.source.ndi_name
        recv_settings = ndi.RecvCreateV3()
        recv_settings.color_format = ndi.RECV_COLOR_FORMAT_BGRX_BGRA
        recv_settings.bandwidth = ndi.RECV_BANDWIDTH_HIGHEST
        self._recv = ndi.recv_create_v3(recv_settings)
        assert self._recv is not None
        ndi.recv_connect(self._recv, self.source)

    def frame(self, timeout_ms: int = 1000):
        """The next video frame: (BGRA copy, FourCC, (rate N, rate D)), or None."""
        deadline = time.monotonic() + timeout_ms / 1000
        while time.monotonic() < deadline:
            kind, video, _audio, _meta = ndi.recv_capture_v2(self._recv, 100)
            if kind == ndi.FRAME_TYPE_VIDEO:
                try:
                    return video.data.copy(), video.FourCC, (video.frame_rate_N, video.frame_rate_D)
                finally:
                    ndi.recv_free_video_v2(self._recv, video)
        return None

    def count_for(self, seconds: float) -> tuple[int, float]:
        """Frames received in `seconds` (after the first one), and the measured span."""
        assert self.frame(3000) is not None
        first = time.perf_counter()
        n = 0
        while time.perf_counter() - first < seconds:
            if self.frame(200) is not None:
                n += 1
                last = time.perf_counter()
        return n, last - first

    def close(self) -> None:
        ndi.recv_destroy(self._recv)
        ndi.find_destroy(self._find)


def unique_name() -> str:
    return f"facecast-test-{uuid.uuid4().hex[:8]}"


def test_frame_rate_fields():
    assert frame_rate_fields(60) == (60000, 1000)
    assert frame_rate_fields(59.94) == (60000, 1001)
    assert frame_rate_fields(29.97) == (30000, 1001)
    assert frame_rate_fields(25) == (25000, 1000)
    assert frame_rate_fields(50) == (50000, 1000)


def test_alpha_size_rate_and_receivers_in_process():
    """A BGRA packet through the real NDI output and back through a real receiver: straight alpha
    survives, the bars of a letterboxed frame are transparent, the rate fields say 60 fps."""
    name = unique_name()
    output = NdiOutput("ndi", NdiOutputConfig(enabled=True, name=name, width=320, height=180, fps=60))
    output.open()
    image = np.zeros((120, 120, 4), np.uint8)  # square into 16:9: transparent bars left and right
    image[:, :60] = (200, 120, 40, 255)  # opaque
    image[:, 60:] = (200, 120, 40, 128)  # half transparent
    image[40:80, 40:80, 3] = 0  # a fully transparent hole
    bgra = FramePacket(seq=1, image=image, t_capture_ns=time.perf_counter_ns())
    opaque = FramePacket(seq=2, image=np.full((180, 320, 3), (10, 200, 90), np.uint8), t_capture_ns=0)
    stop = threading.Event()
    current = [bgra]

    def send() -> None:  # what the output's worker does, at 60 fps
        while not stop.is_set():
            output.write(current[0])
            time.sleep(1 / 60)

    sender = threading.Thread(target=send)
    sender.start()
    receiver = Receiver(name)
    try:
        got = None
        for _ in range(30):
            got = receiver.frame(2000)
            if got is not None and got[1] == ndi.FOURCC_VIDEO_TYPE_BGRA:
                break
        assert got is not None
        data, fourcc, rate = got
        assert receiver.ndi_name.endswith(f"({name})")
        assert data.shape == (180, 320, 4)
        assert fourcc == ndi.FOURCC_VIDEO_TYPE_BGRA
        assert rate[0] / rate[1] == pytest.approx(60)
        alpha = data[:, :, 3].astype(int)
        assert alpha[:, :60].max() <= 3  # letterbox bars: transparent
        assert alpha[:, 260:].max() <= 3
        assert np.abs(alpha[10:170, 75:125] - 255).max() <= 3  # opaque left half of the picture
        assert np.abs(alpha[10:170, 195:245] - 128).max() <= 4  # straight alpha 128 stays 128
        assert alpha[75:105, 140:160].max() <= 3  # the hole
        colour = data[10:170, 75:125, :3].astype(int)
        assert np.abs(colour - (200, 120, 40)).max() <= 12  # NDI compresses: near, not exact
        # Opaque frames go out as BGRX.
        current[0] = opaque
        for _ in range(30):
            got = receiver.frame(2000)
            if got is not None and got[1] == ndi.FOURCC_VIDEO_TYPE_BGRX:
                break
        assert got[1] == ndi.FOURCC_VIDEO_TYPE_BGRX
        assert np.abs(got[0][:, :, :3].astype(int) - (10, 200, 90)).mean() < 4
        deadline = time.monotonic() + 5
        while output.stats()["receivers"] != 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert output.stats()["receivers"] == 1
    finally:
        receiver.close()
        stop.set()
        sender.join()
        output.close()


STATUS_FPS = re.compile(r"INFO\s+facecast\.pipeline\.runner: (\d+\.\d) fps")
SUMMARY = re.compile(r"output ndi: sent (\d+) frames \((\d+) new, (\d+) repeated\)")


def still_video(path: Path, portrait: np.ndarray) -> tuple[Path, np.ndarray]:
    """A 640x480, 30 fps video of one still picture (looped by the daemon), and that picture as
    the decoder gives it: what the NDI receiver should see, scaled."""
    import av
    import cv2

    from tests.conftest import write_video

    frame = np.zeros((480, 640, 3), np.uint8)
    frame[:] = (40, 90, 160)
    face = cv2.resize(portrait, (360, 360), interpolation=cv2.INTER_AREA)
    frame[60:420, 140:500] = face
    frame[:, :40] = (40, 200, 60)  # coloured edges: a wrong scaling or crop shows in the comparison
    frame[:, 600:] = (200, 60, 190)
    write_video(path, [frame] * 30, fps=30.0)
    with av.open(str(path)) as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="bgr24")
    return path, decoded


@pytest.mark.slow
def test_facecast_run_sends_ndi_that_a_receiver_gets_at_60_fps(tmp_path, portrait):
    """`facecast run` with the NDI output, received like OBS: name, size, rate, pixels; a receiver
    that connects, stops reading and disconnects does not slow the daemon or the other receiver."""
    from tests.conftest import facecast_env

    video, decoded = still_video(tmp_path / "still.mp4", portrait)
    expected = fit_into(np.zeros((270, 480, 4), np.uint8), decoded, "letterbox", (0, 0, 0, 255))
    name = unique_name()
    args = [
        sys.executable,
        "-m",
        "facecast",
        "run",
        "--seconds",
        "16",
        "--set",
        "capture.source=file",
        "--set",
        f"capture.file.path={video}",
        "--set",
        "capture.file.loop=true",
        "--set",
        "capture.file.realtime=true",
        # The pipeline runs at the file's 30 fps, NDI is paced at 60: repeats fill the gaps.
        "--set",
        "tracking.enabled=false",
        "--set",
        "effect.active=passthrough",
        "--set",
        "outputs.preview.enabled=false",
        "--set",
        "outputs.ndi.enabled=true",
        "--set",
        f"outputs.ndi.name={name}",
        "--set",
        "outputs.ndi.width=480",
        "--set",
        "outputs.ndi.height=270",
        "--set",
        "outputs.ndi.fps=60",
        "--set",
        "stats.interval_s=1",
        "--set",
        "control.enabled=false",  # not needed here; another daemon may hold its port
    ]
    log_path = tmp_path / "facecast.log"
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(args, cwd=tmp_path, env=facecast_env(), stdout=log_file, stderr=subprocess.STDOUT)
    receiver = stalled = None
    try:
        try:
            receiver = Receiver(name, timeout_s=30)
        except AssertionError:
            raise AssertionError(f"the sender never appeared; facecast said:\n{log_path.read_text()[-3000:]}") from None
        assert receiver.ndi_name.endswith(f"({name})")
        got = receiver.frame(5000)
        assert got is not None
        data, fourcc, rate = got
        assert data.shape == (270, 480, 4)
        assert fourcc == ndi.FOURCC_VIDEO_TYPE_BGRX  # the camera frame has no alpha
        assert rate[0] / rate[1] == pytest.approx(60)
        # NDI compresses (and subsamples colour 4:2:2): close, not exact; worst at sharp colour edges.
        got_bgr, want_bgr = data[:, :, :3].astype(int), expected[:, :, :3].astype(int)
        diff = np.abs(got_bgr - want_bgr)
        print(
            f"NDI pixel difference: mean {diff.mean():.2f}, p95 {np.percentile(diff, 95):.0f}, "
            f"p99 {np.percentile(diff, 99):.0f} levels"
        )
        assert diff.mean() < 3 and np.percentile(diff, 95) <= 10
        # 640x480 letterboxed into 480x270: the picture is 360x270 at x = 60..420, black bars around.
        assert got_bgr[:, :56].max() <= 6 and got_bgr[:, 424:].max() <= 6
        for stripe in (np.s_[10:260, 64:80], np.s_[10:260, 402:416]):  # the coloured left and right edges
            assert np.abs(got_bgr[stripe] - want_bgr[stripe]).max() <= 12  # NDI shifts saturated colours ~9 levels
        face = (slice(60, 210), slice(180, 300))
        assert np.abs(got_bgr[face] - want_bgr[face]).mean() < 5  # fine detail compresses the most
        assert (data[:, :, 3] == 255).all()

        frames, span = receiver.count_for(3.0)
        rate_before = frames / span
        print(f"NDI receive rate: {rate_before:.1f} fps ({frames} frames in {span:.2f} s)")
        assert 50 <= rate_before <= 66

        # A second receiver connects, takes one frame, then stops reading for 2 s and goes away.
        stalled = Receiver(name)
        assert stalled.frame(3000) is not None
        frames, span = receiver.count_for(2.0)
        rate_during = frames / span
        stalled.close()
        stalled = None
        frames, span = receiver.count_for(2.0)
        rate_after = frames / span
        print(f"NDI receive rate with a stalled receiver: {rate_during:.1f} fps, after it left: {rate_after:.1f} fps")
        assert rate_during >= 50 and rate_after >= 50
    finally:
        if stalled is not None:
            stalled.close()
        if receiver is not None:
            receiver.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log = log_path.read_text()
    assert proc.returncode == 0, log[-3000:]
    daemon_fps = [float(x) for x in STATUS_FPS.findall(log)]
    assert len(daemon_fps) >= 8, log[-3000:]
    # The daemon kept its 30 fps all along, the stalled receiver's 2 s included (skip the start).
    print(f"daemon fps, one status line a second: {daemon_fps}")
    assert min(daemon_fps[3:]) >= 25, daemon_fps
    sent, new, repeated = map(int, SUMMARY.search(log).groups())
    print(f"NDI output: sent {sent} frames, {new} new, {repeated} repeated")
    assert repeated > 0.3 * sent  # 30 fps in, 60 out
    assert "1 receiver connected" in log and "2 receivers connected" in log
