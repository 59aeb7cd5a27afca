"""`facecast ctl`: a small client of the control API, for scripts and Stream Deck buttons.

It finds the daemon through the same config as `facecast run` (control.host/port/token).
Exit status: 0 done, 1 the daemon refused (the reason is printed), 2 usage or config error,
3 no daemon answers.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx

from facecast.control.config import ControlConfig

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class Unreachable(Exception):
    pass


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def base_url(cfg: ControlConfig) -> str:
    """Where to reach the daemon: a wildcard bind (0.0.0.0, ::) is reached through loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(cfg.host, cfg.host).strip("[]")
    return f"http://[{host}]:{cfg.port}" if ":" in host else f"http://{host}:{cfg.port}"


class ControlClient:
    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, trust_env=False)
        self.token = token

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(
                f"no facecast daemon answers at {self.url} ({type(exc).__name__}); is `facecast run` running, "
                "with the same control.host/control.port?"
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text.strip() or response.reason_phrase}
        if response.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise Refused(response.status_code, message or f"HTTP {response.status_code}")
        return body

    def state(self) -> dict[str, Any]:
        return self.request("GET", "/state")

    def act(self, action: str, args: list[str]) -> dict[str, Any]:
        return self.request("POST", "/actions", json={"action": action, "args": args})

    def upload(self, path: Path, select: bool) -> dict[str, Any]:
        with path.open("rb") as f:
            return self.request("POST", "/characters", params={"select": select}, files={"file": (path.name, f)})


def format_state(state: dict[str, Any]) -> str:
    character = state.get("character")
    if character:
        count = len(state.get("characters") or [])
        position = f"{character['index']}/{count} " if character.get("index") else ""
        who = f"{position}{character['name']}"
    else:
        who = "none" if state.get("characters") is not None else "-"
    effect = state["effect"] + "".join(
        f" ({label})" for key, label in (("frozen", "frozen"), ("debug_overlay", "debug overlay")) if state.get(key)
    )
    outputs = (
        ", ".join(
            f"{name} {'on' if o['enabled'] else 'off'}"
            + (f" ({o['path']})" if o.get("enabled") and o.get("path") else "")
            for name, o in state.get("outputs", {}).items()
        )
        or "none"
    )
    live = state.get("live", {})
    lines = [
        f"character  {who}",
        f"effect     {effect}",
        f"outputs    {outputs}",
        f"fps        {live.get('fps', 0):.1f}  (faces {live.get('faces', 0)}, frames {live.get('frames', 0)})",
    ]
    hotkeys = state.get("hotkeys") or {}
    if hotkeys:
        listening = f"listening ({len(hotkeys.get('bindings') or {})} bound)"
        lines.append("hotkeys    " + (listening if hotkeys.get("listening") else f"off: {hotkeys.get('reason')}"))
    if state.get("stopping"):
        lines.append("stopping")
    return "\n".join(lines)


def format_stats(stats: dict[str, Any]) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lat = stats.get("latency_ms", {})
    lines = [
        f"fps {stats.get('fps', 0):.1f}, latency p50 {ms(lat.get('p50'))} p95 {ms(lat.get('p95'))} "
        f"p99 {ms(lat.get('p99'))} ms, frames {stats.get('frames', 0)}"
    ]
    for name, stage in stats.get("stages", {}).items():
        lines.append(f"  {name:<9} p50 {ms(stage.get('p50'))} ms  p95 {ms(stage.get('p95'))} ms")
    dropped = stats.get("dropped", {})
    if dropped:
        lines.append("dropped    " + ", ".join(f"{k} {v}" for k, v in dropped.items()))
    errors = stats.get("errors", {})
    if errors:
        lines.append("errors     " + ", ".join(f"{k} {v}" for k, v in errors.items()))
    return "\n".join(lines)


def run_ctl(
    cfg: ControlConfig,
    command: str,
    args: list[str],
    *,
    url: str | None = None,
    token: str | None = None,
    as_json: bool = False,
    timeout: float = 5.0,
) -> int:
    logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at info level
    if "--json" in args:  # also accepted after the command: `facecast ctl state --json`
        args = [a for a in args if a != "--json"]
        as_json = True
    client = ControlClient(url or base_url(cfg), token if token is not None else cfg.secret, timeout)
    try:
        return _dispatch(client, command, args, as_json)
    except Unreachable as exc:
        print(f"facecast ctl: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except Refused as exc:
        print(f"facecast ctl: {exc.message}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt:
        return EXIT_OK
    finally:
        client.close()


def _dispatch(client: ControlClient, command: str, args: list[str], as_json: bool) -> int:
    def show(body: Any, text: str) -> None:
        print(json.dumps(body, indent=2) if as_json else text)

    if command in ("state", "stats", "actions", "characters", "watch") and args:
        print(f"facecast ctl {command} takes no arguments", file=sys.stderr)
        return EXIT_USAGE
    if command == "state":
        state = client.state()
        show(state, format_state(state))
    elif command == "stats":
        stats = client.request("GET", "/stats")
        show(stats, format_stats(stats))
    elif command == "actions":
        actions = client.request("GET", "/actions")
        show(actions, "\n".join(f"{a['usage']:<28} {a['summary']}" for a in actions))
    elif command == "characters":
        body = client.request("GET", "/characters")
        text = "\n".join(f"{'*' if c['active'] else ' '} {c['index']:>2} {c['name']}" for c in body["characters"])
        show(body, text or "the character folder is empty")
    elif command == "upload":
        select = "--select" in args
        paths = [a for a in args if a != "--select"]
        if len(paths) != 1:
            print("usage: facecast ctl upload PATH [--select]", file=sys.stderr)
            return EXIT_USAGE
        path = Path(paths[0])
        if not path.is_file():
            print(f"facecast ctl: {path}: no such file", file=sys.stderr)
            return EXIT_USAGE
        body = client.upload(path, select)
        show(body, body["message"])
    elif command == "watch":
        return _watch(client, as_json)
    else:
        body = client.act(command, args)
        show(body, body["message"])
    return EXIT_OK


def _watch(client: ControlClient, as_json: bool) -> int:
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    ws_url = "ws" + client.url.removeprefix("http") + "/ws?interval=5"
    headers = {"Authorization": f"Bearer {client.token}"} if client.token else None
    try:
        with connect(ws_url, additional_headers=headers, open_timeout=5) as ws:
            for text in ws:
                event = json.loads(text)
                if as_json:
                    print(json.dumps(event), flush=True)
                elif event["type"] == "state":
                    print(format_state(event["state"]), flush=True)
                elif event["type"] == "action":
                    print(f"[{event['source']}] {event['message']}", flush=True)
                elif event["type"] == "stats":
                    print(format_stats(event["stats"]).splitlines()[0], flush=True)
    except (OSError, WebSocketException) as exc:
        raise Unreachable(f"no facecast daemon streams at {ws_url} ({exc})") from None
    return EXIT_OK
