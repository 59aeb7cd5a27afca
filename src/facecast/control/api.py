"""The local control API (FastAPI on uvicorn): state, stats, every action, characters, a WebSocket.

Served on 127.0.0.1 by default, from a thread of the daemon. Every error is JSON `{"error": "..."}`
with a 4xx status that says what was wrong; OpenAPI docs at /docs.

Safety on loopback: a web page open in the streamer's browser can send requests to 127.0.0.1
too. Requests that a browser marks with an `Origin` are refused unless that exact origin is in
`control.allowed_origins` (which also get CORS headers); a state change from such a page needs
the token or this run's session secret (`GET /session`, readable only by an allowed page, sent
back as `X-Facecast-Session`); the `Host` header must name this computer, which defeats DNS
rebinding. Off loopback a token is required (checked at config load and again here). Request
bodies are counted while they arrive and cut at their limit with 413, before anything is spooled.
"""

# No `from __future__ import annotations` here: the per-action routes are built at run time and
# FastAPI reads their annotations as real types.

import asyncio
import hmac
import json
import logging
import secrets
import socket
import sys
import threading
import time
from typing import Annotated, Any, get_args
from urllib.parse import parse_qs

import anyio
import anyio.abc
from fastapi import Body, FastAPI, File, Query, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Match

from facecast import __version__
from facecast.control.actions import ACTIONS, ActionError, ActionSpec, Command, Controls, find_action
from facecast.control.config import ControlConfig, is_loopback
from facecast.control.panel_routes import is_public_path, mount_panel, panel_body_limit
from facecast.jobs.api import add_job_routes
from facecast.jobs.params import json_integer
from facecast.pipeline.stage import StartupError

log = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/docs", "/openapi.json"})
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 1.0
EVENT_BACKLOG = 64  # WebSocket events waiting for a slow client; older ones are dropped
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # reading only: no session secret needed from a page
SESSION_HEADER = "X-Facecast-Session"
JSON_BODY_MAX_BYTES = 1 << 20  # every JSON body here is a few hundred bytes
MULTIPART_OVERHEAD_BYTES = 64 << 10  # boundaries and part headers around an uploaded image


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


class SessionSecret(BaseModel):
    session: str = Field(description="send it back as the X-Facecast-Session header with every POST from a web page")
    header: str = SESSION_HEADER


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "refused: the reason says what is wrong",
        404: "no such character, effect, output or action",
        409: "cannot be done now (no display, no character library...)",
        413: "the upload is larger than control.upload_max_mb",
        422: "the request does not match this schema, or the image cannot be a character",
    }
    return {s: {"model": ErrorBody, "description": what[s]} for s in statuses}


ERRORS = _errors(400, 404, 409, 422)


def create_app(controls: Controls, cfg: ControlConfig) -> FastAPI:
    daemon = controls.daemon
    app = FastAPI(
        docs_url=None,
        redoc_url=None,  # the panel serves /docs from the package (no CDN); no ReDoc
        title="facecast control API",
        version=__version__,
        description=(
            "Live control of the facecast daemon: the same actions as the global hotkeys and "
            '`facecast ctl`. Errors are JSON `{"error": "..."}` with a 4xx status.'
            + (" Every request needs `Authorization: Bearer <control.token>`." if cfg.secret else "")
        ),
    )
    app.state.upload_max_bytes = int(cfg.upload_max_mb * 1024 * 1024)
    session = secrets.token_urlsafe(24)  # this run's secret for web pages (GET /session)

    # -- errors: always JSON with one readable line, never a traceback -------------------------
    @app.exception_handler(ActionError)
    async def _action_error(request: Request, exc: ActionError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names only the first route's methods for this path
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("control API: %s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}: {exc}); the daemon log has the details"},
            status_code=500,
        )

    # Outermost first: CORS headers for the allowed pages (and answers to their preflights), then
    # Host/Origin/token/session checks, then the body limit, then the routes.
    upload_too_large = f"the image is larger than control.upload_max_mb ({cfg.upload_max_mb:g} MB)"
    # path -> (most bytes its body may have, the refusal); any other path: JSON_BODY_MAX_BYTES. Routes
    # that take larger uploads add their path here.
    app.state.body_limits = {"/characters": (app.state.upload_max_bytes + MULTIPART_OVERHEAD_BYTES, upload_too_large)}
    json_too_large = (JSON_BODY_MAX_BYTES, f"the request body is larger than {JSON_BODY_MAX_BYTES >> 20} MB")
    app.add_middleware(BodyLimitMiddleware, limit_for=lambda path: app.state.body_limits.get(path, json_too_large))
    app.add_middleware(GuardMiddleware, cfg=cfg, session=session)
    if cfg.allowed_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cfg.allowed_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-facecast-token", SESSION_HEADER.lower()],
        )
    add_job_routes(app, lambda: daemon.jobs)  # /jobs: offline video jobs (facecast.jobs)

    # -- reading ---------------------------------------------------------------------------------
    @app.get("/state", summary="Active character, effect, outputs, switches and live fps")
    def get_state() -> dict[str, Any]:
        return controls.state()

    @app.get(
        "/session",
        response_model=SessionSecret,
        responses={
            403: {
                "model": ErrorBody,
                "description": "a page whose origin is null (a local file, a sandboxed frame) gets no session secret",
            }
        },
        summary="This run's secret that lets an allowed web page change the live state",
    )
    def get_session(request: Request) -> SessionSecret:
        # Readable by local programs (no Origin) and, through CORS, by the pages in
        # control.allowed_origins only; "null" is any sandboxed page, so it never gets the secret.
        if request.headers.get("origin") == "null":
            raise ActionError("pages with origin null get no session secret: use control.token", 403)
        return SessionSecret(session=session)

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

    @app.post(
        "/actions",
        response_model=ActionResult,
        responses=ERRORS,
        summary='Run an action written as text, e.g. {"action": "output", "args": ["record", "off"]}',
    )
    def post_command(body: CommandRequest) -> ActionResult:
        spec = find_action(body.action)
        return run(Command(spec, spec.parse(body.args)))

    for spec in ACTIONS.values():
        _add_action_route(app, spec, run)

    # -- characters ------------------------------------------------------------------------------
    @app.get("/characters", responses=_errors(409), summary="The characters in the library, in hotkey order")
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

    @app.post(
        "/characters",
        status_code=201,
        responses=_errors(400, 409, 413, 422),
        summary="Add a character image (checked like the character folder); select=true also selects it",
    )
    async def upload_character(
        request: Request,
        file: Annotated[UploadFile, File(description="a portrait image (PNG, JPEG...) with one clear face")],
        select: Annotated[bool, Query(description="select the new character at once")] = False,
    ) -> dict[str, Any]:
        _library(daemon)  # 409 before reading the upload when there is no library
        limit = request.app.state.upload_max_bytes
        data = await file.read(limit + 1)
        if len(data) > limit:
            raise ActionError(upload_too_large, 413)
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

    mount_panel(app, controls)  # /, /dock, /docs, /preview.mjpg, /settings, thumbnails... (control/panel_routes.py)
    app.state.body_limits["/job-inputs"] = panel_body_limit("/job-inputs")  # the panel's video upload
    _add_security_scheme(app, cfg)
    return app


_STRICT_BODIES: dict[type[BaseModel], type[BaseModel]] = {}


class _JsonBody(BaseModel):
    """Mixed into an action's arguments for its JSON body (see `_strict_body`)."""

    @model_validator(mode="before")
    @classmethod
    def _json_integers(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        integers = {
            name
            for name, field in cls.model_fields.items()
            if field.annotation is int or int in get_args(field.annotation)
        }
        return {k: json_integer(v) if k in integers else v for k, v in data.items()}


def _strict_body(args: type[BaseModel]) -> type[BaseModel]:
    """The action's arguments as a JSON body: the same model in strict mode, so a body is taken as the
    schema types it (0 is not false, "2" is not 2, but 2.0 is the integer 2 as in JSON Schema); the
    text forms (hotkeys, `POST /actions`, `facecast ctl`) keep their own word parsing."""
    if args not in _STRICT_BODIES:
        _STRICT_BODIES[args] = type(
            args.__name__,
            (args, _JsonBody),
            {
                "__module__": args.__module__,
                "__doc__": args.__doc__,
                "model_config": ConfigDict(**{**args.model_config, "strict": True}),
            },
        )
    return _STRICT_BODIES[args]


def _add_action_route(app: FastAPI, spec: ActionSpec, run) -> None:
    needs_body = any(f.is_required() for f in spec.args.model_fields.values())
    default = Body(...) if needs_body else Body(None)
    body_model = _strict_body(spec.args)

    def endpoint(args: body_model = default) -> ActionResult:  # type: ignore[valid-type]  # FastAPI reads the model at run time
        return run(Command(spec, args if args is not None else spec.validate({})))

    endpoint.__name__ = f"action_{spec.name}"
    app.post(
        f"/actions/{spec.name}",
        response_model=ActionResult,
        responses=ERRORS,
        summary=spec.summary,
        description=f"Text form: `{spec.usage}`",
        tags=["actions"],
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
                # In a worker thread: the snapshot asks the providers (the job queue's counts: SQLite).
                stats = await run_in_threadpool(controls.daemon.stats.snapshot)
                await send({"type": "stats", "stats": stats})
                next_stats = now + interval
            try:
                event = await asyncio.wait_for(events.get(), timeout=max(0.0, min(0.5, next_stats - now)))
            except TimeoutError:
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
    """The answers the middleware can give on any route (403 Host/Origin, 401 token, 413 body size),
    in the schema of every operation; with a token, the bearer scheme for "Try it out"."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
            guard = {
                "403": {
                    "description": "refused: a foreign Host or web page, or a state change from a page "
                    "without the session secret",
                    "content": error,
                }
            }
            if cfg.secret:
                guard["401"] = {"description": "no token, or the wrong one", "content": error}
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.setdefault("responses", {})
                    for status, answer in guard.items():
                        responses.setdefault(status, answer)
                    if "requestBody" in operation:
                        responses.setdefault("413", {"description": "the request body is too large", "content": error})
            if cfg.secret:
                schema.setdefault("components", {})["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
                schema["security"] = [{"token": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (the Allow header of a 405)."""
    scope = {**request.scope, "method": "\0"}  # no route has this method: path matches come back PARTIAL
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


# -- request guard -------------------------------------------------------------------------------
class GuardMiddleware:
    """Host, Origin, token and session checks for every HTTP request and WebSocket, before any route runs."""

    def __init__(self, app, cfg: ControlConfig, session: str) -> None:
        self.app = app
        self.token = cfg.secret.encode() if cfg.secret else None
        self.session = session.encode()
        self.check_host = is_loopback(cfg.host)
        self.allowed_origins = frozenset(cfg.allowed_origins)  # exact origins, normalised by the config

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
        response = JSONResponse(
            {"error": message}, status_code=status, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None
        )
        await response(scope, receive, send)

    def _problem(self, scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.check_host:
            host = _host_name(headers.get("host", ""))
            if host and not is_loopback(host):
                return 403, f"Host {headers.get('host')!r} refused: this API answers on this computer only"
        origin = headers.get("origin")
        if origin is not None and not self._origin_allowed(origin.rstrip("/").lower(), scope, headers):
            return 403, (
                f"requests from web page {origin} are refused; add it to control.allowed_origins to allow them"
            )
        path = scope.get("path", "")
        if self.token is not None and path not in PUBLIC_PATHS and not is_public_path(path):
            given = _token_from(headers, scope)
            if given is None:
                return 401, "this API needs a token: send 'Authorization: Bearer <control.token>'"
            if not hmac.compare_digest(given.encode(), self.token):
                return 401, "wrong token"
        elif origin is not None and _changes_state(scope):
            # A page the user opened can send this; only a page that could read GET /session can prove it
            # is the allowed one (a simple cross-site POST cannot read anything).
            given = _session_from(headers, scope)
            if given is None or not hmac.compare_digest(given.encode(), self.session):
                return 403, (
                    f"a web page ({origin}) can change the live state only with the session secret: "
                    f"GET /session, then send it as {SESSION_HEADER} (or set control.token)"
                )
        return None

    def _origin_allowed(self, origin: str, scope, headers: dict[str, str]) -> bool:
        """An exact origin from the config, or this server's own (a page it serves itself, under the
        Host name checked above), never "any localhost port": another port is another program."""
        if origin in self.allowed_origins:
            return True
        scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme", "http"))
        return bool(headers.get("host")) and origin == f"{scheme}://{headers['host'].lower()}"


def _changes_state(scope) -> bool:
    """WebSockets can run actions; HTTP methods other than GET/HEAD/OPTIONS change something."""
    return scope["type"] == "websocket" or scope.get("method", "GET") not in SAFE_METHODS


def _session_from(headers: dict[str, str], scope) -> str | None:
    if SESSION_HEADER.lower() in headers:
        return headers[SESSION_HEADER.lower()]
    if scope["type"] == "websocket":  # browsers cannot set headers on a WebSocket
        values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session")
        if values:
            return values[0]
    return None


# -- request body limit --------------------------------------------------------------------------
class BodyLimitMiddleware:
    """Counts a request body while it arrives and answers 413 as soon as it passes the route's limit
    (at once when Content-Length already says so): nothing beyond the limit is read, parsed or
    spooled to disk. The route sees the body end there; whatever it answers is dropped."""

    def __init__(self, app, limit_for) -> None:
        self.app = app
        self.limit_for = limit_for  # path -> (the most bytes a body may have, the refusal)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, refusal = self.limit_for(scope.get("path", ""))
        too_large = JSONResponse({"error": refusal}, status_code=413, headers={"Connection": "close"})
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await too_large(scope, receive, send)
        received = 0
        refused = started = False

        async def receive_counted():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await too_large(scope, receive, send)
                    return {"type": "http.disconnect"}  # the route's parser stops here
            return message

        async def send_unless_refused(message) -> None:
            nonlocal started
            if refused:
                return  # our 413 went out; the route's answer to the cut body is not sent
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, receive_counted, send_unless_refused)


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
        self._server: Any = None  # uvicorn.Server, imported when the server starts
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
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
            ws="websockets-sansio",
            timeout_graceful_shutdown=int(STOP_TIMEOUT_S),
            server_header=False,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="control-api", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            self.stop()
            raise StartupError(f"control API did not start on {self.url}")
        log.info(
            "control API on %s (docs: %s/docs)%s", self.url, self.url, ", token required" if self.cfg.secret else ""
        )

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
