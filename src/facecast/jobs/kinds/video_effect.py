"""`animate` and `swap` jobs: the live effects applied to a whole video, keeping its fps, frame count
and audio (facecast.render), on the daemon's shared engine pool."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field

from facecast.jobs.folders import AllowedFolders
from facecast.jobs.params import ParamsModel, parse_params
from facecast.jobs.runner import JobContext, JobFailed, JobRejected


class AnimateParams(ParamsModel):
    character: str = Field(min_length=1, description="portrait image (PNG, JPEG, WebP), inside jobs.input_dirs")
    driving: str = Field(min_length=1, description="video whose face drives the character, inside jobs.input_dirs")
    backend: Literal["mesh", "liveportrait"] | None = Field(None, description="null = effect.animate.backend")


class SwapParams(ParamsModel):
    face: str = Field(min_length=1, description="image of the face to put on the video, inside jobs.input_dirs")
    target: str = Field(min_length=1, description="video whose faces are replaced, inside jobs.input_dirs")
    backend: Literal["mesh", "inswapper"] | None = Field(None, description="null = effect.swap.backend")


# kind -> (params model, image parameter, video parameter)
PARAMS: dict[str, tuple[type[ParamsModel], str, str]] = {
    "animate": (AnimateParams, "character", "driving"),
    "swap": (SwapParams, "face", "target"),
}


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
    def __init__(self, name: str, cfg, inputs: AllowedFolders, engines=None) -> None:
        self.name = name
        self.cfg = cfg  # the daemon's Config: same effect settings as the live path
        self.inputs = inputs  # jobs.input_dirs: the only folders a job may read from
        self.engines = engines  # () -> the daemon's EnginePool
        self.params_model, self.image_key, self.video_key = PARAMS[name]

    def _inputs(self, params: dict[str, Any]) -> tuple[Path, Path]:
        return (
            self.inputs.file(params[self.image_key], self.image_key),
            self.inputs.file(params[self.video_key], self.video_key),
        )

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        from facecast.characters.library import check_files

        checked = parse_params(self.params_model, params, self.name).model_dump(exclude_none=True)
        image, video = self._inputs(checked)  # inside jobs.input_dirs before anything opens them
        ((_, character, reason),) = check_files([image], self.cfg.characters)
        if character is None:
            raise JobRejected(f"{self.image_key} {image}: cannot use this image: {reason}")
        probe_video(video)
        return {**checked, self.image_key: str(image), self.video_key: str(video)}

    def run(self, ctx: JobContext) -> None:
        from facecast.characters.library import check_files
        from facecast.render import Progress, RenderError, render_video, use_backend

        params = ctx.params
        try:
            image, video = self._inputs(params)  # again: the files may have changed since the submit
        except JobRejected as exc:
            raise JobFailed(str(exc)) from None
        cfg = self.cfg.model_copy(deep=True)
        if params.get("backend"):
            use_backend(cfg, self.name, params["backend"])
        ((_, character, reason),) = check_files([image], cfg.characters)
        if character is None:
            raise JobFailed(f"{image}: cannot use this image: {reason}")
        try:
            progress = cast("Progress", _Progress(ctx))  # render_video calls only update() and done()
            render_video(
                self.name,
                character,
                video,
                ctx.temp_output,
                cfg,
                progress=progress,
                engines=self.engines,
                priority="batch",
                in_place=True,
            )
        except RenderError as exc:
            raise JobFailed(str(exc)) from exc
