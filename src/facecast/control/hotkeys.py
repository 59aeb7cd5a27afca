"""Global hotkeys with pynput: they fire whichever window has the focus (OBS, a game...).

pynput is imported only here, only when the listener starts: on Linux its import fails without a
reachable X display, and that must leave the daemon running (with a warning), never crash it.
Key events arrive on pynput's listener thread; the actions run on a thread of their own so a slow
one (loading a character) never holds up the listener, which on X11 would delay every key press.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Protocol

from facecast.control.actions import ActionError, Command

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 2.0
REPEAT_S = 0.25  # a held key auto-repeats; presses of one binding closer than this count once
PENDING_MAX = 8  # presses waiting for their action; more than this and new ones are dropped


class _KeyListener(Protocol):
    """What we use of pynput's listener (a threading.Thread with a stop())."""

    def is_alive(self) -> bool: ...

    def stop(self) -> None: ...

    def join(self, timeout: float | None = None) -> None: ...


class HotkeyListener:
    """Maps key combinations to commands and runs them through `run(command, source)`."""

    def __init__(self, bindings: dict[str, Command], run: Callable[[Command, str], object]) -> None:
        self.bindings = bindings
        self._run = run
        self._listener: _KeyListener | None = None
        self._pending: queue.Queue[tuple[str, Command]] = queue.Queue(PENDING_MAX)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._last_press: dict[str, float] = {}
        self.fired = 0  # presses that reached their action
        self.off_reason: str | None = "starting"  # why no key fires; None while listening

    @property
    def running(self) -> bool:
        return self._listener is not None and self._listener.is_alive()

    def status(self) -> dict[str, object]:
        running = self.running
        return {
            "listening": running,
            "reason": None if running else (self.off_reason or "the key listener stopped (display gone?)"),
            "fired": self.fired,
            "bindings": {keys: str(command) for keys, command in self.bindings.items()},
        }

    def start(self) -> bool:
        """Start listening. False, with a warning saying why, when global hotkeys cannot work here."""
        self.off_reason = self._start()
        if self.off_reason is not None:
            log.warning("hotkeys off: %s", self.off_reason)
            return False
        return True

    def _start(self) -> str | None:
        if not self.bindings:
            return "no key is bound"
        try:
            from pynput import keyboard
        except Exception as exc:  # ImportError without a display; Xlib errors on a refused display
            return _why_unavailable(exc)
        try:
            listener = keyboard.GlobalHotKeys({keys: self._on_hotkey(keys) for keys in self.bindings})
        except ValueError as exc:  # a combination this platform's backend cannot map
            return f"pynput refused the binding {exc}"
        listener.daemon = True
        try:
            listener.start()
        except Exception as exc:
            return f"the key listener cannot start ({exc})"
        if not _wait_ready(listener, READY_TIMEOUT_S):
            return f"the key listener stopped at start ({_listener_error(listener) or 'no reason given'})"
        self._listener = listener
        self._worker = threading.Thread(target=self._work, name="hotkeys", daemon=True)
        self._worker.start()
        if sys.platform == "darwin" and not getattr(listener, "IS_TRUSTED", True):
            log.warning(
                "hotkeys: macOS does not trust this program with key events; allow it in "
                "System Settings > Privacy & Security > Accessibility (or Input Monitoring)"
            )
        if os.environ.get("XDG_SESSION_TYPE") == "wayland":
            log.warning("hotkeys: Wayland session: they only fire while an X11 (XWayland) window has the focus")
        log.info("hotkeys: listening for %d key combinations (hotkeys.bindings)", len(self.bindings))
        return None

    def stop(self, timeout: float = 0.5) -> None:
        self._stop.set()
        self.off_reason = "stopped"
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.stop()
                listener.join(timeout)
            except Exception as exc:  # the listener died earlier; its error was reported then
                log.debug("hotkeys: listener stopped with %s", exc)
        if self._worker is not None:
            self._worker.join(timeout)
            self._worker = None

    # -- listener thread -------------------------------------------------------------------------
    def _on_hotkey(self, keys: str) -> Callable[[], None]:
        def pressed() -> None:
            now = time.monotonic()
            last = self._last_press.get(keys, 0.0)
            self._last_press[keys] = now
            if now - last < REPEAT_S:
                return  # auto-repeat of a held key
            try:
                self._pending.put_nowait((keys, self.bindings[keys]))
            except queue.Full:
                log.warning("hotkeys: %s ignored, %d presses still waiting", keys, PENDING_MAX)

        return pressed

    # -- action thread ---------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                keys, command = self._pending.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                self._run(command, f"hotkey {keys}")
                self.fired += 1
            except ActionError:
                pass  # already logged by the controls, with the reason
            except Exception:
                log.exception("hotkeys: %s (%s) failed", keys, command)


def _wait_ready(listener, timeout: float) -> bool:
    """pynput's `wait()` blocks forever when the listener thread dies first: wait beside it."""
    waiter = threading.Thread(target=listener.wait, name="hotkeys-ready", daemon=True)
    waiter.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not waiter.is_alive():
            return listener.is_alive()
        if not listener.is_alive():
            return False
        waiter.join(0.02)
    return listener.is_alive()


def _listener_error(listener) -> str | None:
    try:
        listener.join(0.1)  # re-raises the exception that ended the listener thread
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _why_unavailable(exc: BaseException) -> str:
    if sys.platform.startswith("linux") and not os.environ.get("DISPLAY"):
        return "no X display (DISPLAY is not set); global hotkeys need an X11 or XWayland session"
    text = str(exc).strip().splitlines()
    return f"pynput cannot reach the keyboard ({text[0] if text else type(exc).__name__})"
