"""`animate` and `swap` jobs: the live effects applied to a whole video, keeping its fps, frame count
and audio (facecast.render), on the daemon's shared engine pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from facecast.jobs.runner import JobContext, JobFailed, JobRejected

# kind -> (image parameter, video parameter)
PARAMS = {"animate": ("character", "driving"), "swap": ("face", "target")}


def probe_video(path: Path) -> None:
    """JobRejected unless `path` is a readable video with at least one frame."""
    import av

    if not path.is_file():
        raise JobRejected(f"no such file: {path}")
    try:
        with av.open(str(path)) as container:
            if container.format.name == "image2" or container.format.name.endswith("_pipe"):
                raise JobRejected(f"{path.name} is a still image, not a video")
            if not container.streams.video:
                raise JobRejected(f"{path.name} has no video stream")
            for _ in container.decode(video=0):
                return
    except JobRejected:
        raise
    except Exception as exc:  # av's errors, OSError: not a video
        raise JobRejected(f"{path.name} is not a video facecast can read ({exc})") from exc
    raise JobRejected(f"{path.name}: no video frame could be decoded")


class _Progress:
    """render_video's progress interface, reporting into the job (and raising there on cancel)."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx

    def update(self, done: int, total: int, elapsed: float) -> None:
        self.ctx.progress(done / total if total else 0.0)

    def done(self) -> None:
        pass


class VideoEffectKind:
    def __init__(self, name: str, cfg, engines=None) -> None:
        self.name = name
        self.cfg = cfg  # the daemon's Config: same effect settings as the live path
        self.engines = engines  # () -> the daemon's EnginePool
        self.image_key, self.video_key = PARAMS[name]

    def validate(self, params: dict[str, Any]) -> None:
        from facecast.characters.library import check_files

        for key in (self.image_key, self.video_key):
            if not params.get(key):
                raise JobRejected(f"{self.name} needs --{key}")
        (_, character, reason), = check_files([Path(params[self.image_key])], self.cfg.characters)
        if character is None:
            raise JobRejected(f"{params[self.image_key]}: cannot use this image: {reason}")
        probe_video(Path(params[self.video_key]))
        backend = params.get("backend")
        if backend is not None:
            allowed = ["mesh", "liveportrait"] if self.name == "animate" else ["mesh", "inswapper"]
            if backend not in allowed:
                raise JobRejected(f"{self.name} backend must be one of {', '.join(allowed)}, got {backend!r}")

    def run(self, ctx: JobContext) -> None:
        from facecast.characters.library import check_files
        from facecast.render import RenderError, render_video, use_backend

        params = ctx.params
        cfg = self.cfg.model_copy(deep=True)
        if params.get("backend"):
            use_backend(cfg, self.name, params["backend"])
        (_, character, reason), = check_files([Path(params[self.image_key])], cfg.characters)
        if character is None:
            raise JobFailed(f"{params[self.image_key]}: cannot use this image: {reason}")
        try:
            render_video(self.name, character, Path(params[self.video_key]), ctx.temp_output, cfg,
                         progress=_Progress(ctx), engines=self.engines, priority="batch", in_place=True)
        except RenderError as exc:
            raise JobFailed(str(exc)) from exc
