"""`generate`: text-to-video or image-to-video of a character with a diffusers video pipeline, in
one or several shots, optionally with LoRAs.

Every supported pipeline class is one row of `FAMILIES` (what it needs: size multiple, frame
rule, default size/frames/fps, dtype, how the image and the fps are passed, whether it reports
steps, whether it makes audio); the job itself has no per-family branch. Needs the optional diffusion requirements and a
pipeline folder the user downloaded (e.g. `huggingface-cli download Lightricks/LTX-Video
--local-dir ...`); a GPU is expected for real models. The loaded pipeline is kept for the next
job; LoRAs are loaded per job and unloaded after it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import cv2
import numpy as np
from pydantic import BeforeValidator, Field

from facecast.jobs import loras as lora_files
from facecast.jobs.folders import AllowedFolders
from facecast.jobs.params import JsonInt, ParamsModel, json_integer, parse_params
from facecast.jobs.runner import JobCancelled, JobContext, JobFailed, JobRejected
from facecast.media.audio import AAC_RATES, Waveform, write_video_with_audio
from facecast.media.video import write_video

log = logging.getLogger(__name__)

Mode = Literal["t2v", "i2v"]
Size = tuple[int, int]  # (width, height)


def _component_config(model_dir: Path, component: str) -> dict[str, Any]:
    try:
        return json.loads((model_dir / component / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise JobRejected(f"model {model_dir}: no readable {component}/config.json ({exc})") from None


def hunyuan15_buckets(model_dir: Path) -> list[Size]:
    """The sizes HunyuanVideo 1.5 image-to-video makes: its buckets of about target_size² pixels in
    steps of the VAE's compression (diffusers' own list), those it picks for an image of their size."""
    from diffusers.pipelines.hunyuan_video1_5.image_processor import generate_crop_size_list

    target = int(_component_config(model_dir, "transformer").get("target_size", 640))
    step = int(_component_config(model_dir, "vae").get("spatial_compression_ratio", 16))
    listed = [(int(w), int(h)) for h, w in generate_crop_size_list(base_size=target, patch_size=step)]
    return [size for size in listed if hunyuan15_image_size(model_dir, *size) == size]


def hunyuan15_image_size(model_dir: Path, width: int, height: int) -> Size:
    """The (width, height) HunyuanVideo 1.5 image-to-video makes from an image of this size: the
    bucket nearest its aspect (the pipeline's own rule, run on the folder's config)."""
    from diffusers.pipelines.hunyuan_video1_5.image_processor import HunyuanVideo15ImageProcessor

    target = int(_component_config(model_dir, "transformer").get("target_size", 640))
    step = int(_component_config(model_dir, "vae").get("spatial_compression_ratio", 16))
    processor = HunyuanVideo15ImageProcessor(vae_scale_factor=step, do_resize=False)
    made_h, made_w = processor.calculate_default_height_width(height=height, width=width, target_size=target)
    return int(made_w), int(made_h)


@dataclass(frozen=True, slots=True)
class Family:
    """What one diffusers pipeline class needs. Defaults are the class's own `__call__` defaults
    (diffusers 0.42); `multiple` and `frame_step` are its VAE's spatial and temporal compression."""

    label: str
    mode: Mode
    multiple: int  # width and height divisible by this
    frame_step: int  # frames = frame_step * k + 1
    fps: float  # the rate the model was trained at
    width: int
    height: int
    frames: int
    dtype: str = "bfloat16"  # on a GPU; the CPU runs float32
    fps_arg: str | None = None  # the __call__ argument that tells the model the frame rate
    step_callback: bool = True  # __call__ takes callback_on_step_end (progress and cancel per step)
    # for a class whose __call__ takes no height/width: the (width, height) it makes from an image of
    # a given size (model folder, width, height), and every size it can make
    size_from_image: Callable[[Path, int, int], Size] | None = None
    sizes: Callable[[Path], list[Size]] | None = None
    # the output has .audio, a waveform (batch, channels, samples) at vocoder.config.output_sampling_rate
    audio: bool = False
    other_mode: str | None = None  # the class with the same components for the other mode (from_pipe)
    # the transformer's image_condition_type with which __call__ decodes one latent frame (frame_step
    # frames) more than it returns: that many more are asked for, so a job gets the frames it asked for
    drops_first_latent_with: str | None = None

    @property
    def size_args(self) -> bool:
        """__call__ takes height and width (else the size follows the image)."""
        return self.size_from_image is None


FAMILIES: dict[str, Family] = {
    "WanPipeline": Family("Wan 2.1/2.2", "t2v", 16, 4, 16.0, 832, 480, 81),
    "WanImageToVideoPipeline": Family("Wan 2.1/2.2", "i2v", 16, 4, 16.0, 832, 480, 81),
    "LTXPipeline": Family(
        "LTX-Video", "t2v", 32, 8, 25.0, 704, 512, 161, fps_arg="frame_rate", other_mode="LTXImageToVideoPipeline"
    ),
    "LTXImageToVideoPipeline": Family(
        "LTX-Video", "i2v", 32, 8, 25.0, 704, 512, 161, fps_arg="frame_rate", other_mode="LTXPipeline"
    ),
    "LTXConditionPipeline": Family(
        "LTX-Video 0.9.5+", "i2v", 32, 8, 25.0, 704, 512, 161, fps_arg="frame_rate", other_mode="LTXPipeline"
    ),
    "LTX2Pipeline": Family(
        "LTX-2", "t2v", 32, 8, 24.0, 768, 512, 121, fps_arg="frame_rate", other_mode="LTX2ImageToVideoPipeline",
        audio=True,
    ),
    "LTX2ImageToVideoPipeline": Family(
        "LTX-2", "i2v", 32, 8, 24.0, 768, 512, 121, fps_arg="frame_rate", other_mode="LTX2Pipeline", audio=True
    ),
    "HunyuanVideoPipeline": Family("HunyuanVideo", "t2v", 16, 4, 24.0, 1280, 720, 129),
    "HunyuanVideoImageToVideoPipeline": Family(
        "HunyuanVideo I2V", "i2v", 16, 4, 24.0, 1280, 720, 129, drops_first_latent_with="latent_concat"
    ),
    # HunyuanVideo 1.5's __call__ takes no step callback: progress and cancel come between shots only.
    "HunyuanVideo15Pipeline": Family("HunyuanVideo 1.5", "t2v", 16, 4, 24.0, 848, 480, 121, step_callback=False),
    # ... and makes the size of its bucket nearest the image's aspect: checked at submit.
    "HunyuanVideo15ImageToVideoPipeline": Family(
        "HunyuanVideo 1.5", "i2v", 16, 4, 24.0, 848, 480, 121, step_callback=False,
        size_from_image=hunyuan15_image_size, sizes=hunyuan15_buckets,
    ),
    "SkyReelsV2Pipeline": Family("SkyReels-V2", "t2v", 16, 4, 24.0, 960, 544, 97),
    "SkyReelsV2ImageToVideoPipeline": Family("SkyReels-V2", "i2v", 16, 4, 24.0, 960, 544, 97),
    "SkyReelsV2DiffusionForcingPipeline": Family(
        "SkyReels-V2 DF", "t2v", 16, 4, 24.0, 960, 544, 97, fps_arg="fps",
        other_mode="SkyReelsV2DiffusionForcingImageToVideoPipeline",
    ),
    "SkyReelsV2DiffusionForcingImageToVideoPipeline": Family(
        "SkyReels-V2 DF", "i2v", 16, 4, 24.0, 960, 544, 97, fps_arg="fps",
        other_mode="SkyReelsV2DiffusionForcingPipeline",
    ),
}  # fmt: skip
MODE_WORDS = {"t2v": "text-to-video", "i2v": "image-to-video"}
MAX_SHOTS = 32
Prompt = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"\S")]
Frames = Annotated[int, Field(ge=1, le=1000), BeforeValidator(json_integer)]


class LoraParams(ParamsModel):
    name: str = Field(min_length=1, description="LoRA file name (without .safetensors) in jobs.lora_dirs")
    weight: float = Field(1.0, ge=lora_files.WEIGHT_RANGE[0], le=lora_files.WEIGHT_RANGE[1])


class ShotParams(ParamsModel):
    prompt: Prompt
    frames: Frames | None = Field(None, description="this shot's frames; null = the job's frames")


class GenerateParams(ParamsModel):
    character: str | None = Field(
        None, min_length=1, description="portrait image, inside jobs.input_dirs: the reference of every shot (i2v)"
    )
    prompt: Prompt | None = Field(None, description="what happens (one shot); or give shots")
    shots: list[ShotParams] | None = Field(
        None, min_length=1, max_length=MAX_SHOTS, description="several shots, made one after the other and joined"
    )
    mode: Mode | None = Field(None, description="t2v | i2v; null = i2v with a character, t2v without")
    shot_start: Literal["character", "previous"] = Field(
        "character",
        description="what each shot after the first starts from: the character image (same look in every shot) "
        "or the previous shot's last frame (continuous motion; the look may drift)",
    )
    loras: list[LoraParams] = Field(default_factory=list, max_length=8, description="LoRAs applied for this job")
    camera_from: str | None = Field(
        None, min_length=1, description="a video whose camera movement is added to every prompt (facecast analyze)"
    )
    model: str | None = Field(
        None,
        min_length=1,
        description="diffusers pipeline folder inside models.dir or jobs.generate_model_dirs; "
        "null = jobs.generate_model",
    )
    frames: Frames | None = Field(None, description="frames per shot, frame_step*k+1 (see FAMILIES); null = 2k+1")
    steps: JsonInt = Field(30, ge=1, le=500, description="denoising steps")
    width: Annotated[int, Field(ge=16, le=4096), BeforeValidator(json_integer)] | None = Field(
        None, description="divisible by the family's multiple; null = the model's own size"
    )
    height: Annotated[int, Field(ge=16, le=4096), BeforeValidator(json_integer)] | None = Field(
        None, description="divisible by the family's multiple; null = the model's own size"
    )
    fps: Annotated[float, Field(gt=0, le=240)] | None = Field(None, description="null = the model's own rate")
    seed: JsonInt = Field(0, ge=0, le=2**32 - 1, description="random seed (same seed, same video); shot n uses seed+n")
    audio: bool = Field(True, description="write the soundtrack of models that make one (LTX-2); false = video only")


def pipeline_class(model_dir: Path) -> str:
    try:
        return json.loads((model_dir / "model_index.json").read_text())["_class_name"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JobRejected(f"model {model_dir}: not a diffusers pipeline folder (no readable model_index.json)") from exc


def load_pipeline(model_dir: Path, device: str, gpu_dtype: str, job: str, fp32_vae: bool = False) -> Any:
    """A diffusers pipeline folder loaded for `device` (auto: CUDA when present): on CUDA in `gpu_dtype`
    with model CPU offload (VRAM stays free for the live engines) and VAE tiling; on the CPU in FP32,
    with a warning. `fp32_vae`: the VAE stays FP32 (the Wan VAE decodes cleanly only in FP32)."""
    import diffusers
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, gpu_dtype) if device == "cuda" else torch.float32
    pipe = diffusers.DiffusionPipeline.from_pretrained(str(model_dir), torch_dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    if device == "cuda":
        if fp32_vae:
            pipe.vae.to(torch.float32)
        pipe.enable_model_cpu_offload()
        if hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
            pipe.vae.enable_tiling()
    else:
        pipe.to(device)
        log.warning("%s runs on the CPU: real video models need a GPU to finish in reasonable time", job)
    return pipe


def class_for(folder_class: str, mode: Mode, model_dir: Path) -> str:
    """The pipeline class that runs `mode` on this folder, or JobRejected saying which folder is needed."""
    if folder_class not in FAMILIES:
        raise JobRejected(
            f"model {model_dir} is a {folder_class}; generate runs one of {', '.join(FAMILIES)} (docs/JOBS.md)"
        )
    family = FAMILIES[folder_class]
    if family.mode == mode:
        return folder_class
    if family.other_mode is not None:
        return family.other_mode
    wanted = [name for name, f in FAMILIES.items() if f.label == family.label and f.mode == mode]
    need = f"a {' or '.join(wanted)} folder" if wanted else f"another {family.label} model"
    raise JobRejected(
        f"model {model_dir} is a {folder_class} ({MODE_WORDS[family.mode]}); {MODE_WORDS[mode]} needs {need}"
    )


def check_shape(cls: str, width: int, height: int, frames: int, where: str = "frames", size: bool = True) -> None:
    family = FAMILIES[cls]
    k = family.frame_step
    if (frames - 1) % k:
        lower = (frames - 1) // k * k + 1
        raise JobRejected(
            f"{cls} ({family.label}) needs {where} = {k}k+1 (e.g. {k * 2 + 1}, {k * 6 + 1}); "
            f"got {frames}, nearest {lower} or {lower + k}"
        )
    for key, value in (("width", width), ("height", height)) if size else ():
        if value % family.multiple:
            raise JobRejected(f"{cls} ({family.label}) needs {key} divisible by {family.multiple}, got {value}")


class GenerateKind:
    name = "generate"

    def __init__(
        self,
        inputs: AllowedFolders,
        models: AllowedFolders,
        default_model: Path | None = None,
        device: str = "auto",
        lora_dirs: list[Path] | None = None,
    ) -> None:
        self.inputs = inputs  # jobs.input_dirs: where the character image may be
        self.models = models  # models.dir, jobs.generate_model_dirs: where a pipeline folder may be
        self.default_model = default_model
        self.device = device
        self.lora_dirs = list(lora_dirs or [])  # jobs.lora_dirs (default: models.dir/loras)
        self._loaded: tuple[Path, Any] | None = None
        self._lock = threading.Lock()

    def _model_dir(self, params: dict[str, Any]) -> Path:
        model = params.get("model") or self.default_model
        if not model:
            raise JobRejected("no diffusion model: pass --model PIPELINE_FOLDER or set jobs.generate_model")
        return self.models.folder(model, "model folder")

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        checked = parse_params(GenerateParams, params, "generate").model_dump(exclude_none=True)
        if ("prompt" in checked) == ("shots" in checked):
            raise JobRejected("generate: give either prompt (one shot) or shots (several), not both or neither")
        mode = checked.setdefault("mode", "i2v" if "character" in checked else "t2v")
        if mode == "i2v" and "character" not in checked:
            raise JobRejected("generate: image-to-video (mode i2v) needs a character image")
        if mode == "t2v" and "character" in checked:
            raise JobRejected("generate: text-to-video (mode t2v) takes no character; drop it or use mode i2v")
        model_dir = self._model_dir(checked)  # inside the allowed folders before anything reads it
        image_size: Size | None = None
        if "character" in checked:
            image = self.inputs.file(checked["character"], "character")
            pixels = cv2.imread(str(image))
            if pixels is None:
                raise JobRejected(f"character image cannot be read: {image}")
            checked["character"] = str(image)
            image_size = (pixels.shape[1], pixels.shape[0])
        if "camera_from" in checked:
            from facecast.jobs.kinds.video_effect import probe_video

            camera = self.inputs.file(checked["camera_from"], "camera_from")
            probe_video(camera)
            checked["camera_from"] = str(camera)
        try:
            import diffusers
        except ImportError as exc:
            raise JobRejected(
                f'generate needs the diffusion extras: pip install "facecast[diffusion]" ({exc})'
            ) from None
        cls = class_for(pipeline_class(model_dir), mode, model_dir)
        family = FAMILIES[cls]
        if not hasattr(diffusers, cls):
            raise JobRejected(f"model {model_dir} needs {cls}, which this diffusers ({diffusers.__version__}) lacks")
        checked.setdefault("frames", family.frame_step * 2 + 1)
        if family.size_from_image is not None:
            assert image_size is not None  # image-to-video: a character was required above
            checked["width"], checked["height"] = self._size_from_image(cls, model_dir, checked, image_size)
        checked.setdefault("width", family.width)
        checked.setdefault("height", family.height)
        check_shape(cls, checked["width"], checked["height"], checked["frames"], size=family.size_args)
        for n, shot in enumerate(checked.get("shots", []), 1):
            if "frames" in shot:
                check_shape(cls, checked["width"], checked["height"], shot["frames"], f"shots.{n}.frames", False)
        if family.audio and checked["audio"]:
            rate = _component_config(model_dir, "vocoder").get("output_sampling_rate")
            if rate not in AAC_RATES:
                raise JobRejected(
                    f"model {model_dir} makes audio at {rate} Hz, which an AAC track cannot carry "
                    f"({', '.join(map(str, AAC_RATES))}): pass --no-audio"
                )
        if checked["loras"] and not hasattr(getattr(diffusers, cls), "load_lora_weights"):
            raise JobRejected(f"{cls} ({family.label}) has no LoRA loader in diffusers: drop --lora")
        for lora in checked["loras"]:
            lora_files.resolve(lora["name"], self.lora_dirs)
        if "model" in checked:
            checked["model"] = str(model_dir)
        return checked

    @staticmethod
    def _size_from_image(cls: str, model_dir: Path, checked: dict[str, Any], image_size: Size) -> Size:
        """The size a class that picks its own (from the image) will make, which must be the one
        asked for: the job hands it the character at width x height, so an asked size is honoured
        when the class makes exactly that size from an image of that size; any other is refused.
        Neither given: the size it makes from the character image as it is."""
        family = FAMILIES[cls]
        assert family.size_from_image is not None and family.sizes is not None
        given = [key for key in ("width", "height") if key in checked]
        if not given:
            return family.size_from_image(model_dir, *image_size)
        if len(given) == 1:
            raise JobRejected(f"{cls} ({family.label}) makes sizes of its own: give both width and height, or neither")
        asked = (int(checked["width"]), int(checked["height"]))
        made = family.size_from_image(model_dir, *asked)
        if made == asked:
            return asked
        aspect = asked[0] / asked[1]
        near = sorted(family.sizes(model_dir), key=lambda s: abs(np.log(s[0] / s[1] / aspect)))[:4]
        own = family.size_from_image(model_dir, *image_size)
        raise JobRejected(
            f"{cls} ({family.label}) makes only its own sizes: asked {asked[0]}x{asked[1]}, it would make "
            f"{made[0]}x{made[1]}; sizes it makes near that aspect: {', '.join(f'{w}x{h}' for w, h in near)} "
            f"(or leave width and height out: {own[0]}x{own[1]} for this character image)"
        )

    def _pipeline(self, model_dir: Path, cls: str) -> Any:
        import diffusers

        with self._lock:
            if self._loaded is None or self._loaded[0] != model_dir:
                self._loaded = None  # the previous pipeline goes before the next one is read
                self._loaded = (model_dir, load_pipeline(model_dir, self.device, FAMILIES[cls].dtype, "generate"))
            pipe = self._loaded[1]
        if type(pipe).__name__ != cls:  # the other mode of the same components: shares the loaded modules
            pipe = getattr(diffusers, cls).from_pipe(pipe)
            pipe.set_progress_bar_config(disable=True)
        return pipe

    def run(self, ctx: JobContext) -> None:
        params = ctx.params
        try:  # again: the folders may have changed since the submit
            model_dir = self._model_dir(params)
            image_path = self.inputs.file(params["character"], "character") if params.get("character") else None
            cls = class_for(pipeline_class(model_dir), params.get("mode", "i2v"), model_dir)
            lora_paths = [
                (lora_files.resolve(lora["name"], self.lora_dirs), float(lora.get("weight", 1.0)))
                for lora in params.get("loras", [])
            ]
        except JobRejected as exc:
            raise JobFailed(str(exc)) from None
        family = FAMILIES[cls]
        width, height = int(params.get("width", family.width)), int(params.get("height", family.height))
        character = None
        if image_path is not None:
            bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise JobFailed(f"character image cannot be read: {image_path}")
            character = cv2.cvtColor(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        pipe = self._pipeline(model_dir, cls)
        adapters = self._load_loras(pipe, lora_paths)
        try:
            shots, audio = self._render_shots(ctx, pipe, cls, character, width, height)
        finally:
            if adapters:
                pipe.unload_lora_weights()  # the kept pipeline goes back to the plain model
        made = (shots.shape[2], shots.shape[1])
        if made != (width, height):  # never rescaled: said in the job's report and the log
            note = f"{made[0]}x{made[1]}, asked {width}x{height} ({cls} made another size; written as made)"
            log.warning("generate job %s: the video is %s", ctx.job.id, note)
            ctx.report = {**(ctx.report or {}), "size": note}
        fps = float(params.get("fps", family.fps))
        video = (cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in shots)
        if audio is not None:
            write_video_with_audio(ctx.temp_output, video, fps, audio.fitted(len(shots) / fps))
        else:
            write_video(ctx.temp_output, video, fps)
        ctx.progress(1.0)

    @staticmethod
    def _load_loras(pipe: Any, lora_paths: list[tuple[Path, float]]) -> list[str]:
        """Load each LoRA as its own adapter and weight them; a file that does not fit this
        pipeline fails the job by name (and what was loaded is unloaded again)."""
        names: list[str] = []
        for n, (path, _) in enumerate(lora_paths):
            try:
                pipe.load_lora_weights(str(path), adapter_name=f"facecast_{n}")
            except (ValueError, KeyError, RuntimeError) as exc:
                if names:
                    pipe.unload_lora_weights()
                raise JobFailed(f"LoRA {path.name} does not fit {type(pipe).__name__}: {exc}") from None
            names.append(f"facecast_{n}")
        if names:
            pipe.set_adapters(names, adapter_weights=[weight for _, weight in lora_paths])
        return names

    def _render_shots(
        self, ctx: JobContext, pipe: Any, cls: str, character: np.ndarray | None, width: int, height: int
    ) -> tuple[np.ndarray, Waveform | None]:
        """Every shot in order, joined: uint8 RGB frames (N, H, W, 3), and the soundtrack when the
        family makes one (each shot's audio fitted to its frames, so shots stay in sync when joined)."""
        import torch
        from PIL import Image

        params = ctx.params
        family = FAMILIES[cls]
        shots = params.get("shots") or [{"prompt": params["prompt"]}]
        if params.get("camera_from"):  # the same camera movement in every shot
            from facecast.analyze.camera import camera_prompt

            camera = camera_prompt(Path(params["camera_from"]))
            shots = [{**shot, "prompt": f"{shot['prompt']}. {camera}"} for shot in shots]
        steps = int(params.get("steps", 30))
        total = len(shots) * steps
        transformer_config = getattr(getattr(pipe, "transformer", None), "config", None) or {}
        dropped = 0
        if family.drops_first_latent_with is not None:
            if transformer_config.get("image_condition_type") == family.drops_first_latent_with:
                dropped = family.frame_step
        done: list[np.ndarray] = []
        sounds: list[np.ndarray] = []
        fps = float(params.get("fps", family.fps))
        audio_rate = int(pipe.vocoder.config.output_sampling_rate) if family.audio and params.get("audio", True) else 0
        start = character
        for index, shot in enumerate(shots):
            base = index * steps

            def on_step(pipeline, step: int, timestep, kwargs, base=base):
                where = f"shot {base // steps + 1}/{len(shots)}, step {step + 1}/{steps}"
                ctx.progress(0.95 * min(total, base + step + 1) / total, where)  # raises JobCancelled to stop
                return kwargs

            call: dict[str, Any] = {
                "prompt": str(shot["prompt"]),
                "num_frames": int(shot.get("frames", params.get("frames", family.frame_step * 2 + 1))) + dropped,
                "num_inference_steps": steps,
                "generator": torch.Generator().manual_seed(int(params.get("seed", 0)) + index),
                "output_type": "np",
            }
            if family.size_args:
                call.update(width=width, height=height)
            if family.fps_arg:
                call[family.fps_arg] = fps
            if family.mode == "i2v":
                assert start is not None  # validate() requires a character for i2v
                call["image"] = Image.fromarray(start)
            if family.step_callback:
                call["callback_on_step_end"] = on_step
            try:
                result = pipe(**call)
            except JobCancelled:
                if hasattr(pipe, "maybe_free_model_hooks"):
                    pipe.maybe_free_model_hooks()  # an aborted call leaves its offload hooks attached
                raise
            frames = (np.clip(np.asarray(result.frames[0]), 0, 1) * 255 + 0.5).astype(np.uint8)
            made = len(frames)
            if index and params.get("shot_start") == "previous":
                frames = frames[1:]  # its first frame repeats the last one of the shot before
            done.append(frames)
            if audio_rate:  # the audio of the frames kept, at their times
                sound = Waveform(np.asarray(result.audio[0].float().cpu(), np.float32), audio_rate).fitted(made / fps)
                sounds.append(sound.samples[:, sound.samples.shape[1] - round(len(frames) / fps * audio_rate) :])
            if params.get("shot_start") == "previous":
                start = cv2.resize(frames[-1], (width, height), interpolation=cv2.INTER_AREA)
            ctx.progress(
                0.95 * (index + 1) / len(shots), f"shot {index + 1}/{len(shots)} done"
            )  # per shot: also where a step-less family can stop
        audio = Waveform(np.concatenate(sounds, axis=1), audio_rate) if audio_rate else None
        return np.concatenate(done), audio
