"""`replace`: the performer of a recorded video replaced by a character (or the character animated
with the performer's movement), with Wan-Animate (`WanAnimatePipeline`) or Wan VACE
(`WanVACEPipeline`), chosen by the pipeline folder's model_index.json.

The control signals are made here on the CPU (facecast.controls): the body pose as an
OpenPose-style skeleton, the face crops, and in replace mode the person mask and the background
without the person. The output keeps the source's frame rate, frame count and audio: Wan-Animate
generates segment after segment (`segment_frames`, 4k+1, each conditioned on the end of the
previous one) and trims to the source's length; VACE generates chunks of `segment_frames` frames
(the last one padded to 4k+1 and trimmed). A GPU is expected for real models.
"""

from __future__ import annotations

import json
import logging
import threading
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BeforeValidator, Field

from facecast.jobs.folders import AllowedFolders
from facecast.jobs.kinds.generate import load_pipeline, pipeline_class
from facecast.jobs.params import JsonInt, ParamsModel, json_integer, parse_params
from facecast.jobs.runner import JobCancelled, JobContext, JobFailed, JobRejected

log = logging.getLogger(__name__)

# pipeline class -> (family name, spatial multiple, default segment frames, default guidance)
FAMILIES = {
    "WanAnimatePipeline": ("wan-animate", 16, 77, 1.0),
    "WanVACEPipeline": ("wan-vace", 16, 81, 5.0),
}
DEFAULT_PROMPT = "the character performs the movements of the video, natural motion, consistent identity"


class ReplaceParams(ParamsModel):
    character: str = Field(min_length=1, description="image of the character, inside jobs.input_dirs")
    driving: str = Field(min_length=1, description="video of the performer, inside jobs.input_dirs")
    mode: Literal["animate", "replace"] = Field(
        "animate",
        description="animate: the character moves like the performer on its own background; "
        "replace: the character takes the performer's place in the video",
    )
    model: str | None = Field(
        None, min_length=1, description="Wan-Animate or Wan VACE pipeline folder; null = jobs.generate_model"
    )
    prompt: str = Field(DEFAULT_PROMPT, min_length=1, max_length=2000, pattern=r"\S")
    steps: JsonInt = Field(20, ge=1, le=500, description="denoising steps per segment")
    width: Annotated[int, Field(ge=16, le=4096), BeforeValidator(json_integer)] | None = Field(
        None, description="divisible by 16; null = the source's aspect, long side 832"
    )
    height: Annotated[int, Field(ge=16, le=4096), BeforeValidator(json_integer)] | None = None
    segment_frames: Annotated[int, Field(ge=5, le=1001), BeforeValidator(json_integer)] | None = Field(
        None, description="frames per generated segment, 4k+1; null = 77 (Wan-Animate) or 81 (VACE)"
    )
    guidance: Annotated[float, Field(ge=0, le=30)] | None = Field(None, description="null = the family's default")
    seed: JsonInt = Field(0, ge=0, le=2**32 - 1)
    camera_from: str | None = Field(
        None, min_length=1, description="a video whose camera movement is added to the prompt (facecast analyze)"
    )


def face_size(model_dir: Path) -> int:
    """The face crop size the Wan-Animate transformer's motion encoder takes (512 in the real model)."""
    try:
        return int(json.loads((model_dir / "transformer" / "config.json").read_text()).get("motion_encoder_size", 512))
    except (OSError, ValueError):
        return 512


def segments(frames: int, segment: int, overlap: int = 1) -> int:
    """How many segments Wan-Animate generates for `frames` (its own rule: each after the first
    re-uses `overlap` frames of the previous one)."""
    step = segment - overlap
    return max(1, -(-(frames - overlap) // step))


class ReplaceKind:
    name = "replace"

    def __init__(
        self, inputs: AllowedFolders, models: AllowedFolders, default_model: Path | None = None, device: str = "auto"
    ) -> None:
        self.inputs = inputs
        self.models = models
        self.default_model = default_model
        self.device = device
        self._loaded: tuple[Path, Any] | None = None
        self._lock = threading.Lock()

    def _model_dir(self, params: dict[str, Any]) -> Path:
        model = params.get("model") or self.default_model
        if not model:
            raise JobRejected("no video model: pass --model PIPELINE_FOLDER (Wan-Animate or Wan VACE)")
        return self.models.folder(model, "model folder")

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        from facecast.controls.build import has_person
        from facecast.controls.source import read_video
        from facecast.jobs.kinds.video_effect import probe_video

        checked = parse_params(ReplaceParams, params, "replace").model_dump(exclude_none=True)
        model_dir = self._model_dir(checked)
        image = self.inputs.file(checked["character"], "character")
        video = self.inputs.file(checked["driving"], "driving")
        try:
            import diffusers  # noqa: F401
        except ImportError as exc:
            raise JobRejected(f"replace needs the diffusion extras: pip install 'facecast[diffusion]' ({exc})") from exc
        cls = pipeline_class(model_dir)
        if cls not in FAMILIES:
            raise JobRejected(
                f"model {model_dir} is a {cls}; replace needs a Wan-Animate or Wan VACE pipeline "
                f"({', '.join(FAMILIES)})"
            )
        _, multiple, _, _ = FAMILIES[cls]
        if cv2.imread(str(image)) is None:
            raise JobRejected(f"character image cannot be read: {image}")
        probe_video(video)
        for key in ("width", "height"):
            if key in checked and checked[key] % multiple:
                raise JobRejected(f"{cls} needs {key} divisible by {multiple}, got {checked[key]}")
        if ("width" in checked) != ("height" in checked):
            raise JobRejected("give both width and height, or neither (the source's aspect)")
        if "segment_frames" in checked and (checked["segment_frames"] - 1) % 4:
            raise JobRejected(f"segment_frames must be 4k+1 (e.g. 77, 81), got {checked['segment_frames']}")
        if "camera_from" in checked:
            camera = self.inputs.file(checked["camera_from"], "camera_from")
            probe_video(camera)
            checked["camera_from"] = str(camera)
        sample = read_video(video, max_frames=90).frames
        if not has_person(sample[:: max(1, len(sample) // 6)]):
            raise JobRejected(f"driving {video.name}: no person found (MediaPipe Pose saw no body in its first frames)")
        if "model" in checked:
            checked["model"] = str(model_dir)
        return {**checked, "character": str(image), "driving": str(video)}

    def _pipeline(self, model_dir: Path):
        with self._lock:
            if self._loaded is None or self._loaded[0] != model_dir:
                self._loaded = None  # the previous pipeline goes before the next one is read
                self._loaded = (model_dir, load_pipeline(model_dir, self.device, "bfloat16", "replace", fp32_vae=True))
            return self._loaded[1]

    def run(self, ctx: JobContext) -> None:
        import torch
        from PIL import Image

        from facecast.controls.build import NoPerson, make_controls
        from facecast.controls.source import model_size, read_video
        from facecast.postprocess.encode import encode_video

        params = ctx.params
        try:
            model_dir = self._model_dir(params)
            image_path = self.inputs.file(params["character"], "character")
            video_path = self.inputs.file(params["driving"], "driving")
        except JobRejected as exc:
            raise JobFailed(str(exc)) from None
        cls = pipeline_class(model_dir)
        if cls not in FAMILIES:
            raise JobFailed(f"model {model_dir} is a {cls}, not Wan-Animate or Wan VACE")
        _, multiple, default_segment, default_guidance = FAMILIES[cls]
        character = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        if character is None:
            raise JobFailed(f"character image cannot be read: {image_path}")
        try:
            source = read_video(video_path)
        except Exception as exc:
            raise JobFailed(f"driving video {video_path.name}: {exc}") from exc
        h0, w0 = source.frames[0].shape[:2]
        width, height = params.get("width"), params.get("height")
        if width is None or height is None:
            width, height = model_size(w0, h0, multiple=multiple)
        mode = params.get("mode", "animate")
        try:
            controls = make_controls(
                source.frames,
                width,
                height,
                face_size=face_size(model_dir),
                with_mask=mode == "replace",
                progress=lambda f: ctx.progress(0.1 * f, "making the control videos"),
            )
        except NoPerson as exc:
            raise JobFailed(str(exc)) from None
        prompt = str(params.get("prompt", DEFAULT_PROMPT))
        if params.get("camera_from"):
            from facecast.analyze.camera import camera_prompt

            prompt = f"{prompt}. {camera_prompt(Path(params['camera_from']))}"
        segment = int(params.get("segment_frames", default_segment))
        steps = int(params.get("steps", 20))
        guidance = float(params.get("guidance", default_guidance))
        generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
        pil = lambda rgb: Image.fromarray(rgb)  # noqa: E731
        reference = Image.fromarray(cv2.cvtColor(character, cv2.COLOR_BGR2RGB))
        pipe = self._pipeline(model_dir)
        count = len(source.frames)
        total_steps = steps * (segments(count, segment) if cls == "WanAnimatePipeline" else -(-count // segment))
        done = [0]

        def on_step(pipeline, step: int, timestep, kwargs):
            done[0] += 1
            where = f"denoising step {done[0]}/{total_steps} (segment {(done[0] - 1) // steps + 1})"
            ctx.progress(0.1 + 0.85 * min(1.0, done[0] / total_steps), where)  # raises JobCancelled to stop
            return kwargs

        try:
            if cls == "WanAnimatePipeline":
                extra: dict[str, Any] = {}
                if mode == "replace":
                    extra = {
                        "background_video": [pil(f) for f in controls.background],
                        "mask_video": [Image.fromarray(m, "L") for m in controls.mask],
                    }
                result = pipe(
                    image=reference,
                    pose_video=[pil(f) for f in controls.pose],
                    face_video=[pil(f) for f in controls.face],
                    prompt=prompt,
                    height=height,
                    width=width,
                    segment_frame_length=segment,
                    num_inference_steps=steps,
                    mode=mode,
                    guidance_scale=guidance,
                    generator=generator,
                    output_type="np",
                    callback_on_step_end=on_step,
                    **extra,
                )
                frames = np.asarray(result.frames[0])
            else:
                frames = self._vace(
                    pipe, controls, reference, prompt, mode, segment, steps, guidance, generator, on_step
                )
        except JobCancelled:
            if hasattr(pipe, "maybe_free_model_hooks"):
                pipe.maybe_free_model_hooks()  # an aborted call leaves its offload hooks attached
            raise
        frames = frames[:count]
        if len(frames) != count:
            raise JobFailed(f"the model gave {len(frames)} frames for a {count}-frame video")
        rgb = (np.clip(frames, 0, 1) * 255 + 0.5).astype(np.uint8)
        encode_video(
            ctx.temp_output,
            (cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in rgb),
            Fraction(source.rate),
            audio_from=video_path if source.has_audio else None,
        )
        ctx.progress(1.0)

    @staticmethod
    def _vace(pipe, controls, reference, prompt, mode, segment, steps, guidance, generator, on_step) -> np.ndarray:
        """VACE chunk by chunk. animate: the skeleton is the control video and everything is generated;
        replace: the frame is kept outside the person mask, the skeleton drawn inside it, and only
        the mask is generated."""
        from PIL import Image

        count = len(controls.frames)
        height, width = controls.frames[0].shape[:2]
        out = []
        for start in range(0, count, segment):
            idx = list(range(start, min(count, start + segment)))
            padded = idx + [idx[-1]] * ((1 - len(idx)) % 4)  # 4k+1 frames: repeat the last one
            if mode == "replace":
                video = [
                    np.where(
                        controls.mask[i][:, :, None] > 0,
                        controls.pose[i],
                        cv2.cvtColor(controls.frames[i], cv2.COLOR_BGR2RGB),
                    ).astype(np.uint8)
                    for i in padded
                ]
                masks = [controls.mask[i] for i in padded]
            else:
                video = [controls.pose[i] for i in padded]
                masks = [np.full((height, width), 255, np.uint8)] * len(padded)
            result = pipe(
                prompt=prompt,
                video=[Image.fromarray(v) for v in video],
                mask=[Image.fromarray(m, "L") for m in masks],
                reference_images=[reference],
                height=height,
                width=width,
                num_frames=len(padded),
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=generator,
                output_type="np",
                callback_on_step_end=on_step,
            )
            out.append(np.asarray(result.frames[0])[: len(idx)])
        return np.concatenate(out)


def cli_params(args, absolute) -> dict[str, Any]:
    """The job's params from `facecast jobs submit replace` arguments (unset ones left to the defaults)."""
    p: dict[str, Any] = {"character": absolute(args.character), "driving": absolute(args.driving), "mode": args.mode}
    if args.model:
        p["model"] = absolute(args.model)
    if args.camera_from:
        p["camera_from"] = absolute(args.camera_from)
    for key in ("prompt", "steps", "width", "height", "segment_frames", "seed", "guidance"):
        if getattr(args, key) is not None:
            p[key] = getattr(args, key)
    return p


def preview_or_require_output(args, cfg) -> int | None:
    """`--preview-controls DIR`: write the control videos here on the CPU and return the exit code
    (no job, no model run). Otherwise None, after checking that -o was given."""
    import sys

    from facecast.controls.build import NoPerson, make_controls, write_previews
    from facecast.controls.source import model_size, read_video

    if args.preview_controls is None:
        if not args.output:
            print("refused: -o/--output is required (or --preview-controls DIR to check the controls)", file=sys.stderr)
            return 2
        return None
    try:
        source = read_video(Path(args.driving))
        h0, w0 = source.frames[0].shape[:2]
        width, height = (args.width, args.height) if args.width and args.height else model_size(w0, h0)
        face = face_size(Path(args.model)) if args.model else 512
        controls = make_controls(source.frames, width, height, face_size=face, with_mask=args.mode == "replace")
        written = write_previews(controls, source.rate, Path(args.preview_controls))
    except (NoPerson, ValueError, OSError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # av's errors: not a readable video
        print(f"refused: cannot read {args.driving}: {exc}", file=sys.stderr)
        return 2
    n = len(controls.frames)
    print(
        f"{n} frames at {float(source.rate):g} fps, {width}x{height}: body in {controls.pose_frames}, "
        f"face in {controls.face_frames}"
    )
    for path in written:
        print(path)
    return 0
