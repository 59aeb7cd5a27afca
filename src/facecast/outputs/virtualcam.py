"""Virtual camera output (pyvirtualcam): facecast as a webcam for OBS, Zoom, Meet, Discord...

Backends: OBS's virtual camera (Windows, macOS), Unity Capture (Windows) and v4l2loopback (Linux).
Cameras have no alpha: transparent pixels are composited over `background`. Meeting apps expect an
ordinary fixed size and rate, so both come from the config whatever the camera gives.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import numpy as np
from pydantic import Field

from facecast.outputs.base import Output, flatten_alpha
from facecast.outputs.scaling import VideoOutputConfig, fit_into
from facecast.types import FramePacket

log = logging.getLogger(__name__)

VirtualCamBackend = Literal["auto", "obs", "unitycapture", "v4l2loopback"]


class VirtualCamOutputConfig(VideoOutputConfig):
    type: Literal["virtualcam"] = "virtualcam"
    enabled: bool = False
    fps: float = Field(30.0, gt=0, le=240, description="frames per second; meeting apps expect 30")
    backend: VirtualCamBackend = Field(
        "auto",
        description="auto = the first that works: obs, unitycapture (Windows); obs (macOS); v4l2loopback (Linux)",
    )
    device: str | None = Field(
        None, description="e.g. /dev/video10 (v4l2loopback) or a Unity Capture device name; empty = the first free one"
    )
    background: tuple[int, int, int] = Field(
        (0, 177, 64), description="BGR behind transparent pixels (cameras carry no alpha)"
    )


def install_hint(platform: str = sys.platform) -> str:
    if platform.startswith("linux"):
        return (
            "install and load v4l2loopback: sudo apt install v4l2loopback-dkms && "
            "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=facecast"
        )
    if platform == "darwin":
        return "install OBS Studio 30 or newer and click 'Start Virtual Camera' once to install its camera extension"
    return (
        "install OBS Studio 26 or newer (its virtual camera; stop it in OBS while facecast uses it) "
        "or Unity Capture (github.com/schellingb/UnityCapture)"
    )


def load_pyvirtualcam() -> Any:
    try:
        import pyvirtualcam
    except ImportError as exc:
        raise RuntimeError(f"the virtual camera output needs pyvirtualcam: pip install pyvirtualcam ({exc})") from exc
    return pyvirtualcam


class VirtualCamOutput(Output):
    delivery = "paced"

    def __init__(self, name: str, cfg: VirtualCamOutputConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.fps = cfg.fps
        self._camera: Any = None
        self._frame = np.zeros((cfg.height, cfg.width, 3), np.uint8)
        self._last_packet: FramePacket | None = None
        self.device: str | None = None
        self.backend: str | None = None

    def open(self) -> None:
        pyvirtualcam = load_pyvirtualcam()
        available = sorted(pyvirtualcam.camera.BACKENDS)
        backend = None if self.cfg.backend == "auto" else self.cfg.backend
        if backend is not None and backend not in available:
            raise RuntimeError(
                f"outputs.{self.name}.backend: {backend!r} is not available on {sys.platform} "
                f"(available here: {', '.join(available) or 'none'})"
            )
        try:
            camera = pyvirtualcam.Camera(
                self.cfg.width,
                self.cfg.height,
                self.cfg.fps,
                fmt=pyvirtualcam.PixelFormat.BGR,
                device=self.cfg.device,
                backend=backend,
            )
        except Exception as exc:
            detail = " / ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise RuntimeError(f"no virtual camera could be opened ({detail}); {install_hint()}") from exc
        self._camera = camera
        self._last_packet = None
        self.backend, self.device = camera.backend, camera.device
        log.info(
            "virtual camera: %s (%s backend), %dx%d at %g fps",
            self.device,
            self.backend,
            self.cfg.width,
            self.cfg.height,
            self.cfg.fps,
        )

    def write(self, packet: FramePacket) -> None:
        if packet is not self._last_packet:
            image = packet.image
            opaque = flatten_alpha(image, self.cfg.background) if image.ndim == 3 else image
            fit_into(self._frame, opaque, self.cfg.scaling, self.cfg.background)
            self._last_packet = packet
        self._camera.send(self._frame)  # paced by the output worker, not sleep_until_next_frame()

    def stats(self) -> dict[str, Any]:
        return {"device": self.device, "backend": self.backend}

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.close()
