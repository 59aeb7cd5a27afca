"""The control surfaces of a running daemon: the local API and the global hotkeys, started and
stopped together by `run_daemon`."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from facecast.control.actions import ActionError, Command, Controls, parse_command
from facecast.control.keys import parse_combo
from facecast.pipeline.stage import StartupError

if TYPE_CHECKING:
    from facecast.control.api import ControlServer
    from facecast.control.hotkeys import HotkeyListener
    from facecast.daemon import Daemon

log = logging.getLogger(__name__)


def hotkey_commands(controls: Controls) -> dict[str, Command]:
    """The enabled bindings as commands, checked against this daemon's effects and outputs."""
    cfg = controls.daemon.cfg.hotkeys
    if not cfg.enabled:
        return {}
    commands = {}
    for keys, text in cfg.active().items():
        try:
            command = parse_command(text)
            controls.check(command)
        except ActionError as exc:
            raise StartupError(f"hotkeys.bindings {keys!r}: {exc.message}") from None
        _warn_if_awkward(keys)
        commands[keys] = command
    return commands


def _warn_if_awkward(keys: str) -> None:
    """Bindings that are valid but rarely do what the streamer wants."""
    combo = parse_combo(keys)
    chars = [p for p in combo.parts if len(p) == 1]
    if "<shift>" in combo.parts and any(not c.isalpha() for c in chars):
        log.warning(
            "hotkeys: %r may never fire: with Shift held the keyboard sends another character "
            "(e.g. '!' for '1'); prefer <ctrl>/<alt> or a named key like <f5>",
            keys,
        )
    if chars and not combo.has_modifier:
        log.warning("hotkeys: %r has no modifier: it fires whenever you type it, in chat or in a game", keys)


class ControlSurfaces:
    """Created before the pipeline starts (a busy port or a bad binding stops start-up at once),
    started once it runs, stopped within the daemon's shutdown budget."""

    def __init__(self, daemon: Daemon) -> None:
        self.controls = daemon.controls
        self.server: ControlServer | None = None
        self.hotkeys: HotkeyListener | None = None
        commands = hotkey_commands(self.controls)
        if commands:
            from facecast.control.hotkeys import HotkeyListener

            self.hotkeys = HotkeyListener(commands, self.controls.run)
            self.controls.hotkeys_status = self.hotkeys.status
        else:
            reason = "hotkeys.enabled is false" if not daemon.cfg.hotkeys.enabled else "no key is bound"
            self.controls.hotkeys_status = lambda: {"listening": False, "reason": reason, "bindings": {}}
        cfg = daemon.cfg.control
        if cfg.enabled:
            from facecast.control.api import ControlServer

            self.server = ControlServer(self.controls, cfg)
            self.server.bind()

    def start(self) -> None:
        if self.hotkeys is not None:  # first, so that the API never reports them as starting
            self.hotkeys.start()
        if self.server is not None:
            self.server.start()

    def stop_soon(self) -> None:
        """Stop taking new key presses and requests (the pipeline stops meanwhile)."""
        if self.hotkeys is not None:
            self.hotkeys.stop(0.3)
        if self.server is not None:
            self.server.stop_soon()

    def stop(self, timeout: float) -> None:
        t0 = time.monotonic()
        self.stop_soon()
        if self.server is not None:
            self.server.stop(max(0.2, timeout - (time.monotonic() - t0)))
