"""The live controls as named actions. Hotkeys, the control API and `facecast ctl` all run them here.

An action is a name, a pydantic model of its arguments and a handler. The same action can be
written as text (`"character 2"`, `"output record off"`: hotkey bindings, `facecast ctl`) or as JSON
(`POST /actions/character {"key": 2}`); both end in the same validated arguments.
"""

from __future__ import annotations

import logging
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, ValidationError, WithJsonSchema, field_validator

from facecast.configbase import StrictModel

if TYPE_CHECKING:
    from facecast.daemon import Daemon

log = logging.getLogger(__name__)


class ActionError(Exception):
    """An action that cannot be done now; `status` is the HTTP status the API answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


# -- arguments ---------------------------------------------------------------------------------
class NoArgs(StrictModel):
    pass


class SwitchArgs(StrictModel):
    on: bool | None = Field(None, description="true = on, false = off, omitted or null = toggle")


class CharacterArgs(StrictModel):
    # The schema states what the validators below accept: a position from 1, or a name that is not
    # blank and not all zeros (digit strings are positions).
    key: Annotated[
        int | str,
        WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"[^\s0]"}]}),
    ] = Field(description="1-based position in the character list, or the character's name")

    @field_validator("key", mode="before")
    @classmethod
    def _digits_are_positions(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
            return int(value)
        return value

    @field_validator("key")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("positions start at 1")
        if isinstance(value, str) and not value.strip():
            raise ValueError("empty character name")
        return value


class EffectArgs(StrictModel):
    name: str = Field(min_length=1, description="effect name, e.g. animate, swap, passthrough")


class OutputArgs(StrictModel):
    name: str = Field(min_length=1, description="output name: its key under `outputs:` in the config")
    on: bool | None = Field(None, description="true = start, false = stop, omitted or null = toggle")


# Words accepted in text form for an on/off argument (omitted = toggle).
ON_WORDS = frozenset({"on", "start", "true", "yes", "1"})
OFF_WORDS = frozenset({"off", "stop", "false", "no", "0"})


# -- the registry ------------------------------------------------------------------------------
Handler = Callable[["Daemon", Any], str]


@dataclass(frozen=True, slots=True)
class ActionSpec:
    name: str
    summary: str
    args: type[BaseModel]
    handler: Handler

    @property
    def usage(self) -> str:
        """`character KEY`, `freeze [on|off]`: the text form, for help and error messages."""
        words = [self.name]
        for field_name, field in self.args.model_fields.items():
            word = "on|off" if _is_switch(field.annotation) else field_name.upper()
            words.append(word if field.is_required() else f"[{word}]")
        return " ".join(words)

    def parse(self, tokens: Sequence[str]) -> BaseModel:
        """Positional text arguments (`["record", "off"]`) or `name=value` ones, validated."""
        fields = list(self.args.model_fields.items())
        data: dict[str, Any] = {}
        positional = [t for t in tokens if "=" not in t]
        if len(positional) > len(fields):
            raise ActionError(f"too many arguments for {self.usage!r}", 400)
        for (field_name, _), token in zip(fields, positional, strict=False):
            data[field_name] = token
        for token in tokens:
            if "=" in token:
                key, _, value = token.partition("=")
                if key not in self.args.model_fields:
                    raise ActionError(f"{self.name} has no argument {key!r}; usage: {self.usage}", 400)
                data[key] = value
        for field_name, field in fields:
            if field_name in data and _is_switch(field.annotation):
                data[field_name] = _switch_word(self.name, data[field_name])
        return self.validate(data)

    def validate(self, data: Any) -> BaseModel:
        try:
            return self.args.model_validate(data if data is not None else {})
        except ValidationError as exc:
            raise ActionError(f"{self.name}: {describe_validation(exc)} (usage: {self.usage})", 400) from None


def _is_switch(annotation: Any) -> bool:
    return annotation == (bool | None)


def _switch_word(action: str, word: str) -> bool | None:
    w = word.strip().lower()
    if w in ON_WORDS:
        return True
    if w in OFF_WORDS:
        return False
    if w == "toggle":
        return None
    raise ActionError(f"{action}: {word!r} is not on/off/toggle", 400)


def describe_validation(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"]) or "arguments"
        msg = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            msg = "unknown argument"
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


ACTIONS: dict[str, ActionSpec] = {}


def action(name: str, args: type[BaseModel], summary: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        ACTIONS[name] = ActionSpec(name, summary, args, handler)
        return handler

    return register


def find_action(name: str) -> ActionSpec:
    spec = ACTIONS.get(name.strip().lower().replace("-", "_"))
    if spec is None:
        raise ActionError(f"unknown action {name!r}; known: {', '.join(ACTIONS)}", 404)
    return spec


@dataclass(frozen=True, slots=True)
class Command:
    """An action with validated arguments, ready to run."""

    spec: ActionSpec
    args: BaseModel

    def __str__(self) -> str:
        words = [self.spec.name]
        for _key, value in self.args.model_dump().items():
            if value is not None:
                words.append(("on" if value else "off") if isinstance(value, bool) else str(value))
        return " ".join(words)


def parse_command(text: str | Sequence[str]) -> Command:
    """`"character 2"` or `["output", "record", "off"]` -> Command; ActionError says what is wrong.
    Text is split like a shell line, so a name with spaces is written in quotes."""
    if isinstance(text, str):
        try:
            tokens = shlex.split(text)  # `character "Mr Bean"`
        except ValueError as exc:
            raise ActionError(f"{text!r}: {exc}", 400) from None
    else:
        tokens = list(text)
    if not tokens:
        raise ActionError("empty action; known: " + ", ".join(ACTIONS), 400)
    spec = find_action(tokens[0])
    return Command(spec, spec.parse(tokens[1:]))


# -- the actions -------------------------------------------------------------------------------
def _library(d: Daemon):
    library = getattr(d, "characters", None)
    if library is None:
        raise ActionError("no character library is loaded", 409)
    return library


def _character_label(library, character) -> str:
    names = library.names()
    position = names.index(character.name) + 1 if character.name in names else None
    return f"character {position}/{len(names)}: {character.name}" if position else f"character {character.name}"


@action("character", CharacterArgs, "Select a character by its position (1-9 on the hotkeys) or its name.")
def _character(d: Daemon, a: CharacterArgs) -> str:
    library = _library(d)
    try:
        character = library.select(a.key)
    except (KeyError, IndexError):
        names = library.names()
        listing = ", ".join(f"{i} {n}" for i, n in enumerate(names, 1)) or "the character folder is empty"
        raise ActionError(f"no character {a.key!r}; there are {len(names)}: {listing}", 404) from None
    except ValueError as exc:  # CharacterError: the image is there but cannot be used
        raise ActionError(f"character {a.key!r} cannot be used: {exc}", 409) from None
    return _character_label(library, character)


def _step_character(d: Daemon, forward: bool) -> str:
    library = _library(d)
    if not library.names():
        raise ActionError("the character folder is empty: add a portrait first", 409)
    try:
        character = library.next() if forward else library.previous()
    except ValueError as exc:
        raise ActionError(f"the {'next' if forward else 'previous'} character cannot be used: {exc}", 409) from None
    return _character_label(library, character)


@action("next_character", NoArgs, "Select the next character (wraps around).")
def _next_character(d: Daemon, a: NoArgs) -> str:
    return _step_character(d, True)


@action("previous_character", NoArgs, "Select the previous character (wraps around).")
def _previous_character(d: Daemon, a: NoArgs) -> str:
    return _step_character(d, False)


@action("effect", EffectArgs, "Switch the effect (animate, swap, passthrough, debug...).")
def _effect(d: Daemon, a: EffectArgs) -> str:
    if a.name not in d.effect.effects:
        raise ActionError(f"unknown effect {a.name!r}; known: {', '.join(d.effect.effects)}", 404)
    d.effect.select(a.name)
    return f"effect {a.name}"


@action("freeze", SwitchArgs, "Freeze the output on the current frame, or let it run again.")
def _freeze(d: Daemon, a: SwitchArgs) -> str:
    on = (not d.effect.frozen) if a.on is None else a.on
    d.effect.set_frozen(on)
    return "frame frozen" if on else "frame live"


@action("recalibrate", NoArgs, "Take the current head pose and expression as the neutral pose.")
def _recalibrate(d: Daemon, a: NoArgs) -> str:
    name = d.effect.requested
    if not d.effect.recalibrate():
        able = [n for n, e in d.effect.effects.items() if callable(getattr(e, "recalibrate", None))]
        hint = f" (effects that have one: {', '.join(able)})" if able else ""
        raise ActionError(f"effect {name} has no neutral pose to recalibrate{hint}", 409)
    return f"{name}: new neutral pose from the next tracked frames (hold a relaxed, straight face)"


def _set_outputs(d: Daemon, names: list[str], on: bool | None) -> dict[str, bool]:
    status = d.output.status()
    for name in names:
        if name not in status:
            raise ActionError(f"unknown output {name!r}; configured: {', '.join(status) or 'none'}", 404)
    target = (not any(status[n]["enabled"] for n in names)) if on is None else on
    changed = {}
    for name in names:
        try:
            d.output.set_enabled(name, target)
        except Exception as exc:  # OutputUnavailable, OSError...: this output cannot start here
            raise ActionError(f"output {name} cannot start: {exc}", 409) from None
        changed[name] = target
    return changed


def _outputs_of_type(d: Daemon, kind: str) -> list[str]:
    names = [n for n, s in d.output.status().items() if s["type"] == kind]
    if not names:
        raise ActionError(f"no {kind} output in the config: add one under outputs: (type: {kind})", 409)
    return names


def _describe_outputs(d: Daemon, changed: dict[str, bool]) -> str:
    status = d.output.status()
    words = []
    for name, on in changed.items():
        path = status[name].get("path")
        words.append(f"{name} {'on' if on else 'off'}" + (f" ({path})" if on and path else ""))
    return ", ".join(words)


@action("output", OutputArgs, "Start, stop or toggle one output by its name in the config.")
def _output(d: Daemon, a: OutputArgs) -> str:
    return "output " + _describe_outputs(d, _set_outputs(d, [a.name], a.on))


@action("preview", SwitchArgs, "Show or hide the preview window (every output of type preview).")
def _preview(d: Daemon, a: SwitchArgs) -> str:
    changed = _set_outputs(d, _outputs_of_type(d, "preview"), a.on)
    return f"preview {'on' if any(changed.values()) else 'off'}"


@action("record", SwitchArgs, "Start or stop recording (every output of type record); each start is a new file.")
def _record(d: Daemon, a: SwitchArgs) -> str:
    before = d.output.status()
    changed = _set_outputs(d, _outputs_of_type(d, "record"), a.on)
    if any(changed.values()):
        return "recording: " + _describe_outputs(d, changed)
    files = [before[n]["path"] for n in changed if before[n].get("path")]
    return "recording stopped" + (f" ({', '.join(files)})" if files else "")


@action("debug_overlay", SwitchArgs, "Draw what the tracker sees (landmarks, pose, fps) over the output.")
def _debug_overlay(d: Daemon, a: SwitchArgs) -> str:
    on = (not d.effect.overlay) if a.on is None else a.on
    d.effect.set_overlay(on)
    return f"debug overlay {'on' if on else 'off'}"


@action(
    "quit",
    NoArgs,
    "Stop the daemon; answers once every output has closed, with the recordings it finalised "
    "(or the output still busy at pipeline.shutdown_timeout_s).",
)
def _quit(d: Daemon, a: NoArgs) -> str:
    d.request_stop("quit action")
    # The main loop's own stop waits for this one: the answer says what really happened.
    return d.stop_and_report().text()


# -- running them ------------------------------------------------------------------------------
Listener = Callable[[dict[str, Any]], None]


class Controls:
    """Runs actions on one daemon, one at a time, and tells subscribers (the WebSocket) what changed."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._listeners_lock = threading.Lock()
        # () -> the global hotkeys' status, set by whoever runs them (control/service.py)
        self.hotkeys_status: Callable[[], dict[str, Any]] | None = None

    def check(self, command: Command) -> None:
        """Names that only this daemon knows (effects, outputs): for start-up checks of hotkey bindings."""
        args = command.args  # each action's own arguments model (ActionSpec.args)
        if isinstance(args, EffectArgs) and args.name not in self.daemon.effect.effects:
            raise ActionError(f"unknown effect {args.name!r}; known: {', '.join(self.daemon.effect.effects)}", 404)
        if isinstance(args, OutputArgs) and args.name not in self.daemon.output.status():
            raise ActionError(
                f"unknown output {args.name!r}; configured: {', '.join(self.daemon.output.status())}", 404
            )
        if isinstance(args, settings.SetArgs):  # a live setting bound to a key: its key and value are checked now
            settings.find(self.daemon.effect, args.key).check(args.value)

    def run(self, command: Command | str | Sequence[str], source: str) -> str:
        """Run an action; returns what it did in a few words. ActionError when it cannot be done."""
        if not isinstance(command, Command):
            command = parse_command(command)
        with self._lock:
            try:
                message = command.spec.handler(self.daemon, command.args)
            except ActionError as exc:
                log.warning("%s: %s refused: %s", source, command, exc.message)
                raise
        log.info("%s: %s -> %s", source, command, message)
        self._publish(
            {
                "type": "action",
                "action": command.spec.name,
                "args": command.args.model_dump(),
                "source": source,
                "message": message,
            }
        )
        return message

    def add_character(self, filename: str, data: bytes, source: str):
        """Add an uploaded image to the character library, checked exactly like the folder's files."""
        library = _library(self.daemon)
        with self._lock:
            try:
                character = library.add_file(filename, data)
            except ValueError as exc:  # CharacterError: why the image is refused; nothing was saved
                raise ActionError(f"{filename}: {exc}", 422) from None
            except OSError as exc:
                raise ActionError(f"{filename}: cannot save it ({exc.strerror or exc})", 409) from None
        message = f"character {character.name} added"
        log.info("%s: %s", source, message)
        self._publish(
            {
                "type": "action",
                "action": "add_character",
                "args": {"filename": filename},
                "source": source,
                "message": message,
            }
        )
        return character

    def state(self) -> dict[str, Any]:
        """What a streamer wants to see at a glance; `live` holds the figures that change every frame."""
        d = self.daemon
        outputs = d.output.status()
        effect = d.effect
        state: dict[str, Any] = {
            "effect": effect.requested,
            "effects": list(effect.effects),
            "character": None,
            "characters": [],
            "frozen": effect.frozen,
            "debug_overlay": effect.overlay,
            "can_recalibrate": effect.can_recalibrate(),
            "preview": any(s["enabled"] for s in outputs.values() if s["type"] == "preview"),
            "recording": any(s["enabled"] for s in outputs.values() if s["type"] == "record"),
            "outputs": outputs,
            "hotkeys": self.hotkeys_status() if self.hotkeys_status else {"listening": False, "reason": "not running"},
            "stopping": d.stopping,
        }
        library = getattr(d, "characters", None)
        if library is not None:
            names = library.names()
            active = library.active
            state["characters"] = names
            if active is not None:
                state["character"] = {
                    "name": active.name,
                    "index": names.index(active.name) + 1 if active.name in names else None,
                }
        state["settings"] = settings.current(effect)  # every live setting (the `set` action)
        snap = d.stats
        state["live"] = {
            "fps": round(snap.fps(), 1),
            "frames": snap.frames_out,
            "faces": snap.faces_last,
            "uptime_s": round(time.monotonic() - snap.started_at, 1),
        }
        return state

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call `listener(event)` after every action (from the thread that ran it); returns the unsubscribe."""
        with self._listeners_lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._listeners_lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _publish(self, event: dict[str, Any]) -> None:
        with self._listeners_lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                log.exception("control event listener failed")


# More actions live in their own modules; importing them registers them (they import this one).
from facecast.control import settings  # noqa: E402  `set`: live effect settings
