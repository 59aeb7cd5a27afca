"""The local control API (FastAPI on uvicorn): state, stats, every action, characters, a WebSocket.

Served on 127.0.0.1 by default, from a thread of the daemon. Every error is JSON `{"error": "..."}`
with a 4xx status that says what was wrong; OpenAPI docs at /docs.

Safety on loopback: a web page open in the streamer's browser can send requests to 127.0.0.1
too. Requests that a browser marks with a foreign `Origin` are refused (unless listed in
`control.allowed_origins`), and the `Host` header must name this computer, which defeats DNS
rebinding. Off loopback a token is required (checked at config load and again here).
"""

# No `from __future__ import annotations` here: the per-action routes are built at run time and
# FastAPI reads their annotations as real types.

import asyncio
import hmac
import json
import logging
import socket
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import anyio.abc
from fastapi import Body, FastAPI, File, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from facecast import __version__
from facecast.jobs.api import add_job_routes
from facecast.control.actions import ACTIONS, ActionError, ActionSpec, Command, Controls, find_action
from facecast.control.config import ControlConfig, is_loopback
from facecast.pipeline.stage import StartupError

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 1.0
EVENT_BACKLOG = 64  # WebSocket events waiting for a slow client; older ones are dropped


class ActionResult(BaseModel):
    ok: bool = True
    action: str
    message: str = Field(description="what the action did, in a few words")
    state: dict[str, Any] = Field(description="the state after the action (same as GET /state)")


class CommandRequest(BaseModel):
    action: str = Field(description="action name, e.g. character, freeze, output")
    args: list[str] = Field(default_factory=list, description='text arguments, e.g. ["2"] or ["record", "off"]')


class ErrorBody(BaseModel):
    error: str


ERRORS = {400: {"model": ErrorBody}, 404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody}}


def create_app(controls: Controls, cfg: ControlConfig) -> FastAPI:
    daemon = controls.daemon
    app = FastAPI(
        title="facecast control API",
        version=__version__,
        description=(
            "Live control of the facecast daemon: the same actions as the global hotkeys and "
            "`facecast ctl`. Errors are JSON `{\"error\": \"...\"}` with a 4xx status."
            + (" Every request needs `Authorization: Bearer <control.token>`." if cfg.secret else "")
        ),
    )
    app.state.upload_max_bytes = int(cfg.upload_max_mb * 1024 * 1024)

    # -- errors: always JSON with one readable line, never a traceback -------------------------
    @app.exception_handler(ActionError)
    async def _action_error(request: Request, exc: ActionError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("control API: %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}: {exc}); the daemon log has the details"},
            status_code=500,
        )

    app.add_middleware(GuardMiddleware, cfg=cfg)
    add_job_routes(app, lambda: daemon.jobs)  # /jobs: offline video jobs (facecast.jobs)

    # -- reading ---------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> dict[str, Any]:
        return {"name": "facecast", "version": __version__, "docs": "/docs", "state": "/state", "ws": "/ws"}

    @app.get("/state", summary="Active character, effect, outputs, switches and live fps")
    def get_state() -> dict[str, Any]:
        return controls.state()

    @app.get("/stats", summary="Pipeline figures: fps, latency percentiles per stage, drops, errors")
    def get_stats() -> dict[str, Any]:
        return jsonable_encoder(daemon.stats.snapshot())

    @app.get("/actions", summary="Every action with its text form and arguments")
    def list_actions() -> list[dict[str, Any]]:
        return [
            {"name": s.name, "usage": s.usage, "summary": s.summary, "args": s.args.model_json_schema()}
            for s in ACTIONS.values()
        ]

    # -- acting ----------------------------------------------------------------------------------
    def run(command: Command) -> ActionResult:
        message = controls.run(command, "api")
        return ActionResult(action=command.spec.name, message=message, state=controls.state())

    @app.post("/actions", response_model=ActionResult, responses=ERRORS,
              summary="Run an action written as text, e.g. {\"action\": \"output\", \"args\": [\"record\", \"off\"]}")
    def post_command(body: CommandRequest) -> ActionResult:
        spec = find_action(body.action)
        return run(Command(spec, spec.parse(body.args)))

    for spec in ACTIONS.values():
        _add_action_route(app, spec, run)

    # -- characters ------------------------------------------------------------------------------
    @app.get("/characters", summary="The characters in the library, in hotkey order")
    def get_characters() -> dict[str, Any]:
        library = _library(daemon)
        active = library.active
        return {
            "active": active.name if active is not None else None,
            "characters": [
                {"index": i, "name": name, "active": active is not None and name == active.name}
                for i, name in enumerate(library.names(), 1)
            ],
        }

    @app.post("/characters", status_code=201, responses=ERRORS | {413: {"model": ErrorBody}},
              summary="Add a character image (checked like the character folder); select=true also selects it")
    async def upload_character(
        request: Request,
        file: UploadFile = File(description="a portrait image (PNG, JPEG...) with one clear face"),
        select: bool = Query(False, description="select the new character at once"),
    ) -> dict[str, Any]:
        _library(daemon)  # 409 before reading the upload when there is no library
        limit = request.app.state.upload_max_bytes
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise ActionError(f"the image is larger than control.upload_max_mb ({cfg.upload_max_mb:g} MB)", 413)
        if not data:
            raise ActionError("the uploaded file is empty", 400)
        filename = file.filename or ""
        if not filename:
            raise ActionError("the upload needs a file name, e.g. portrait.png", 400)
        character = await run_in_threadpool(controls.add_character, filename, data, "api")
        message = f"character {character.name} added"
        if select:
            message = await run_in_threadpool(controls.run, ["character", character.name], "api")
        return {"ok": True, "character": character.name, "message": message, "state": controls.state()}

    # -- live stream -----------------------------------------------------------------------------
    @app.websocket("/ws")
    async def websocket(ws: WebSocket, interval: float = 1.0) -> None:
        """Streams `state` (at once and on every change), `action` (after each action) and `stats`
        (every `interval` seconds). Send `{"action": "freeze"}` (or with `"args": [...]`) to act."""
        await ws.accept()
        if not 0.1 <= interval <= 60:
            await ws.send_json({"type": "error", "error": "interval must be between 0.1 and 60 seconds"})
            await ws.close(code=1008)
            return
        await _stream(ws, controls, interval)

    _add_security_scheme(app, cfg)
    return app


def _add_action_route(app: FastAPI, spec: ActionSpec, run) -> None:
    needs_body = any(f.is_required() for f in spec.args.model_fields.values())
    default = Body(...) if needs_body else Body(None)

    def endpoint(args: spec.args = default) -> ActionResult:  # type: ignore[valid-type]
        return run(Command(spec, args if args is not None else spec.validate({})))

    endpoint.__name__ = f"action_{spec.name}"
    app.post(
        f"/actions/{spec.name}", response_model=ActionResult, responses=ERRORS,
        summary=spec.summary, description=f"Text form: `{spec.usage}`", tags=["actions"],
    )(endpoint)


def _library(daemon):
    library = getattr(daemon, "characters", None)
    if library is None:
        raise ActionError("no character library is loaded", 409)
    return library


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        msg = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":
            where, msg = "body", f"not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
        elif error.get("type") == "extra_forbidden":
            msg = "unknown field"
        parts.append(f"{where}: {msg}")
    return "; ".join(parts) or "invalid request"


async def _stream(ws: WebSocket, controls: Controls, interval: float) -> None:
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue(EVENT_BACKLOG)
    send_lock = asyncio.Lock()

    def on_event(event: dict[str, Any]) -> None:  # called from whichever thread ran the action
        def put() -> None:
            if events.full():
                events.get_nowait()  # a client this slow gets the newest events
            events.put_nowait(event)

        try:
            loop.call_soon_threadsafe(put)
        except RuntimeError:  # the server is shutting down and its loop is closed
            pass

    async def send(message: dict[str, Any]) -> None:
        async with send_lock:
            await ws.send_text(json.dumps(jsonable_encoder(message)))

    async def sender() -> None:
        last_state = controls.state()
        await send({"type": "state", "state": last_state})
        next_stats = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_stats:
                await send({"type": "stats", "stats": controls.daemon.stats.snapshot()})
                next_stats = now + interval
            try:
                event = await asyncio.wait_for(events.get(), timeout=max(0.0, min(0.5, next_stats - now)))
            except asyncio.TimeoutError:
                event = None
            if event is not None:
                await send(event)
            state = controls.state()
            if _without_live(state) != _without_live(last_state):
                await send({"type": "state", "state": state})
            last_state = state

    async def receiver() -> None:
        while True:
            text = await ws.receive_text()
            await send(await _ws_command(controls, text))

    async def until_done(part, group: anyio.abc.TaskGroup) -> None:
        try:
            await part()
        except (WebSocketDisconnect, ConnectionError):
            pass  # the client went away
        except RuntimeError as exc:  # sending on a socket that closed meanwhile
            log.debug("control WebSocket: %s", exc)
        finally:
            group.cancel_scope.cancel()

    unsubscribe = controls.subscribe(on_event)
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(until_done, sender, group)
            group.start_soon(until_done, receiver, group)
    finally:
        unsubscribe()


async def _ws_command(controls: Controls, text: str) -> dict[str, Any]:
    try:
        message = json.loads(text)
        if not isinstance(message, dict) or not isinstance(message.get("action"), str):
            raise ActionError('send {"action": "NAME", "args": ["..."]} or {"action": "NAME", "with": {...}}', 400)
        spec = find_action(message["action"])
        if "with" in message:
            args = spec.validate(message["with"])
        else:
            raw = message.get("args", [])
            if not isinstance(raw, list) or not all(isinstance(a, (str, int, float)) for a in raw):
                raise ActionError("args must be a list of words", 400)
            args = spec.parse([str(a) for a in raw])
        command = Command(spec, args)
        result = await run_in_threadpool(controls.run, command, "websocket")
        return {"type": "result", "ok": True, "action": spec.name, "message": result, "id": message.get("id")}
    except json.JSONDecodeError as exc:
        return {"type": "result", "ok": False, "status": 400, "error": f"not valid JSON ({exc.msg})"}
    except ActionError as exc:
        reply = {"type": "result", "ok": False, "status": exc.status, "error": exc.message}
        if isinstance(message, dict):
            reply["id"] = message.get("id")
        return reply


def _without_live(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k != "live"}


def _add_security_scheme(app: FastAPI, cfg: ControlConfig) -> None:
    if not cfg.secret:
        return
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            schema.setdefault("components", {})["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"token": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# -- request guard -------------------------------------------------------------------------------
class GuardMiddleware:
    """Host, Origin and token checks for every HTTP request and WebSocket, before any route runs."""

    def __init__(self, app, cfg: ControlConfig) -> None:
        self.app = app
        self.token = cfg.secret.encode() if cfg.secret else None
        self.check_host = is_loopback(cfg.host)
        self.allowed_origins = {o.rstrip("/") for o in cfg.allowed_origins}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        problem = self._problem(scope)
        if problem is None:
            return await self.app(scope, receive, send)
        status, message = problem
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        response = JSONResponse({"error": message}, status_code=status,
                                headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)
        await response(scope, receive, send)

    def _problem(self, scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.check_host:
            host = _host_name(headers.get("host", ""))
            if host and not is_loopback(host):
                return 403, f"Host {headers.get('host')!r} refused: this API answers on this computer only"
        origin = headers.get("origin")
        if origin and not self._origin_allowed(origin):
            return 403, (f"requests from web page {origin} are refused; "
                         "add it to control.allowed_origins to allow them")
        if self.token is not None and scope.get("path") not in PUBLIC_PATHS:
            given = _token_from(headers, scope)
            if given is None:
                return 401, "this API needs a token: send 'Authorization: Bearer <control.token>'"
            if not hmac.compare_digest(given.encode(), self.token):
                return 401, "wrong token"
        return None

    def _origin_allowed(self, origin: str) -> bool:
        if "*" in self.allowed_origins or origin.rstrip("/") in self.allowed_origins:
            return True
        host = urlsplit(origin).hostname
        return bool(host) and is_loopback(host)


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def _token_from(headers: dict[str, str], scope) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    if "x-facecast-token" in headers:
        return headers["x-facecast-token"]
    if scope["type"] == "websocket":  # browsers cannot set headers on a WebSocket
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
        if values:
            return values[0]
    return None


# -- the server thread ---------------------------------------------------------------------------
class ControlServer:
    """uvicorn on its own thread, on a socket bound here so that a busy port is a start-up error."""

    def __init__(self, controls: Controls, cfg: ControlConfig) -> None:
        if not is_loopback(cfg.host) and not cfg.secret:
            raise StartupError(f"control API: binding to {cfg.host} needs control.token (refused without one)")
        self.cfg = cfg
        self.app = create_app(controls, cfg)
        self._server = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port = cfg.port

    @property
    def url(self) -> str:
        host = self.cfg.host
        return f"http://{'[' + host + ']' if ':' in host else host}:{self.port}"

    def bind(self) -> None:
        """Take the port now, so that a busy port stops start-up before the models load."""
        if self._sock is None:
            self._sock = self._bind()
            self.port = self._sock.getsockname()[1]

    def start(self) -> None:
        import uvicorn

        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)  # we say when it listens
        self.bind()
        config = uvicorn.Config(
            self.app, log_config=None, access_log=False, lifespan="off", loop="asyncio", http="h11",
            ws="websockets-sansio", timeout_graceful_shutdown=STOP_TIMEOUT_S, server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="control-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise StartupError(f"control API did not start on {self.url}")
        log.info("control API on %s (docs: %s/docs)%s", self.url, self.url, ", token required" if self.cfg.secret else "")

    def _bind(self) -> socket.socket:
        host = self.cfg.host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        if sys.platform != "win32":  # on Windows this flag would let two daemons share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, self.cfg.port))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            reason = "the port is in use (another facecast running?)" if _in_use(exc) else (exc.strerror or str(exc))
            raise StartupError(
                f"control API cannot listen on {host}:{self.cfg.port}: {reason}; "
                "set control.port to another port, or control.enabled: false"
            ) from exc
        sock.setblocking(False)
        return sock

    def stop_soon(self) -> None:
        """Ask the server to exit without waiting: it finishes the requests under way."""
        if self._server is not None:
            self._server.should_exit = True

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop serving (open WebSockets are closed); after `timeout`, force it."""
        if self._server is None or self._thread is None:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            return
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(0.5)
        if self._thread.is_alive():
            log.warning("control API thread still running %.1f s after stop", timeout)
        elif self._sock is not None:
            self._sock.close()
            self._sock = None


def _in_use(exc: OSError) -> bool:
    import errno

    return exc.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", -1))
