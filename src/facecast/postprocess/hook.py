"""Post steps after any job kind: `PostSteps(kind)` takes the post params off before the kind
validates its own, runs the kind, then interpolates its output and/or writes the quality report.
Applied to every kind in one place: `jobs/service.py:default_kinds`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from facecast.jobs.params import ParamsModel, parse_params
from facecast.jobs.runner import JobContext, JobFailed, JobRejected

POST_KEYS = ("interpolate_fps", "interpolate_method", "quality_report")
IMAGE_KEYS = ("character", "face")  # the param holding the identity to compare with, per kind


class PostParams(ParamsModel):
    interpolate_fps: Annotated[float, Field(gt=0, le=240)] | None = Field(
        None, description="interpolate the output to this frame rate"
    )
    interpolate_method: Literal["flow", "onnx"] = Field(
        "flow", description="flow: DIS optical flow on the CPU; onnx: interpolation/rife.onnx in models.dir"
    )
    quality_report: bool = Field(False, description="measure flicker and identity; shown by `facecast jobs show`")


class PostSteps:
    def __init__(self, kind, models_dir: Path, engines=None) -> None:
        self.kind = kind
        self.name = kind.name
        self.models_dir = models_dir
        self.engines = engines  # () -> EnginePool, for ArcFace and the ONNX interpolator

    def __getattr__(self, name: str) -> Any:
        return getattr(self.kind, name)  # the kind's own attributes (its folders, its loaded model)

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        post = {k: params[k] for k in POST_KEYS if k in params}
        checked_post = parse_params(PostParams, post, self.name).model_dump(exclude_none=True, exclude_defaults=True)
        method = post.get("interpolate_method", "flow")
        if method == "onnx" and not (self.models_dir / "interpolation" / "rife.onnx").is_file():
            raise JobRejected(f"interpolate_method onnx: no interpolation/rife.onnx in {self.models_dir}")
        checked = self.kind.validate({k: v for k, v in params.items() if k not in POST_KEYS})
        return {**checked, **checked_post}

    def run(self, ctx: JobContext) -> None:
        self.kind.run(ctx)
        params = ctx.params
        if not any(params.get(k) for k in ("interpolate_fps", "quality_report")):
            return
        from facecast.controls.source import read_video

        source = read_video(ctx.temp_output)
        frames = source.frames
        if params.get("interpolate_fps"):
            frames = self._interpolate(ctx, frames, float(source.rate), float(params["interpolate_fps"]))
        if params.get("quality_report"):
            from facecast.postprocess.quality import quality_report

            image = next((params[k] for k in IMAGE_KEYS if k in params), None)
            report = quality_report(frames, Path(image) if image else None, self.models_dir, self.engines)
            # beside what the job itself reported (a size note); the lease holder stores it with the job
            ctx.report = {**(ctx.report or {}), **report}

    def _interpolate(self, ctx: JobContext, frames: list, source_fps: float, target: float) -> list:
        from fractions import Fraction

        from facecast.postprocess.encode import encode_video
        from facecast.postprocess.interpolate import OnnxInterpolator, interpolate_flow, interpolate_midpoints

        if ctx.params.get("interpolate_method", "flow") == "onnx":
            factor = target / source_fps
            if factor < 2 or abs(math.log2(factor) - round(math.log2(factor))) > 1e-6:
                raise JobFailed(f"the onnx interpolator doubles: {target} fps is not {source_fps} x 2^k")
            out = interpolate_midpoints(frames, OnnxInterpolator(self.engines()).middle, round(factor))
        else:
            out = interpolate_flow(frames, source_fps, target)
        ctx.progress(0.99)
        tmp = ctx.temp_output.with_name(ctx.temp_output.stem + ".interp" + ctx.temp_output.suffix)
        try:
            encode_video(tmp, out, Fraction(target).limit_denominator(1001), audio_from=ctx.temp_output)
            tmp.replace(ctx.temp_output)
        finally:
            tmp.unlink(missing_ok=True)
        return out
