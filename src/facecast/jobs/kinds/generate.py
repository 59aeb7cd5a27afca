"""`generate`: image-to-video of a character with a diffusion pipeline (LTX-Video or Wan 2.1/2.2).

Needs the optional diffusion requirements (requirements-diffusion.txt) and a pipeline folder the
user downloaded (e.g. `huggingface-cli download Lightricks/LTX-Video --local-dir ...`); a GPU is
expected for real models. The loaded pipeline is kept for the next job.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from pydantic import BeforeValidator, Field

from facecast.jobs.folders import AllowedFolders
from facecast.jobs.params import JsonInt, ParamsModel, json_integer, parse_params
from facecast.jobs.runner import JobCancelled, JobContext, JobFailed, JobRejected
from facecast.media.video import write_video

log = logging.getLogger(__name__)

# pipeline class -> (spatial multiple, frames must be k*n+1, default fps)
PIPELINES = {
    "LTXImageToVideoPipeline": (32, 8, 25.0),
    "LTXConditionPipeline": (32, 8, 25.0),
    "WanImageToVideoPipeline": (16, 4, 16.0),
}


class GenerateParams(ParamsModel):
    character: str = Field(min_length=1, description="portrait image, inside jobs.input_dirs")
    prompt: str = Field(min_length=1, max_length=2000, pattern=r"\S", description="what the character does")
    model: str | None = Field(
        None,
        min_length=1,
        description="diffusers pipeline folder inside models.dir or jobs.generate_model_dirs; "
        "null = jobs.generate_model",
    )
    frames: Annotated[int, Field(ge=1, le=1000), BeforeValidator(json_integer)] | None = Field(
        None, description="LTX-Video: 8k+1, Wan: 4k+1; null = 2 steps of k"
    )
    steps: JsonInt = Field(30, ge=1, le=500, description="denoising steps")
    width: JsonInt = Field(512, ge=16, le=4096, description="divisible by 32 (LTX-Video) or 16 (Wan)")
    height: JsonInt = Field(512, ge=16, le=4096, description="divisible by 32 (LTX-Video) or 16 (Wan)")
    fps: Annotated[float, Field(gt=0, le=240)] | None = Field(None, description="null = the model's own rate")
    seed: JsonInt = Field(0, ge=0, le=2**32 - 1, description="random seed (same seed, same video)")


def _pipeline_class(model_dir: Path) -> str:
    try:
        return json.loads((model_dir / "model_index.json").read_text())["_class_name"]
    except (OSError, ValueError, KeyError) as exc:
        raise JobRejected(f"model {model_dir}: not a diffusers pipeline folder (no readable model_index.json)") from exc


class GenerateKind:
    name = "generate"

    def __init__(
        self, inputs: AllowedFolders, models: AllowedFolders, default_model: Path | None = None, device: str = "auto"
    ) -> None:
        self.inputs = inputs  # jobs.input_dirs: where the character image may be
        self.models = models  # models.dir, jobs.generate_model_dirs: where a pipeline folder may be
        self.default_model = default_model
        self.device = device
        self._loaded: tuple[Path, Any] | None = None
        self._lock = threading.Lock()

    def _model_dir(self, params: dict[str, Any]) -> Path:
        model = params.get("model") or self.default_model
        if not model:
            raise JobRejected("no diffusion model: pass --model PIPELINE_FOLDER or set jobs.generate_model")
        return self.models.folder(model, "model folder")

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        checked = parse_params(GenerateParams, params, "generate").model_dump(exclude_none=True)
        model_dir = self._model_dir(checked)  # inside the allowed folders before anything reads it
        image = self.inputs.file(checked["character"], "character")
        try:
            import diffusers  # noqa: F401
        except ImportError as exc:
            raise JobRejected(
                f"generate needs the diffusion extras: pip install -r requirements-diffusion.txt ({exc})"
            ) from None
        cls = _pipeline_class(model_dir)
        if cls not in PIPELINES:
            raise JobRejected(f"model {model_dir} is a {cls}; generate needs one of {', '.join(PIPELINES)}")
        multiple, frame_step, _ = PIPELINES[cls]
        if cv2.imread(str(image)) is None:
            raise JobRejected(f"character image cannot be read: {image}")
        frames = checked.setdefault("frames", frame_step * 2 + 1)
        if (frames - 1) % frame_step:
            examples = f"e.g. {frame_step * 2 + 1}, {frame_step * 6 + 1}"
            raise JobRejected(f"{cls} needs frames = {frame_step}k+1 ({examples}), got {frames}")
        for key in ("width", "height"):
            if checked[key] % multiple:
                raise JobRejected(f"{cls} needs {key} divisible by {multiple}, got {checked[key]}")
        if "model" in checked:
            checked["model"] = str(model_dir)
        return {**checked, "character": str(image)}

    def _pipeline(self, model_dir: Path):
        import torch
        from diffusers import DiffusionPipeline

        with self._lock:
            if self._loaded is None or self._loaded[0] != model_dir:
                device = self.device
                if device == "auto":
                    device = "cuda" if torch.cuda.is_available() else "cpu"
                dtype = torch.bfloat16 if device == "cuda" else torch.float32
                pipe = DiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=dtype)
                pipe.set_progress_bar_config(disable=True)
                if device == "cuda":
                    pipe.enable_model_cpu_offload()  # keeps VRAM for the live engines
                    if hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
                        pipe.vae.enable_tiling()
                else:
                    pipe.to(device)
                    log.warning(
                        "generate runs on the CPU: real diffusion models need a GPU to finish in reasonable time"
                    )
                self._loaded = (model_dir, pipe)
            return self._loaded[1]

    def run(self, ctx: JobContext) -> None:
        import torch
        from PIL import Image

        params = ctx.params
        try:  # again: the folders may have changed since the submit
            model_dir = self._model_dir(params)
            image_path = self.inputs.file(params["character"], "character")
        except JobRejected as exc:
            raise JobFailed(str(exc)) from None
        cls = _pipeline_class(model_dir)
        _, _, default_fps = PIPELINES[cls]
        pipe = self._pipeline(model_dir)
        bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise JobFailed(f"character image cannot be read: {image_path}")
        width, height = int(params.get("width", 512)), int(params.get("height", 512))
        resized = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
        image = Image.fromarray(cv2.cvtColor(resized, cv2.COLOR_BGR2RGB))
        steps = int(params.get("steps", 30))

        def on_step(pipeline, step: int, timestep, kwargs):
            ctx.progress(0.95 * (step + 1) / steps)  # raises JobCancelled to stop the pipeline
            return kwargs

        generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
        try:
            result = pipe(
                image=image,
                prompt=str(params["prompt"]),
                num_frames=int(params.get("frames", 17)),
                width=width,
                height=height,
                num_inference_steps=steps,
                generator=generator,
                output_type="np",
                callback_on_step_end=on_step,
            )
        except JobCancelled:
            if hasattr(pipe, "maybe_free_model_hooks"):
                pipe.maybe_free_model_hooks()  # an aborted call leaves its offload hooks attached
            raise
        frames = np.asarray(result.frames[0])
        rgb = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
        fps = float(params.get("fps", default_fps))
        write_video(ctx.temp_output, (cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in rgb), fps)
        ctx.progress(1.0)
