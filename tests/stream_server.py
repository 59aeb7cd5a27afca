"""A network camera on loopback for the capture tests: a short H.264 clip served over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np

from facecast.media.video import VideoFileWriter


def short_clip(tmp_path: Path, frames: int = 10) -> bytes:
    path = tmp_path / "clip.mkv"  # Matroska: streamable over plain HTTP, no index to seek for
    writer = VideoFileWriter(path, 10)
    for i in range(frames):
        writer.write(np.full((120, 160, 3), i * 20, np.uint8))
    writer.close()
    return path.read_bytes()


class ClipServer:
    """HTTP on loopback: serves `data` to each connection, then closes (`hang=False`) or keeps the
    connection open without sending more (`hang=True`, a camera that froze). Counts connections."""

    def __init__(self, data: bytes, hang: bool) -> None:
        self.data, self.hang = data, hang
        self.connections: list[float] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections.append(time.monotonic())
            conn.recv(65536)
            head = f"HTTP/1.0 200 OK\r\nContent-Type: video/x-matroska\r\nContent-Length: {len(self.data) * 10}\r\n\r\n"
            try:
                conn.sendall(head.encode() + self.data)
            except OSError:
                pass
            if self.hang:
                self._held.append(conn)
            else:
                conn.close()

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()
