"""Spout, virtual camera and NDI: clear start-up errors where they cannot run, no import-time cost."""

from __future__ import annotations

import glob
import subprocess
import sys

import pytest

from facecast.outputs.ndi import NdiOutputConfig
from facecast.outputs.spout import SpoutOutputConfig
from facecast.outputs.stage import OutputStage
from facecast.outputs.virtualcam import VirtualCamOutputConfig
from facecast.pipeline.stage import StartupError


def start_error(**configs) -> str:
    stage = OutputStage(configs)
    with pytest.raises(StartupError) as info:
        stage.start()
    return str(info.value)


@pytest.mark.skipif(sys.platform == "win32", reason="Spout works on Windows")
def test_spout_outside_windows_is_a_clear_startup_error():
    message = start_error(spout=SpoutOutputConfig(enabled=True))
    assert "output spout (spout) cannot start" in message
    assert "Windows-only" in message and "ndi" in message


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or glob.glob("/dev/video*"), reason="needs Linux without any video device"
)
def test_virtualcam_without_v4l2loopback_says_what_to_install():
    message = start_error(cam=VirtualCamOutputConfig(enabled=True))
    assert "output cam (virtualcam) cannot start: no virtual camera could be opened" in message
    assert "v4l2loopback" in message and "modprobe v4l2loopback" in message and "apt install" in message


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the obs backend exists on Windows and macOS")
def test_virtualcam_backend_missing_on_this_os_is_named():
    message = start_error(cam=VirtualCamOutputConfig(enabled=True, backend="obs"))
    assert "outputs.cam.backend: 'obs' is not available on linux" in message and "v4l2loopback" in message


@pytest.mark.parametrize(
    ("module", "config", "hint"),
    [
        ("NDIlib", NdiOutputConfig(enabled=True), "pip install ndi-python"),
        ("pyvirtualcam", VirtualCamOutputConfig(enabled=True), "pip install pyvirtualcam"),
    ],
)
def test_missing_package_names_what_to_install(monkeypatch, module, config, hint):
    monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when the package is absent
    assert hint in start_error(out=config)


def test_defaults_streamers_expect():
    ndi = NdiOutputConfig()
    assert (ndi.name, ndi.width, ndi.height, ndi.fps, ndi.alpha, ndi.scaling) == (
        "facecast",
        1280,
        720,
        60,
        True,
        "letterbox",
    )
    cam = VirtualCamOutputConfig()
    assert (cam.width, cam.height, cam.fps) == (1280, 720, 30)  # what meeting apps expect
    assert SpoutOutputConfig().name == "facecast"


def test_the_daemon_does_not_import_output_backends():
    code = (
        "import sys, facecast.daemon, facecast.config;"
        "loaded = [m for m in ('NDIlib', 'SpoutGL', 'pyvirtualcam') if m in sys.modules];"
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
