"""The `control:` (local API) and `hotkeys:` config sections."""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from facecast.configbase import StrictModel
from facecast.control.actions import ActionError, parse_command
from facecast.control.keys import parse_combo

LOOPBACK_NAMES = frozenset({"localhost", "ip6-localhost"})
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: only programs on this computer can connect."""
    host = host.strip("[]")
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name or LAN address: reachable from other machines


class ControlConfig(StrictModel):
    enabled: bool = Field(True, description="serve the control API while the daemon runs")
    host: str = Field("127.0.0.1", min_length=1, description="address to listen on; loopback = this computer only")
    port: int = Field(8765, ge=1, le=65535)
    token: SecretStr | None = Field(  # SecretStr: `facecast config` and logs show ******** (streams are public)
        None, validate_default=True, description="secret every request must carry; required off loopback"
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="web pages allowed to call the API from a browser: exact origins (scheme://host[:port]), "
        '"null" = local files',
    )
    upload_max_mb: float = Field(20.0, gt=0, le=200, description="largest character image accepted")

    @field_validator("token")
    @classmethod
    def _token_off_loopback(cls, token: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"use at least {MIN_TOKEN_CHARS} characters, e.g. the output of: "
                'python -c "import secrets; print(secrets.token_urlsafe(24))"'
            )
        host = info.data.get("host")
        if host is not None and token is None and not is_loopback(host):
            raise ValueError(
                f"control.host {host!r} lets other machines reach the control API: set control.token "
                f"(a secret of {MIN_TOKEN_CHARS}+ characters) or keep control.host: 127.0.0.1"
            )
        return token

    @field_validator("allowed_origins")
    @classmethod
    def _exact_origins(cls, origins: list[str]) -> list[str]:
        return [normalise_origin(o) for o in origins]

    @property
    def secret(self) -> str | None:
        """The token itself (None when unset)."""
        return self.token.get_secret_value() if self.token is not None else None


def normalise_origin(origin: str) -> str:
    """An origin as a browser sends it in the Origin header (lower case, no default port, no slash),
    or ValueError: only exact origins are allowed, never patterns or whole hosts."""
    text = origin.strip().rstrip("/").lower()
    if text == "null":
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or "*" in text
        or parts.path
        or parts.query
        or parts.fragment
        or parts.username
        or parts.password
    ):
        raise ValueError(
            f"{origin!r} is not an origin: write scheme://host[:port] exactly as the page's address "
            "starts, e.g. http://localhost:3000 (no paths, no wildcards), or null for local files"
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    default = {"http": 80, "https": 443}[parts.scheme]
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None and port != default else "")


def _default_bindings() -> dict[str, str | None]:
    bindings: dict[str, str | None] = {f"<ctrl>+<alt>+{i}": f"character {i}" for i in range(1, 10)}
    bindings.update(
        {
            "<ctrl>+<alt>+n": "next_character",
            "<ctrl>+<alt>+p": "previous_character",
            "<ctrl>+<alt>+a": "effect animate",
            "<ctrl>+<alt>+s": "effect swap",
            "<ctrl>+<alt>+0": "effect passthrough",
            "<ctrl>+<alt>+f": "freeze",
            "<ctrl>+<alt>+c": "recalibrate",
            "<ctrl>+<alt>+o": "debug_overlay",
            "<ctrl>+<alt>+v": "preview",
            "<ctrl>+<alt>+r": "record",
        }
    )
    return bindings


class HotkeysConfig(StrictModel):
    enabled: bool = Field(True, description="listen for the global hotkeys while the daemon runs")
    bindings: dict[str, str | None] = Field(
        default_factory=_default_bindings,
        description="key combination (pynput notation) -> action with its arguments; null unbinds",
    )

    @field_validator("bindings")
    @classmethod
    def _valid_bindings(cls, bindings: dict[str, Any]) -> dict[str, str | None]:
        seen: dict[frozenset[str], str] = {}
        for keys, command in bindings.items():
            try:
                combo = parse_combo(keys)
            except ValueError as exc:
                raise ValueError(f"{keys!r}: malformed key combination: {exc}") from None
            if combo.parts in seen:
                raise ValueError(f"{keys!r} and {seen[combo.parts]!r} are the same key combination")
            seen[combo.parts] = keys
            if command is None:
                continue
            try:
                parse_command(command)
            except ActionError as exc:
                raise ValueError(f"{keys!r}: {exc.message}") from None
        return bindings

    def active(self) -> dict[str, str]:
        """The bindings that are on (null = unbound)."""
        return {keys: command for keys, command in self.bindings.items() if command is not None}
