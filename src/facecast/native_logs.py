"""Native libraries' start-up chatter kept off the streamer's terminal (unless logging.level: debug).

MediaPipe's C++ graphs log through absl straight to file descriptor 2 (`W0000 00:00:... 7709
inference_feedback_manager.cc:114] Feedback manager requires a model with a single signature...`,
`landmark_projection_calculator.cc`, `WARNING: All log messages before absl::InitializeLog() is
called are written to STDERR`), TensorFlow Lite prints `INFO: Created TensorFlow Lite XNNPACK
delegate for CPU.` and OpenCV's libpng `libpng warning: ...` for odd PNG chunks. mediapipe 0.10.21
reads no environment variable for this (GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL were tried: no
effect) and its extension exports no absl log setter, so the descriptor itself is the only handle.

`install()` points fd 2 at a pipe read by a small filter process that passes everything on to the
real stderr except those informational and warning lines; native errors and fatal messages (absl
`E`/`F` lines) and anything unknown still show. Python's `sys.stderr` is re-pointed at the real
stderr first, so facecast's log, tracebacks and progress bars never go through the filter and a
terminal stays a terminal (`isatty()`). The filter is a process, not a thread, so that a native
crash (absl aborts right after its FATAL line) cannot take the last lines with it: the filter
drains the pipe until the last writer is gone, then exits.

This file is also the filter program: `python -I -S native_logs.py` (standard library only).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import signal
import subprocess
import sys

log = logging.getLogger(__name__)

# Lines dropped whole. absl's prefix: severity (I=info, W=warning; E and F are kept), MMDD (0000 and
# seconds since 1970 before absl::InitializeLog, which mediapipe never calls), time, thread id, file:line].
_ABSL_NOTICE = re.compile(rb"[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\s\]]+:\d+\] ")
_ABSL_HEAD = (b"IW", b"0123456789", b"0123456789", b"0123456789", b"0123456789", b" ")
_LITERAL_HEADS = (
    b"INFO: Created TensorFlow Lite",
    b"INFO: Initialized TensorFlow Lite",
    b"WARNING: All log messages before absl::InitializeLog() is called",
    b"libpng warning: ",
)
_MAX_HELD = 1 << 16  # a "line" this long without a newline is not a native log line: pass it on


def is_noise(line: bytes) -> bool:
    """A whole line (with or without its newline) that a streamer never needs to see."""
    return line.startswith(_LITERAL_HEADS) or _ABSL_NOTICE.match(line) is not None


def _may_become_noise(start: bytes) -> bool:
    """Could a line that so far reads `start` (no newline yet) still turn out to be noise?"""
    if all(byte in allowed for byte, allowed in zip(start, _ABSL_HEAD, strict=False)):
        return True
    return any(head.startswith(start[: len(head)]) for head in _LITERAL_HEADS)


class LineFilter:
    """Bytes in, bytes to show out. Noise lines are dropped whole; every other byte is passed on as
    soon as it is known not to begin a noise line (a progress bar that never ends its line shows
    at once). Writers split lines at any point: TensorFlow Lite writes "INFO: " and the rest apart.
    """

    def __init__(self) -> None:
        self._held = b""  # the start of the current line, while it may still be noise
        self._passing = False  # the current line is known not to be noise: pass it up to its newline
        self.dropped = 0

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        while data:
            if self._passing:
                end = data.find(b"\n")
                if end < 0:
                    out += data
                    break
                out += data[: end + 1]
                data = data[end + 1 :]
                self._passing = False
                continue
            held = self._held + data
            end = held.find(b"\n")
            if end < 0:
                if _may_become_noise(held) and len(held) < _MAX_HELD:
                    self._held = held
                else:
                    out += held
                    self._held, self._passing = b"", True
                break
            line, data = held[: end + 1], held[end + 1 :]
            self._held = b""
            if is_noise(line):
                self.dropped += 1
            else:
                out += line
        return bytes(out)

    def flush(self) -> bytes:
        """What is held back when the writers have gone (an unfinished line is shown as it is)."""
        held, self._held = self._held, b""
        return held


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def filter_main(source: int = 0, sink: int = 1) -> int:
    """The filter process: copy `source` to `sink` without the noise, until every writer is gone."""
    # Ctrl+C and a terminal-wide SIGTERM are for the daemon; the filter ends when its pipe does, so
    # the lines the daemon writes while it stops still show.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    lines = LineFilter()
    try:
        while data := os.read(source, 1 << 16):
            _write_all(sink, lines.feed(data))
        _write_all(sink, lines.flush())
    except (BrokenPipeError, OSError):
        return 0  # the terminal went away: nothing left to show things on
    return 0


class _Installed:
    """The filter process and the real stderr, restored at exit so the last lines come out in order."""

    def __init__(self, process: subprocess.Popen[bytes], real_stderr: int) -> None:
        self.process = process
        self.real_stderr = real_stderr

    def restore(self) -> None:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr already closed: nothing of ours is left to flush
        os.dup2(self.real_stderr, 2)  # closes our end of the pipe: the filter sees its end of input
        _point_windows_std_handle_at_fd2()
        try:
            self.process.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass  # a child process of ours still holds the pipe; the filter ends after it


_installed: _Installed | None = None  # fd 2 is one per process: so is its filter


def install(level: str) -> None:
    """Filter native log lines out of fd 2 for the rest of this process, unless level is "debug".

    Call it before the logging handlers are set up and before MediaPipe builds a graph. Also quiets
    matplotlib (imported by mediapipe), whose font cache message is logged at INFO on a first run.
    """
    global _installed
    if level == "debug" or _installed is not None:
        return
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    if sys.stderr is None or not os.path.isfile(__file__):
        return  # pythonw (no console) or facecast imported from an archive: nothing to filter, or no filter program
    sys.stderr.flush()
    real_stderr = os.dup(2)
    try:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=real_stderr,
            close_fds=True,
        )
    except OSError as exc:
        os.close(real_stderr)
        log.debug("native log filter not started (%s): MediaPipe's own log lines will show", exc)
        return
    assert process.stdin is not None
    python_stderr = sys.stderr
    # Lives as long as the process, like the stderr it replaces.
    sys.stderr = open(
        real_stderr,
        "w",
        buffering=1,
        closefd=False,
        encoding=getattr(python_stderr, "encoding", None),
        errors=getattr(python_stderr, "errors", None),
    )
    os.dup2(process.stdin.fileno(), 2)
    process.stdin.close()  # fd 2 is now this process's only write end of the pipe
    _point_windows_std_handle_at_fd2()
    _installed = _Installed(process, real_stderr)
    atexit.register(_installed.restore)


def _point_windows_std_handle_at_fd2() -> None:
    # Windows: native code may write through the process's standard error handle rather than the C
    # runtime's fd 2; keep both the same. (Reasoned from the Win32 API, not tested here.)
    if sys.platform == "win32":
        import ctypes
        import msvcrt

        std_error_handle = -12
        ctypes.windll.kernel32.SetStdHandle(std_error_handle, msvcrt.get_osfhandle(2))


if __name__ == "__main__":
    raise SystemExit(filter_main())
