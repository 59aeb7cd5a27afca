"""NDI output (ndi-python, module `NDIlib`; its wheel bundles the NDI runtime): what OBS's DistroAV
"NDI Source" receives, on this machine or across the network.

- A stable sender name (default "facecast"): OBS finds it again after a restart of either side.
- BGRA with straight alpha when the effect gives a matte and `alpha` is on, BGRX otherwise.
- The frame rate fields carry the configured rate (the library's default, 30000/1001, would cap
  receivers at 29.97 fps).
- No library clock (`clock_video=False`): the output worker's pacer sets the rate, and the frame
  goes out with `send_send_video_async_v2`, which returns at once while the SDK compresses and
  sends on its own threads. The SDK reads the buffer until the next send, so frames alternate
  between two buffers this object owns.
"""

from __future__ import annotations

import logging
import threading
import time
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from pydantic import Field

from facecast.outputs.base import Output, flatten_alpha
from facecast.outputs.scaling import VideoOutputConfig, fit_into, output_size_note
from facecast.types import FramePacket

log = logging.getLogger(__name__)

RECEIVER_POLL_S = 1.0


class NdiOutputConfig(VideoOutputConfig):
    type: Literal["ndi"] = "ndi"
    enabled: bool = False
    name: str = Field(
        "facecast",
        min_length=1,
        max_length=200,
        description="NDI source name; OBS lists it as 'HOST (name)' and reconnects to it by that name",
    )
    groups: str | None = Field(None, description="comma-separated NDI groups; empty = the public group")
    alpha: bool = Field(
        True, description="send the effect's alpha (BGRA, straight); false = opaque BGRX over background"
    )
    background: tuple[int, int, int] = Field(
        (0, 0, 0), description="BGR of letterbox bars on opaque frames, and behind transparent pixels when alpha is off"
    )


def load_ndi() -> Any:
    """Import NDIlib and start the NDI runtime once per process; raise a sentence saying what is missing."""
    try:
        import NDIlib as ndi
    except ImportError as exc:
        raise RuntimeError(
            f"the NDI output needs the ndi-python package (its wheel includes the NDI runtime): "
            f"pip install ndi-python ({exc})"
        ) from exc
    _Runtime.acquire(ndi)
    return ndi


class _Runtime:
    """NDIlib.initialize()/destroy() are process-wide: destroy only when the last user is gone."""

    _lock = threading.Lock()
    _users = 0

    @classmethod
    def acquire(cls, ndi: Any) -> None:
        with cls._lock:
            if cls._users == 0 and not ndi.initialize():
                supported = ndi.is_supported_CPU()
                raise RuntimeError(
                    "the NDI runtime did not start"
                    + ("" if supported else ": this CPU is not supported by NDI (it needs SSE4.2)")
                )
            cls._users += 1

    @classmethod
    def release(cls, ndi: Any) -> None:
        with cls._lock:
            cls._users = max(0, cls._users - 1)
            if cls._users == 0:
                ndi.destroy()


def frame_rate_fields(fps: float) -> tuple[int, int]:
    """NDI's frame_rate_N / frame_rate_D: 60 -> 60000/1000, 59.94 -> 60000/1001, 25 -> 25000/1000."""
    ntsc = fps * 1.001
    if abs(ntsc - round(ntsc)) < 0.005 and abs(fps - round(fps)) > 0.005:
        return round(ntsc) * 1000, 1001
    rate = Fraction(fps).limit_denominator(1000)
    scale = max(1, 1000 // rate.denominator)
    return rate.numerator * scale, rate.denominator * scale


class NdiOutput(Output):
    delivery = "paced"

    def __init__(self, name: str, cfg: NdiOutputConfig) -> None:
        super().__init__(name)
        self.cfg = cfg
        self.fps = cfg.fps
        self._ndi: Any = None
        self._sender: Any = None
        self._buffers: list[np.ndarray] = []
        self._frames: list[Any] = []
        self._next = 0
        self._current: Any = None
        self._last_packet: FramePacket | None = None
        self._logged_size: tuple[int, int] | None = None
        self.source_name: str | None = None
        self.receivers = 0
        self.tally = {"on_program": False, "on_preview": False}
        self._polled_at = 0.0

    def open(self) -> None:
        ndi = load_ndi()
        try:
            settings = ndi.SendCreate()
            settings.ndi_name = self.cfg.name
            if self.cfg.groups:
                settings.groups = self.cfg.groups
            settings.clock_video = False  # paced by the output worker; the library clock would hold the thread
            settings.clock_audio = False
            sender = ndi.send_create(settings)
            if sender is None:
                raise RuntimeError(f"NDI could not create the sender {self.cfg.name!r} (outputs.{self.name}.name)")
        except BaseException:
            _Runtime.release(ndi)
            raise
        self._ndi, self._sender = ndi, sender
        n, d = frame_rate_fields(self.cfg.fps)
        self._buffers = [np.zeros((self.cfg.height, self.cfg.width, 4), np.uint8) for _ in range(2)]
        self._frames = []
        for buffer in self._buffers:
            frame = ndi.VideoFrameV2()
            frame.data = buffer  # the frame keeps a pointer only: self._buffers keeps the memory alive
            frame.FourCC = ndi.FOURCC_VIDEO_TYPE_BGRX
            frame.frame_rate_N, frame.frame_rate_D = n, d
            frame.frame_format_type = ndi.FRAME_FORMAT_TYPE_PROGRESSIVE
            self._frames.append(frame)
        self._next, self._current, self._last_packet = 0, None, None
        self.receivers, self._polled_at = 0, 0.0
        self.source_name = _source_name(ndi, sender) or self.cfg.name
        log.info(
            "NDI: sending as %r, %dx%d at %g fps (%d/%d), %s",
            self.source_name,
            self.cfg.width,
            self.cfg.height,
            self.cfg.fps,
            n,
            d,
            "BGRA with alpha" if self.cfg.alpha else "opaque BGRX",
        )

    def write(self, packet: FramePacket) -> None:
        ndi = self._ndi
        if packet is not self._last_packet:  # a new frame: into the buffer the SDK is not reading
            k = self._next
            self._next ^= 1
            frame = self._frames[k]
            frame.FourCC = self._fill(self._buffers[k], packet)
            self._current, self._last_packet = frame, packet
        # else: a repeat; sending the same, unchanged buffer again is allowed.
        ndi.send_send_video_async_v2(self._sender, self._current)
        now = time.monotonic()
        if now - self._polled_at >= RECEIVER_POLL_S:
            self._polled_at = now
            self._poll()

    def _fill(self, buffer: np.ndarray, packet: FramePacket) -> Any:
        image = packet.image
        h, w = image.shape[:2]
        if self._logged_size != (w, h):
            self._logged_size = (w, h)
            log.info(
                "NDI %s: %s", self.cfg.name, output_size_note(w, h, self.cfg.width, self.cfg.height, self.cfg.scaling)
            )
        with_alpha = self.cfg.alpha and image.ndim == 3 and image.shape[2] == 4
        if with_alpha:
            fit_into(buffer, image, self.cfg.scaling, (0, 0, 0, 0))  # transparent bars
            return self._ndi.FOURCC_VIDEO_TYPE_BGRA
        # Opaque: BGRA frames are composited over the background; alpha is sent as 255 (BGRX).
        opaque = flatten_alpha(image, self.cfg.background) if image.ndim == 3 else image
        fit_into(buffer, opaque, self.cfg.scaling, (*self.cfg.background, 255))
        return self._ndi.FOURCC_VIDEO_TYPE_BGRX

    def _poll(self) -> None:
        ndi = self._ndi
        receivers = int(ndi.send_get_no_connections(self._sender, 0))
        if receivers != self.receivers:
            log.info("NDI %s: %d receiver%s connected", self.cfg.name, receivers, "" if receivers == 1 else "s")
            self.receivers = receivers
        tally = ndi.Tally()
        if ndi.send_get_tally(self._sender, tally, 0):
            self.tally = {"on_program": bool(tally.on_program), "on_preview": bool(tally.on_preview)}

    def stats(self) -> dict[str, Any]:
        return {"ndi_name": self.source_name, "receivers": self.receivers, **self.tally}

    def close(self) -> None:
        ndi, sender = self._ndi, self._sender
        self._ndi = self._sender = None
        if sender is None:
            return
        try:
            ndi.send_send_video_async_v2(sender, None)  # the SDK lets go of the last buffer
            ndi.send_destroy(sender)
        finally:
            self._frames, self._buffers, self._current, self._last_packet = [], [], None, None
            _Runtime.release(ndi)
            self.receivers = 0


def _source_name(ndi: Any, sender: Any) -> str | None:
    try:
        source = ndi.send_get_source_name(sender)
        return getattr(source, "ndi_name", None) or None
    except Exception:  # informational only
        return None
