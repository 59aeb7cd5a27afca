"""The preview window opens for real on an X display (Xvfb)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from tests.conftest import facecast_env, popen_facecast

pytestmark = pytest.mark.skipif(
    not (shutil.which("Xvfb") and shutil.which("xdotool")),
    reason="needs Xvfb and xdotool (make test installs them as root)",
)


@pytest.fixture
def xvfb_display():
    for number in range(91, 140):
        if not os.path.exists(f"/tmp/.X11-unix/X{number}") and not os.path.exists(f"/tmp/.X{number}-lock"):
            break
    display = f":{number}"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(f"/tmp/.X11-unix/X{number}"):
        assert proc.poll() is None and time.monotonic() < deadline, "Xvfb did not start"
        time.sleep(0.05)
    yield display
    proc.terminate()
    proc.wait(5)


def test_preview_window_appears_on_the_display(xvfb_display):
    env = facecast_env()
    env["DISPLAY"] = xvfb_display
    proc = popen_facecast(
        "run",
        "--seconds",
        "20",
        "--set",
        "capture.source=synthetic",
        "--set",
        "capture.width=320",
        "--set",
        "capture.height=240",
        "--set",
        "outputs.preview.title=facecast test preview",
        env=env,
    )
    try:
        found = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not found:
            result = subprocess.run(
                ["xdotool", "search", "--name", "facecast test preview"], capture_output=True, text=True, env=env
            )
            found = result.stdout.strip()
            time.sleep(0.2)
        assert found, "no preview window appeared"
        geometry = subprocess.run(
            ["xdotool", "getwindowgeometry", found.split()[0]], capture_output=True, text=True, env=env
        ).stdout
        assert "Geometry:" in geometry
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out
    assert "skipped" not in out
