"""The control panel's live preview: the output as small JPEGs, made only while someone watches.

`FrameTap` listens to the pipeline's deliveries (`Pipeline.add_delivery_listener`): on the output
stage's thread it keeps a reference to the newest delivered frame and does nothing else (no copy,
no lock, no encoding), so the live path pays one attribute write per frame. `PreviewEncoder`
runs a thread of its own only while at least one client watches: at most `fps` times a second it
takes the newest frame, if it is new, scales it to `width`, shows transparent parts over a
checkerboard and encodes one JPEG that every watcher gets. A watcher holds the newest JPEG only:
a slow client skips frames, nothing queues up. When the last watcher leaves, the thread ends.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import cv2
import numpy as np

from facecast.types import FramePacket, Image

log = logging.getLogger(__name__)

PREVIEW_FPS = 10.0
PREVIEW_WIDTH = 480  # pixels; the panel shows it at most this wide (dock: 300-500 px)
JPEG_QUALITY = 75
CHECKER_PX = 12  # checkerboard square behind transparent pixels, in preview pixels
CHECKER_SHADES = (153, 102)  # light and dark grey, as image editors show transparency


class FrameTap:
    """The newest delivered frame. `offer` is the delivery listener (output stage's thread)."""

    def __init__(self) -> None:
        self._latest: tuple[int, Image] | None = None  # (seq, image): one tuple, replaced whole

    def offer(self, packet: FramePacket, done_ns: int) -> None:
        self._latest = (packet.seq, packet.image)

    def latest(self) -> tuple[int, Image] | None:
        return self._latest


def checkerboard(height: int, width: int, cell: int = CHECKER_PX) -> np.ndarray:
    """A BGR checkerboard of `cell`-pixel squares."""
    ys, xs = np.indices((height, width))
    light = (ys // cell + xs // cell) % 2 == 0
    board = np.where(light, CHECKER_SHADES[0], CHECKER_SHADES[1]).astype(np.uint8)
    return cv2.cvtColor(board, cv2.COLOR_GRAY2BGR)


class PreviewRenderer:
    """One output image -> preview JPEG bytes (scaled, alpha over a checkerboard). Not thread-safe:
    used by the encoder thread only (it keeps the checkerboard of the last size)."""

    def __init__(self, width: int = PREVIEW_WIDTH, quality: int = JPEG_QUALITY) -> None:
        self.width = width
        self.quality = quality
        self._board: np.ndarray | None = None

    def jpeg(self, image: Image) -> bytes:
        frame: np.ndarray = image
        h, w = frame.shape[:2]
        if w > self.width:
            size = (self.width, max(1, round(h * self.width / w)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        elif frame.shape[2] == 4:
            frame = self._over_checkerboard(frame)
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError(f"JPEG encoding failed for a {frame.shape} image")
        return data.tobytes()

    def _over_checkerboard(self, bgra: np.ndarray) -> np.ndarray:
        h, w = bgra.shape[:2]
        if self._board is None or self._board.shape[:2] != (h, w):
            self._board = checkerboard(h, w)
        colour = cv2.cvtColor(bgra, cv2.COLOR_BGRA2BGR)
        alpha = cv2.cvtColor(np.ascontiguousarray(bgra[:, :, 3]), cv2.COLOR_GRAY2BGR)
        front = cv2.multiply(colour, alpha, scale=1.0 / 255.0)
        behind = cv2.multiply(self._board, cv2.bitwise_not(alpha), scale=1.0 / 255.0)
        return cv2.add(front, behind)


class Watcher:
    """One client of the preview: the newest JPEG, handed from the encoder thread to the client's
    event loop. Holds one frame, never more."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ready = asyncio.Event()
        self._jpeg: bytes | None = None

    def push(self, jpeg: bytes) -> None:
        """From the encoder thread."""
        try:
            self._loop.call_soon_threadsafe(self._set, jpeg)
        except RuntimeError:  # the client's loop has closed (server stopping)
            pass

    def _set(self, jpeg: bytes) -> None:
        self._jpeg = jpeg
        self._ready.set()

    async def next(self, timeout: float) -> bytes | None:
        """The newest JPEG not yet taken; None when none came within `timeout` seconds."""
        try:
            await asyncio.wait_for(self._ready.wait(), timeout)
        except TimeoutError:
            return None
        self._ready.clear()
        return self._jpeg


class PreviewEncoder:
    """Encodes the tap's newest frame for the watchers, on its own thread, only while there are any."""

    def __init__(
        self, tap: FrameTap, fps: float = PREVIEW_FPS, width: int = PREVIEW_WIDTH, quality: int = JPEG_QUALITY
    ) -> None:
        self.tap = tap
        self.period_s = 1.0 / fps
        self.renderer = PreviewRenderer(width, quality)
        self._lock = threading.Lock()
        self._watchers: set[Watcher] = set()
        self._stop: threading.Event | None = None  # the running thread's stop flag; None = no thread
        self._thread: threading.Thread | None = None
        self._last: bytes | None = None  # the newest JPEG while the thread runs (a new watcher starts with it)
        self.encoded = 0
        self.errors = 0
        self.encode_ms = 0.0  # smoothed time one preview frame takes to make

    def watch(self, loop: asyncio.AbstractEventLoop) -> Watcher:
        watcher = Watcher(loop)
        with self._lock:
            self._watchers.add(watcher)
            if self._stop is None:
                self._stop = threading.Event()
                self._last = None
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name="panel-preview", daemon=True)
                self._thread.start()
            last = self._last
        if last is not None:
            watcher.push(last)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
            self._watchers.discard(watcher)
            if not self._watchers and self._stop is not None:
                self._stop.set()  # the thread ends within one period
                self._stop = None

    @property
    def running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def snapshot(self) -> dict[str, Any]:
        """For /stats: watchers, whether the encoder thread runs, frames made, cost per frame."""
        with self._lock:
            watchers = len(self._watchers)
        return {
            "watchers": watchers,
            "running": self.running,
            "encoded": self.encoded,
            "errors": self.errors,
            "encode_ms": round(self.encode_ms, 2),
        }

    def _run(self, stop: threading.Event) -> None:
        last_seq = None
        deadline = time.monotonic()
        while not stop.is_set():
            latest = self.tap.latest()
            if latest is not None and latest[0] != last_seq:
                last_seq = latest[0]
                self._encode(latest[1])
            deadline += self.period_s
            wait = deadline - time.monotonic()
            if wait < 0:  # fell behind (a busy machine): start again from now, never catch up
                deadline, wait = time.monotonic(), 0.0
            stop.wait(wait)

    def _encode(self, image: Image) -> None:
        t0 = time.perf_counter()
        try:
            jpeg = self.renderer.jpeg(image)
        except Exception:
            self.errors += 1
            if self.errors <= 3 or self.errors % 100 == 0:
                log.exception("panel preview: a frame could not be encoded (%d so far)", self.errors)
            return
        ms = (time.perf_counter() - t0) * 1000
        self.encode_ms = ms if not self.encode_ms else 0.9 * self.encode_ms + 0.1 * ms
        with self._lock:
            self._last = jpeg
            self.encoded += 1
            watchers = list(self._watchers)
        for watcher in watchers:
            watcher.push(jpeg)
