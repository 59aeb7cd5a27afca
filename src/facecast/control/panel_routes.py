"""The control panel's routes on the control API: the page, its assets, the offline API docs, the
live preview and the few endpoints the page needs beyond the API's own.

    GET  /  and /dock            the panel (full page; narrow layout for an OBS browser dock)
    GET  /static/panel/...       its script and style; /static/docs/...: Swagger UI
    GET  /docs                   the API docs (Swagger UI), every asset served from here (no CDN)
    GET  /preview.mjpg           the output as MJPEG (preview_tap.py: made only while watched)
    GET  /settings               the live effect settings with bounds and values (the `set` action)
    GET  /characters/{name}      one character: file, size, face; /thumbnail.png: its picture
    DELETE /characters/{name}    take it out of the library (its file goes to the folder's removed/)
    POST /job-inputs            upload a video for a job (saved into the first jobs.input_dirs)
    GET  /jobs/{id}/result       a finished job's video
    GET  /panel/info             what the page needs to know once: job folders, preview size

The page and its assets are public (the page asks for the token when the API answers 401); the
data routes are behind the same Host/Origin/token checks as the rest of the API.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations as real types.

import asyncio
import logging
import os
import tempfile
import weakref
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import FastAPI, File, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from facecast import __version__
from facecast.control import settings
from facecast.control.actions import ActionError, Controls
from facecast.control.preview_tap import PREVIEW_FPS, PREVIEW_WIDTH, FrameTap, PreviewEncoder
from facecast.jobs.kinds.video_effect import probe_video
from facecast.jobs.runner import JobRejected
from facecast.jobs.store import JobNotFound


class PanelError(BaseModel):
    """Every refusal: {"error": "..."} (as the rest of the control API)."""

    error: str


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {
        400: "refused: the reason says what is wrong",
        404: "no such character or job",
        409: "cannot be done now (no character library, jobs disabled, job not done...)",
        422: "the request does not match this schema, or the upload is not a usable video",
    }
    return {c: {"model": PanelError, "description": what[c]} for c in codes}


log = logging.getLogger(__name__)

PANEL_PACKAGE = "facecast.control.panel"
PANEL_ASSETS = {"app.js": "text/javascript", "style.css": "text/css", "favicon.svg": "image/svg+xml"}
# Swagger UI and ReDoc as the fastapi-offline package ships them (requirements.txt): never a CDN.
DOCS_PACKAGE = "fastapi_offline"
# (No ReDoc page: its bundle loads its logo from a CDN.)
DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
PUBLIC_PAGES = frozenset({"/", "/dock", "/docs"})
PUBLIC_PREFIX = "/static/"
UPLOADS_DIR = "facecast-uploads"  # inside the first jobs.input_dirs: uploaded job videos
VIDEO_UPLOAD_MAX_MB = 2048
VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
MULTIPART_OVERHEAD_BYTES = 64 << 10
THUMBNAIL_PX = 160
CharacterName = Annotated[str, PathParam(min_length=1, max_length=255, description="the character's name")]
PREVIEW_WAIT_S = 1.0  # a preview client re-checks the daemon this often while no frame comes


# -- for the request guard in control/api.py ---------------------------------------------------------
def is_public_path(path: str) -> bool:
    """The page and its assets load before the page knows the token; they hold no data."""
    return path in PUBLIC_PAGES or path.startswith(PUBLIC_PREFIX)


def same_origin(origin: str, host_header: str) -> bool:
    """A request from a page this API served itself (the panel): its Origin is this server's own
    address. Browsers send Origin on same-origin POSTs and WebSockets too."""
    return bool(host_header) and origin.rstrip("/").lower() in (
        f"http://{host_header}".lower(),
        f"https://{host_header}".lower(),
    )


def panel_body_limit(path: str) -> tuple[int, str] | None:
    """The body limit of the panel's upload routes (None: not one of them)."""
    if path == "/job-inputs":
        return (VIDEO_UPLOAD_MAX_MB << 20) + MULTIPART_OVERHEAD_BYTES, f"the video is over {VIDEO_UPLOAD_MAX_MB} MB"
    return None


# -- one preview per daemon ------------------------------------------------------------------------
_PREVIEWS: weakref.WeakKeyDictionary[Any, PreviewEncoder] = weakref.WeakKeyDictionary()


def preview_for(daemon) -> PreviewEncoder:
    """The daemon's preview encoder, made (and its tap added to the pipeline) on first use. Apps made
    later for the same daemon (tests make several) share it."""
    encoder = _PREVIEWS.get(daemon)
    if encoder is None:
        tap = FrameTap()
        daemon.pipeline.add_delivery_listener(tap.offer)
        encoder = PreviewEncoder(tap)
        daemon.stats.add_provider("panel_preview", encoder.snapshot)
        _PREVIEWS[daemon] = encoder
    return encoder


# -- the routes --------------------------------------------------------------------------------------
def mount_panel(app: FastAPI, controls: Controls) -> None:
    """Add the panel's routes to the control API app (control/api.py:create_app calls it once)."""
    daemon = controls.daemon
    preview = preview_for(daemon)
    page = resources.files(PANEL_PACKAGE).joinpath("index.html").read_text(encoding="utf-8")
    thumbnails: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()

    def html(layout: str) -> HTMLResponse:
        return HTMLResponse(
            page.replace('data-layout="full"', f'data-layout="{layout}"'), headers={"Cache-Control": "no-cache"}
        )

    @app.get("/", include_in_schema=False)
    def panel_page() -> HTMLResponse:
        return html("full")

    @app.get("/dock", include_in_schema=False)
    def dock_page() -> HTMLResponse:
        return html("dock")

    @app.get("/static/panel/{name}", include_in_schema=False)
    def panel_asset(name: str) -> Response:
        return _package_file(PANEL_PACKAGE, name, PANEL_ASSETS)

    @app.get("/static/docs/{name}", include_in_schema=False)
    def docs_asset(name: str) -> Response:
        return _package_file(
            DOCS_PACKAGE,
            f"static/{name}",
            {f"static/{k}": v for k, v in DOCS_ASSETS.items()},
            cache="public, max-age=86400",
        )

    @app.get("/docs", include_in_schema=False)
    def swagger_page() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} - Swagger UI",
            swagger_js_url="/static/docs/swagger-ui-bundle.js",
            swagger_css_url="/static/docs/swagger-ui.css",
            swagger_favicon_url="/static/panel/favicon.svg",
            swagger_ui_parameters={"validatorUrl": None},  # Swagger UI would ask an online validator otherwise
        )

    @app.get("/panel/info", summary="What the control panel needs once: version, job folders, preview size")
    def panel_info() -> dict[str, Any]:
        jobs = daemon.cfg.jobs
        inputs = [str(Path(p).expanduser()) for p in jobs.input_dirs]
        return {
            "version": __version__,
            "preview": {"fps": PREVIEW_FPS, "width": PREVIEW_WIDTH},
            "jobs": {
                "enabled": daemon.jobs is not None,
                "kinds": sorted(daemon.jobs.kinds) if daemon.jobs is not None else [],
                "input_dirs": inputs,
                "output_dirs": [str(Path(p).expanduser().resolve()) for p in jobs.output_dirs],
                "uploads": str(Path(inputs[0]) / UPLOADS_DIR) if inputs else None,
            },
        }

    # -- live preview ----------------------------------------------------------------------------
    @app.get(
        "/preview.mjpg",
        response_class=StreamingResponse,
        summary=f"The output as MJPEG (about {PREVIEW_FPS:g} fps, {PREVIEW_WIDTH} px wide, alpha over a "
        "checkerboard), encoded only while someone watches",
    )
    async def preview_stream() -> StreamingResponse:
        watcher = preview.watch(asyncio.get_running_loop())

        async def parts():
            try:
                while not daemon.stopping:
                    jpeg = await watcher.next(PREVIEW_WAIT_S)
                    if jpeg is not None:
                        yield (
                            b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                            + jpeg
                            + b"\r\n"
                        )
            finally:
                preview.unwatch(watcher)

        return StreamingResponse(
            parts(), media_type="multipart/x-mixed-replace; boundary=frame", headers={"Cache-Control": "no-store"}
        )

    # -- live settings ---------------------------------------------------------------------------
    @app.get("/settings", summary="Every live effect setting with its bounds, choices and value (`set` changes them)")
    def get_settings() -> dict[str, Any]:
        return settings.describe(daemon.effect)

    # -- characters ------------------------------------------------------------------------------
    def character(name: str):
        library = getattr(daemon, "characters", None)
        if library is None:
            raise ActionError("no character library is loaded", 409)
        try:
            return library, library.get(name)
        except (KeyError, IndexError):
            raise ActionError(f"no character {name!r}; known: {', '.join(library.names()) or 'none'}", 404) from None

    @app.get("/characters/{name}", summary="One character: its file, size and face", responses=_errors(404, 409))
    def get_character(name: CharacterName) -> dict[str, Any]:
        library, found = character(name)
        names = library.names()
        active = library.active
        return {
            "name": found.name,
            "index": names.index(found.name) + 1 if found.name in names else None,
            "active": active is not None and active.name == found.name,
            "file": str(found.path),
            "size": list(found.size),
            "face_px": int(found.face.box[3]),
            "description": found.describe(),
        }

    @app.get(
        "/characters/{name}/thumbnail.png",
        response_class=Response,
        summary="The character's face as a small PNG with its matte as alpha",
        responses=_errors(404, 409),
    )
    def get_thumbnail(
        name: CharacterName,
        size: Annotated[int, Query(ge=32, le=512, description="width and height in pixels")] = THUMBNAIL_PX,
    ) -> Response:
        _, found = character(name)
        if size != THUMBNAIL_PX:  # other sizes are made each time: the cache holds one per character
            data = thumbnail_png(found.image, found.matte, found.face.box, size)
        elif (cached := thumbnails.get(found)) is not None:  # per Character object: a replaced file is a new one
            data = cached
        else:
            data = thumbnails[found] = thumbnail_png(found.image, found.matte, found.face.box, size)
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})

    @app.delete(
        "/characters/{name}",
        summary="Remove a character: its file is moved into the folder's removed/",
        responses=_errors(404, 409),
    )
    async def delete_character(name: CharacterName) -> dict[str, Any]:
        library, found = character(name)
        try:
            await run_in_threadpool(library.remove, found.name)
        except KeyError:
            raise ActionError(f"no character {name!r}", 404) from None
        except ValueError as exc:  # CharacterError: its file cannot be moved
            raise ActionError(f"character {found.name} cannot be removed: {exc}", 409) from None
        log.info("api: character %s removed", found.name)
        return {"ok": True, "message": f"character {found.name} removed", "state": controls.state()}

    # -- jobs ------------------------------------------------------------------------------------
    @app.post(
        "/job-inputs",
        status_code=201,
        summary=f"Upload a video for a job; it is saved into {UPLOADS_DIR}/ of the first jobs.input_dirs",
        responses=_errors(400, 409, 422),
    )
    async def upload_job_input(
        file: Annotated[UploadFile, File(description="a video: mp4, mov, mkv, webm...")],
    ) -> dict[str, Any]:
        folders = [Path(p).expanduser() for p in daemon.cfg.jobs.input_dirs]
        if not folders:
            raise ActionError("jobs.input_dirs is empty: no folder may hold job inputs", 409)
        name = Path(file.filename or "").name
        if not name or name.startswith(".") or name != (file.filename or ""):
            raise ActionError(f"{file.filename!r} is not a plain file name", 400)
        if Path(name).suffix.lower() not in VIDEO_SUFFIXES:
            raise ActionError(f"{name}: not a video file name (use {', '.join(VIDEO_SUFFIXES)})", 400)
        path = await run_in_threadpool(save_upload, file.file, folders[0] / UPLOADS_DIR, name)
        try:
            await run_in_threadpool(probe_video, path)
        except JobRejected as exc:
            path.unlink(missing_ok=True)
            raise ActionError(str(exc), 422) from None
        return {"ok": True, "path": str(path), "message": f"{name} saved as {path}"}

    @app.get(
        "/jobs/{job_id}/result",
        response_class=FileResponse,
        summary="A finished job's video",
        responses=_errors(404, 409),
    )
    def job_result(job_id: Annotated[str, PathParam(min_length=1, max_length=64)]) -> FileResponse:
        if daemon.jobs is None:
            raise ActionError("jobs are disabled in this daemon (jobs.enabled: false)", 409)
        try:
            job = daemon.jobs.store.get(job_id)
        except JobNotFound:
            raise ActionError(f"no job {job_id}", 404) from None
        if job.status != "done":
            raise ActionError(f"job {job_id} is {job.status}: it has no result", 409)
        path = Path(job.output)
        if not path.is_file():
            raise ActionError(f"the result {path} is gone (moved or deleted)", 404)
        media = {".mp4": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska"}
        return FileResponse(
            path,
            media_type=media.get(path.suffix.lower(), "application/octet-stream"),
            filename=path.name,
            content_disposition_type="inline",
        )


# -- helpers -----------------------------------------------------------------------------------------
def _package_file(package: str, name: str, allowed: dict[str, str], cache: str = "no-cache") -> Response:
    media = allowed.get(name)
    if media is None:
        raise ActionError(f"no such file: {name}", 404)
    data = resources.files(package).joinpath(name).read_bytes()
    return Response(data, media_type=media, headers={"Cache-Control": cache})


def thumbnail_png(image: np.ndarray, matte: np.ndarray, box, size: int) -> bytes:
    """A square around the face (twice its height), the matte as alpha, `size` pixels wide."""
    h, w = image.shape[:2]
    x, y, bw, bh = (int(v) for v in box)
    side = min(max(bw, bh) * 2, w, h)
    cx, cy = x + bw // 2, y + bh // 2
    x0 = int(np.clip(cx - side // 2, 0, w - side))
    y0 = int(np.clip(cy - side // 2, 0, h - side))
    crop = np.dstack([image[y0 : y0 + side, x0 : x0 + side], matte[y0 : y0 + side, x0 : x0 + side]])
    small = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_LINEAR)
    ok, data = cv2.imencode(".png", small)
    if not ok:
        raise ValueError("PNG encoding failed")
    return data.tobytes()


def save_upload(source, folder: Path, name: str) -> Path:
    """Copy an uploaded file into `folder` under `name` (a free variant of it when taken), through a
    temporary file, so a half-copied upload never has the final name."""
    folder.mkdir(parents=True, exist_ok=True)
    stem, suffix = Path(name).stem, Path(name).suffix
    fd, tmp = tempfile.mkstemp(prefix=".upload-", suffix=suffix, dir=folder)
    try:
        with os.fdopen(fd, "wb") as out:
            source.seek(0)
            while chunk := source.read(1 << 20):
                out.write(chunk)
        for n in range(1000):
            path = folder / (name if n == 0 else f"{stem}-{n}{suffix}")
            try:
                os.link(tmp, path)  # fails if the name is taken: never overwrites
                return path
            except FileExistsError:
                continue
        raise ActionError(f"{folder} already has 1000 files named like {name}", 409)
    finally:
        Path(tmp).unlink(missing_ok=True)
