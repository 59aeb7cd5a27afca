"""Key combinations, action text, and the `control:` / `hotkeys:` config sections."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from facecast.config import Config, ConfigError, load_config
from facecast.control.actions import ACTIONS, ActionError, parse_command
from facecast.control.config import ControlConfig, is_loopback
from facecast.control.keys import KEY_NAMES, parse_combo
from tests.conftest import REPO, run_facecast

# -- key combinations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("<ctrl>+<alt>+2", "<ctrl>+<alt>+2"),
        ("<Ctrl>+<ALT>+A", "<ctrl>+<alt>+a"),
        ("<f9>", "<f9>"),
        ("<ctrl>++", "<ctrl>++"),  # '+' itself as the key, as pynput reads it
        ("<shift>+<65>", "<shift>+<65>"),
        ("<cmd>+<page_up>", "<cmd>+<page_up>"),
    ],
)
def test_combo_canonical_form(text: str, canonical: str) -> None:
    assert parse_combo(text).text == canonical


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("<ctrl>+", "ends with '+'"),
        ("<ctrl>+<bogus>", "unknown key '<bogus>'"),
        ("ctrl+alt+2", "'ctrl' is not a key"),
        ("<ctrl>+<ctrl>+1", "same key twice"),
        ("<ctrl>+A+a", "same key twice"),
        (" <f9>", "spaces"),
    ],
)
def test_malformed_combos_say_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_combo(text)


def test_key_names_are_pynputs() -> None:
    """Our display-free parser knows pynput's key names (its dummy backend imports without a display;
    the parse itself is compared with pynput's under Xvfb in test_control_hotkeys.py)."""
    env = dict(os.environ, PYNPUT_BACKEND="dummy")
    env.pop("DISPLAY", None)
    probe = "import json; from pynput.keyboard import Key; print(json.dumps(sorted(Key.__members__)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == set(KEY_NAMES)


# -- action text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "action", "args"),
    [
        ("character 2", "character", {"key": 2}),
        ("character astronaut", "character", {"key": "astronaut"}),
        ("next-character", "next_character", {}),
        ("effect debug", "effect", {"name": "debug"}),
        ("freeze", "freeze", {"on": None}),
        ("freeze on", "freeze", {"on": True}),
        ("record stop", "record", {"on": False}),
        ("record start", "record", {"on": True}),
        ("output record off", "output", {"name": "record", "on": False}),
        ("output name=ndi on=toggle", "output", {"name": "ndi", "on": None}),
        ("QUIT", "quit", {}),
        ('character "Mr Bean"', "character", {"key": "Mr Bean"}),
    ],
)
def test_parse_command(text: str, action: str, args: dict) -> None:
    command = parse_command(text)
    assert command.spec.name == action
    assert command.args.model_dump() == args


@pytest.mark.parametrize(
    ("text", "status", "reason"),
    [
        ("", 400, "empty action"),
        ("dance", 404, "unknown action 'dance'; known: character"),
        ("character", 400, r"key: Field required \(usage: character KEY\)"),
        ("character 0", 400, "positions start at 1"),
        ("character 1 2", 400, "too many arguments"),
        ("freeze maybe", 400, "'maybe' is not on/off/toggle"),
        ("output", 400, "usage: output NAME"),
        ("freeze colour=red", 400, "freeze has no argument 'colour'"),
        ('character "Mr Bean', 400, "No closing quotation"),
    ],
)
def test_bad_commands_say_why(text: str, status: int, reason: str) -> None:
    with pytest.raises(ActionError, match=reason) as info:
        parse_command(text)
    assert info.value.status == status


def test_every_action_has_a_usage_and_summary() -> None:
    expected = {
        "character",
        "next_character",
        "previous_character",
        "effect",
        "freeze",
        "recalibrate",
        "output",
        "preview",
        "record",
        "debug_overlay",
        "quit",
    }
    assert expected <= set(ACTIONS)
    for spec in ACTIONS.values():
        assert spec.usage.startswith(spec.name) and spec.summary.endswith(".")


# -- config sections ---------------------------------------------------------------------------------


def test_config_yaml_documents_the_control_sections_with_the_defaults() -> None:
    raw = yaml.safe_load((REPO / "config.yaml").read_text())
    defaults = Config().model_dump(mode="json")
    for section in ("control", "hotkeys"):
        assert raw[section] == defaults[section], section
    text = (REPO / "config.yaml").read_text()
    block = text[text.index("\ncontrol:") : text.index("\nlogging:")]
    for line in block.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":") and '"<ctrl>+<alt>+' not in line:
            assert "#" in line, f"undocumented key: {line}"


def test_default_bindings_parse_and_cover_the_actions() -> None:
    bindings = Config().hotkeys.active()
    assert bindings["<ctrl>+<alt>+2"] == "character 2"
    used = {parse_command(c).spec.name for c in bindings.values()}
    assert {
        "character",
        "next_character",
        "previous_character",
        "effect",
        "freeze",
        "recalibrate",
        "debug_overlay",
        "preview",
        "record",
    } <= used


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            'hotkeys.bindings={"<ctrl>+<bogus>": freeze}',
            "hotkeys.bindings.*'<ctrl>\\+<bogus>': malformed key combination: unknown key '<bogus>'",
        ),
        ('hotkeys.bindings={"<f9>": "dance 3"}', "hotkeys.bindings.*'<f9>': unknown action 'dance'"),
        ('hotkeys.bindings={"<f9>": "character"}', "hotkeys.bindings.*'<f9>': character: key: Field required"),
        (
            'hotkeys.bindings={"<ALT>+<ctrl>+1": freeze}',
            "'<ALT>\\+<ctrl>\\+1' and '<ctrl>\\+<alt>\\+1' are the same key combination",
        ),
        ("control.host=0.0.0.0", "control.token = None: control.host '0.0.0.0' lets other machines reach"),
        ("control.token=short", "control.token = 'short': use at least 16 characters"),
        ("control.port=0", "control.port = 0"),
    ],
)
def test_config_errors_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_unbinding_a_default_and_binding_another_key() -> None:
    cfg = load_config(None, ['hotkeys.bindings={"<ctrl>+<alt>+f": null, "<f9>": "freeze on"}'])
    active = cfg.hotkeys.active()
    assert "<ctrl>+<alt>+f" not in active
    assert active["<f9>"] == "freeze on"
    assert active["<ctrl>+<alt>+1"] == "character 1"  # the other defaults stay


def test_non_loopback_bind_with_a_token_is_accepted_and_the_token_is_never_printed() -> None:
    cfg = load_config(None, ["control.host=0.0.0.0", "control.token=0123456789abcdef"])
    assert cfg.control.host == "0.0.0.0" and cfg.control.secret == "0123456789abcdef"
    result = run_facecast("config", "--set", "control.host=0.0.0.0", "--set", "control.token=0123456789abcdef")
    assert result.returncode == 0 and "0123456789abcdef" not in result.stdout and "token: '**********'" in result.stdout


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("192.168.1.20", False),
        ("::", False),
        ("studio.lan", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_run_refuses_a_non_loopback_bind_without_a_token() -> None:
    result = run_facecast("run", "--set", "capture.source=synthetic", "--set", "control.host=0.0.0.0", "--frames", "1")
    assert result.returncode == 2
    assert "control.token" in result.stderr and "0.0.0.0" in result.stderr
    assert "Traceback" not in result.stderr


def test_control_server_refuses_a_non_loopback_bind_without_a_token_even_unvalidated() -> None:
    from facecast.control.api import ControlServer
    from facecast.pipeline.stage import StartupError

    cfg = ControlConfig.model_construct(**{**ControlConfig().model_dump(), "host": "0.0.0.0", "token": None})
    with pytest.raises(StartupError, match=r"needs control\.token"):
        ControlServer(controls=None, cfg=cfg)  # type: ignore[arg-type]


def test_awkward_bindings_are_warned_about(caplog) -> None:
    from facecast.control.service import _warn_if_awkward

    _warn_if_awkward("<ctrl>+<shift>+1")
    _warn_if_awkward("k")
    _warn_if_awkward("<ctrl>+<alt>+1")
    _warn_if_awkward("<f9>")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "'<ctrl>+<shift>+1' may never fire" in messages[0]
    assert "'k' has no modifier" in messages[1]
