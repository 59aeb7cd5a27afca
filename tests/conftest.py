"""Shared fixtures: the bundled portrait, generated videos, running the real `facecast` command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
PORTRAIT = REPO / "src" / "facecast" / "assets" / "characters" / "astronaut.png"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Byte-compile facecast once: the suite starts hundreds of facecast processes, and where
    PYTHONDONTWRITEBYTECODE is set (as on our development machines) each would compile its hundred
    modules from source again (0.5 s of CPU per start on 2 cores)."""
    import compileall

    compileall.compile_dir(str(REPO / "src" / "facecast"), quiet=1)


@pytest.fixture(scope="session")
def portrait() -> np.ndarray:
    image = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0, audio: bool = False) -> Path:
    """An H.264 mp4 of BGR frames (optionally with a 440 Hz AAC tone of the same duration)."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        a_stream = container.add_stream("aac", rate=44100) if audio else None
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if a_stream is not None:
            samples = int(44100 * len(frames) / fps)
            t = np.arange(samples) / 44100
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            for start in range(0, samples, 1024):
                af = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], format="fltp", layout="mono")
                af.sample_rate = 44100
                af.pts = start
                container.mux(a_stream.encode(af))
            container.mux(a_stream.encode(None))
    return path


def count_frames(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture
def synthetic_video(tmp_path: Path):
    """Factory: a video of the synthetic driver (a real moving face)."""
    from facecast.capture.synthetic import synthetic_frames

    def make(count: int = 30, width: int = 320, height: int = 240, fps: float = 30.0, audio: bool = False) -> Path:
        frames = [f.image for f in synthetic_frames(count, width, height, fps)]
        return write_video(tmp_path / f"synthetic-{count}.mp4", frames, fps, audio)

    return make


# Per-user folders (models, job queue, engine caches) of every facecast a test starts: never the
# real user's, never shared with another test run.
_USER_DIRS = Path(tempfile.mkdtemp(prefix="facecast-test-home-"))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import shutil

    shutil.rmtree(_USER_DIRS, ignore_errors=True)


def facecast_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("DISPLAY", None)  # no preview window unless a test asks for one
    env.pop("FACECAST_CONFIG", None)
    env["PYTHONUNBUFFERED"] = "1"
    env["XDG_DATA_HOME"] = str(_USER_DIRS / "data")
    env["XDG_CACHE_HOME"] = str(_USER_DIRS / "cache")
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _isolated(args: tuple[str, ...]) -> list[str]:
    """`run` gets a free control API port unless the test chooses one (--set control.port or its own --config)."""
    if args and args[0] == "run" and "--config" not in args and not any(a.startswith("control.port=") for a in args):
        return [args[0], "--set", f"control.port={free_port()}", *args[1:]]
    return list(args)


def run_facecast(*args: str, timeout: float = 120, cwd: Path | None = None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facecast", *_isolated(args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env=env or facecast_env(),
    )


def popen_facecast(*args: str, cwd: Path | None = None, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "facecast", *_isolated(args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd or REPO,
        env=env or facecast_env(),
    )


class OneCharacter:
    """A character library holding one character (or None): what an effect reads of the library."""

    def __init__(self, character):
        self.active = character

    def characters(self):
        return [self.active]
