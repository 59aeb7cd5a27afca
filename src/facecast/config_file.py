"""Reading the config file and the --set overrides into plain YAML data, before any model checks it.

Apart from `config.py`, whose models import every stage's module: `facecast ctl`, which needs only
the `control:` section, reads the file through here and starts in a sixth of the time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG_FILE = "config.yaml"


class ConfigError(ValueError):
    """A config problem, already phrased as one line per problem for the streamer."""


def default_config_path() -> Path | None:
    """FACECAST_CONFIG, else ./config.yaml when it exists, else None (built-in defaults)."""
    env = os.environ.get("FACECAST_CONFIG")
    if env:
        return Path(env)
    local = Path(DEFAULT_CONFIG_FILE)
    return local if local.is_file() else None


def read_config_file(path: Path | None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[dict[str, Any], str]:
    """The file's sections with the overrides applied, and where they came from (for messages)."""
    raw: dict[str, Any] = {}
    origin = "defaults"
    if path is not None:
        origin = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror or exc}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}".replace("\n", " ")) from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping of sections")
        raw = loaded or {}
    for item in overrides:
        apply_override(raw, item)
    return raw, origin


DISCRIMINATORS = ("type", "backend")  # keys that pick a plug-in (outputs' type, effects' backend)


def apply_override(raw: dict[str, Any], item: str) -> None:
    """`a.b.c=value`: the value is read as YAML, so 30, true, [1, 2] and {type: null} work."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set capture.fps=30")
    parts = key.strip().split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node = child
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    if parts[-1] in DISCRIMINATORS and node.get(parts[-1], parsed) != parsed:
        node.clear()  # another backend: the old one's keys do not apply to it
    node[parts[-1]] = parsed
