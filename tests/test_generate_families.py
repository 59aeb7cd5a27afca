"""Every pipeline family of `generate` end to end on its tiny random-weight pipeline (built from
configs by facecast.jobs.tiny, nothing downloaded): text- and image-to-video, multi-shot, per-step
progress and cancel, and each family's size and frame rules. The table is also checked against the
installed diffusers' own __call__ signatures."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

diffusers = pytest.importorskip("diffusers", reason="the diffusion extras (facecast[diffusion]) are not installed")

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from facecast.jobs.folders import AllowedFolders  # noqa: E402
from facecast.jobs.kinds.generate import FAMILIES, GenerateKind  # noqa: E402
from facecast.jobs.runner import BatchRunner, JobCancelled, JobContext, JobRejected  # noqa: E402
from facecast.jobs.store import JobStore  # noqa: E402
from facecast.jobs.tiny import TINY  # noqa: E402
from tests.conftest import PORTRAIT, count_frames  # noqa: E402
from tests.diffusion_fixtures import make_tiny  # noqa: E402

# tiny pipeline -> the smallest size its VAE and patching accept
SIZE = {"ltx": 32, "ltx-i2v": 32, "ltx-condition": 32, "ltx2": 32, "ltx2-i2v": 32, "hunyuan15-i2v": 32}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Builds a tiny pipeline on first use, once per module."""
    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = make_tiny(name, root)
        return built[name]

    return get


def _kind(model: Path, **kw) -> GenerateKind:
    return GenerateKind(
        AllowedFolders([PORTRAIT.parent], "jobs.input_dirs"),
        AllowedFolders([model.parent], "models.dir, jobs.generate_model_dirs"),
        **kw,
    )


def _params(model: Path, name: str, **kw):
    size = SIZE.get(name, 16)
    prompt = {} if "shots" in kw else {"prompt": "she smiles and nods"}
    return {**prompt, "model": str(model), "width": size, "height": size, "steps": 2, **kw}


def _run(kind: GenerateKind, params: dict, out: Path):
    store = JobStore(out.with_suffix(".sqlite"))
    store.submit("generate", kind.validate(params), str(out))
    return BatchRunner(store, {"generate": kind}).run_one()


@pytest.mark.parametrize(
    "name, mode, frames",
    [
        ("wan", "t2v", 9),
        ("wan-i2v", "i2v", 5),
        ("ltx", "t2v", 9),
        ("ltx", "i2v", 9),  # LTXImageToVideoPipeline from the same components (from_pipe)
        ("ltx-i2v", "i2v", 9),
        ("ltx-condition", "i2v", 9),
        ("ltx2", "t2v", 9),  # video and audio (the soundtrack: tests below)
        ("ltx2", "i2v", 9),  # LTX2ImageToVideoPipeline from the same components
        ("ltx2-i2v", "i2v", 9),
        ("hunyuan", "t2v", 5),
        ("hunyuan-i2v", "i2v", 5),  # latent_concat: asks for 4 frames more, the pipeline drops them
        ("hunyuan-i2v-token", "i2v", 5),  # token_replace: drops none
        ("hunyuan15", "t2v", 5),
        ("hunyuan15-i2v", "i2v", 5),  # 32x32: one of the sizes it makes (its buckets: tests below)
        ("skyreels", "t2v", 5),
        ("skyreels-i2v", "i2v", 5),
        ("skyreels-df", "i2v", 9),  # the diffusion-forcing image-to-video sibling
    ],
)
def test_every_family_generates_end_to_end(tiny, tmp_path, name, mode, frames):
    model = tiny(name)
    extra = {"character": str(PORTRAIT)} if mode == "i2v" else {}
    final = _run(_kind(model), _params(model, name, mode=mode, frames=frames, fps=10, **extra), tmp_path / "out.mp4")
    assert final.status == "done", final.error
    assert count_frames(tmp_path / "out.mp4") == frames
    cap = cv2.VideoCapture(str(tmp_path / "out.mp4"))
    size = SIZE.get(name, 16)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (size, size)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    cap.release()


@pytest.mark.parametrize("cls", list(FAMILIES))
def test_the_family_table_matches_the_installed_pipelines(cls):
    """What the table says about each class is what diffusers' __call__ really takes."""
    family = FAMILIES[cls]
    call = inspect.signature(getattr(diffusers, cls).__call__).parameters
    assert "num_frames" in call and "prompt" in call
    assert ("image" in call) == (family.mode == "i2v")
    assert ("callback_on_step_end" in call) == family.step_callback
    assert ("height" in call and "width" in call) == family.size_args
    if family.fps_arg:
        assert family.fps_arg in call
    if family.other_mode:  # a sibling must be built from exactly the same components
        mine = set(inspect.signature(getattr(diffusers, cls).__init__).parameters)
        theirs = set(inspect.signature(getattr(diffusers, family.other_mode).__init__).parameters)
        assert mine == theirs and FAMILIES[family.other_mode].mode != family.mode


def test_the_tiny_registry_covers_every_family_with_a_builder():
    classes = {cls for _, _, cls in TINY.values()}
    assert {c for c in FAMILIES if c not in classes and FAMILIES[c].other_mode not in classes} == set()
    assert {"WanAnimatePipeline", "WanVACEPipeline"} <= classes


def _template(cls: str) -> dict:
    return inspect.signature(getattr(diffusers, cls).__call__).parameters["prompt_template"].default


@pytest.mark.parametrize("name", ["hunyuan", "hunyuan-i2v"])
def test_tiny_llama_tokenizers_give_the_template_its_llama3_token_positions(tiny, name):
    """HunyuanVideo (I2V) cut the prompt's and the image's embeddings out of the encoded template
    at positions counted in Llama 3 tokens: the tiny folder's tokenizer must land on them."""
    from transformers import AutoTokenizer

    cls = TINY[name][2]
    template = _template(cls)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny(name) / "tokenizer"))
    ids = tokenizer(template["template"].split("{}")[0]).input_ids
    assert len(ids) == template["crop_start"]  # the prompt starts where the pipeline crops
    if "image_emb_start" in template:
        assert ids.index(tokenizer.convert_tokens_to_ids("<image>")) == template["image_emb_start"]


def test_tiny_qwen_tokenizer_puts_the_prompt_where_hunyuan_video_15_crops(tiny):
    from diffusers.pipelines.hunyuan_video1_5.pipeline_hunyuan_video1_5 import format_text_input
    from transformers import AutoTokenizer

    encode = diffusers.HunyuanVideo15Pipeline._get_mllm_prompt_embeds
    defaults = {k: p.default for k, p in inspect.signature(encode).parameters.items()}
    tokenizer: Any = AutoTokenizer.from_pretrained(str(tiny("hunyuan15") / "tokenizer"))
    chat = format_text_input(["XYZ"], defaults["system_message"])[0]
    ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, return_dict=True).input_ids
    crop = defaults["crop_start"]  # what the pipeline cuts off the front: all of the template, none of the prompt
    assert tokenizer.decode(ids[:crop]).endswith("<|im_start|>user\n")
    assert tokenizer.decode(ids[crop:]).startswith("XYZ<|im_end|>")


@pytest.mark.parametrize(
    "name, change, reason",
    [
        ("wan", {"frames": 10}, r"WanPipeline \(Wan 2.1/2.2\) needs frames = 4k\+1 .*got 10, nearest 9 or 13"),
        ("wan", {"width": 24}, r"WanPipeline \(Wan 2.1/2.2\) needs width divisible by 16, got 24"),
        ("ltx", {"frames": 13}, r"LTXPipeline \(LTX-Video\) needs frames = 8k\+1"),
        ("ltx", {"height": 48}, r"needs height divisible by 32, got 48"),
        ("hunyuan", {"frames": 8}, r"HunyuanVideoPipeline \(HunyuanVideo\) needs frames = 4k\+1"),
        ("skyreels", {"shots": [{"prompt": "a"}, {"prompt": "b", "frames": 7}]}, r"shots\.2\.frames = 4k\+1"),
        ("wan", {"mode": "i2v", "character": str(PORTRAIT)}, r"image-to-video needs a WanImageToVideoPipeline"),
        ("wan-i2v", {"mode": "i2v"}, "needs a character image"),
        ("wan", {"character": str(PORTRAIT), "mode": "t2v"}, "takes no character"),
        ("wan", {"shots": [{"prompt": "a"}], "prompt": "b"}, "either prompt .* or shots"),
    ],
)
def test_wrong_sizes_frames_and_modes_are_refused_with_the_family_rule(tiny, name, change, reason):
    model = tiny(name)
    with pytest.raises(JobRejected, match=reason):
        _kind(model).validate(_params(model, name, **change))


def test_a_pipeline_class_generate_does_not_run_is_refused(tiny, tmp_path):
    with pytest.raises(JobRejected, match=r"is a WanVACEPipeline; generate runs one of WanPipeline"):
        _kind(tiny("wan-vace")).validate(_params(tiny("wan-vace"), "wan-vace"))


class _Recorder(JobContext):
    """A real JobContext that also keeps every progress value it is given."""

    def __init__(self, *args, cancel_at: float | None = None, **kw) -> None:
        super().__init__(*args, **kw)
        self.seen: list[float] = []
        self.cancel_at = cancel_at

    def progress(self, fraction: float, detail: str | None = None) -> None:
        self.seen.append(fraction)
        if self.cancel_at is not None and fraction >= self.cancel_at:
            self.cancelled.set()
        super().progress(fraction, detail)


def _context(kind, params, tmp_path, **kw) -> _Recorder:
    store = JobStore(tmp_path / "ctx.sqlite")
    job = store.submit("generate", kind.validate(params), str(tmp_path / "x.mp4"))
    return _Recorder(job, tmp_path / "part.mp4", **kw)


def test_shots_are_joined_and_progress_is_reported_per_step_and_per_shot(tiny, tmp_path):
    model = tiny("wan-i2v")
    kind = _kind(model)
    shots = [{"prompt": "she waves"}, {"prompt": "she turns", "frames": 9}]
    params = _params(model, "wan-i2v", character=str(PORTRAIT), shots=shots, frames=5, steps=2)
    ctx = _context(kind, params, tmp_path)
    kind.run(ctx)
    assert count_frames(ctx.temp_output) == 5 + 9  # every shot from the character image, joined in order
    steps = [round(v, 4) for v in ctx.seen]
    # 2 shots x 2 steps each, then the end of each shot, then done
    assert steps == [0.2375, 0.475, 0.475, 0.7125, 0.95, 0.95, 1.0]


def test_shots_can_continue_from_the_previous_last_frame(tiny, tmp_path):
    model = tiny("wan-i2v")
    kind = _kind(model)
    params = _params(
        model, "wan-i2v", character=str(PORTRAIT), shots=[{"prompt": "a"}, {"prompt": "b"}], frames=5,
        shot_start="previous",
    )  # fmt: skip
    ctx = _context(kind, params, tmp_path)
    kind.run(ctx)
    assert count_frames(ctx.temp_output) == 5 + 4  # the second shot's first frame repeats the first's last


def test_cancel_stops_between_denoising_steps_and_the_pipeline_runs_again(tiny, tmp_path):
    model = tiny("wan")
    kind = _kind(model)
    params = _params(model, "wan", frames=5, steps=4)
    ctx = _context(kind, params, tmp_path, cancel_at=0.2)
    with pytest.raises(JobCancelled):
        kind.run(ctx)
    assert len(ctx.seen) == 1  # stopped inside the first shot, after its first step of 4
    (tmp_path / "again").mkdir()
    again = _context(kind, params, tmp_path / "again")
    kind.run(again)  # the kept pipeline is usable after an aborted call
    assert again.seen[-1] == 1.0


# --- LTX-2's soundtrack -----------------------------------------------------------------------------


def _decoded_audio(path: Path) -> tuple[np.ndarray, int, float, float]:
    """(samples (channels, n) as decoded by FFmpeg, sample rate, audio and video stream durations in s)."""
    with av.open(str(path)) as container:
        video, sound = container.streams.video[0], container.streams.audio[0]
        durations = (float(sound.duration * sound.time_base), float(video.duration * video.time_base))
        samples = np.concatenate([frame.to_ndarray() for frame in container.decode(sound)], axis=1)
        return samples, sound.rate, *durations


def _reference_audio(kind: GenerateKind, params: dict, mode: str) -> np.ndarray:
    """The waveform the loaded pipeline itself returns for the job's call (same seed, same image)."""
    import torch
    from PIL import Image

    pipe = kind._loaded[1]
    if mode == "i2v" and type(pipe).__name__ != "LTX2ImageToVideoPipeline":
        pipe = diffusers.LTX2ImageToVideoPipeline.from_pipe(pipe)
    call: dict[str, Any] = {}
    if mode == "i2v":
        rgb = cv2.cvtColor(cv2.imread(str(PORTRAIT)), cv2.COLOR_BGR2RGB)
        call["image"] = Image.fromarray(
            cv2.resize(rgb, (params["width"], params["height"]), interpolation=cv2.INTER_AREA)
        )
    result = pipe(
        prompt=params["prompt"], num_frames=params["frames"], width=params["width"], height=params["height"],
        num_inference_steps=params["steps"], frame_rate=float(params["fps"]), output_type="np",
        generator=torch.Generator().manual_seed(0), **call,
    )  # fmt: skip
    assert pipe.vocoder.config.output_sampling_rate == 16000
    return result.audio[0].float().numpy()


@pytest.mark.parametrize("name, mode", [("ltx2", "t2v"), ("ltx2-i2v", "i2v")])
def test_ltx2_writes_its_soundtrack_as_aac_aligned_with_the_video(tiny, tmp_path, name, mode):
    model = tiny(name)
    kind = _kind(model)
    extra = {"character": str(PORTRAIT)} if mode == "i2v" else {}
    params = _params(model, name, mode=mode, frames=17, fps=24, **extra)
    final = _run(kind, params, tmp_path / "out.mp4")
    assert final.status == "done", final.error
    samples, rate, audio_s, video_s = _decoded_audio(tmp_path / "out.mp4")
    assert rate == 16000 and samples.shape[0] == 2  # the vocoder's rate and its stereo channels
    assert video_s == pytest.approx(17 / 24)
    assert abs(audio_s - video_s) < 0.002  # the stream's duration (MP4 edit list) is the video's
    assert 0 <= samples.shape[1] - round(video_s * rate) < 1024  # decoded: at most one AAC frame of padding

    reference = _reference_audio(kind, params, mode)
    made = min(reference.shape[1], round(video_s * rate))  # the model's audio ends a little before its video
    assert made > 0.9 * video_s * rate
    assert np.sqrt(np.mean(reference**2)) > 1e-3  # the model's audio is not silence, so neither is the file's
    for channel in range(2):
        assert np.corrcoef(samples[channel, :made], reference[channel, :made])[0, 1] > 0.95  # time-aligned, same sound
        rms_file, rms_model = np.sqrt(np.mean(samples[channel, :made] ** 2)), np.sqrt(np.mean(reference[channel] ** 2))
        assert rms_file == pytest.approx(rms_model, rel=0.1)
    assert np.abs(samples[:, made + 64 : round(video_s * rate)]).max(initial=0) < 0.01  # padded with silence


def test_ltx2_audio_can_be_left_out(tiny, tmp_path):
    model = tiny("ltx2")
    final = _run(_kind(model), _params(model, "ltx2", frames=9, fps=10, audio=False), tmp_path / "out.mp4")
    assert final.status == "done", final.error
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert len(container.streams.video) == 1 and not container.streams.audio


def test_families_without_a_soundtrack_write_none(tiny, tmp_path):
    model = tiny("ltx")
    final = _run(_kind(model), _params(model, "ltx", frames=9, fps=10), tmp_path / "out.mp4")
    assert final.status == "done", final.error
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert not container.streams.audio


# --- sizes: what was asked is what is made, or the job says so --------------------------------------


def _size(path: Path) -> tuple[int, int]:
    cap = cv2.VideoCapture(str(path))
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    cap.release()
    return size


def _hunyuan15_i2v(tiny, **kw) -> tuple[GenerateKind, dict, Path]:
    model = tiny("hunyuan15-i2v")
    params = {"prompt": "she smiles", "model": str(model), "character": str(PORTRAIT), "frames": 5, "steps": 2, **kw}
    return _kind(model), params, model


def test_hunyuan15_i2v_without_a_size_gets_the_bucket_of_the_character_and_makes_it(tiny, tmp_path):
    kind, params, _ = _hunyuan15_i2v(tiny)
    checked = kind.validate(params)
    assert (checked["width"], checked["height"]) == (32, 32)  # the square portrait's bucket (tiny: ~32² pixels)
    final = _run(kind, params, tmp_path / "out.mp4")
    assert final.status == "done", final.error
    assert _size(tmp_path / "out.mp4") == (32, 32)
    assert "report" not in final.params


def test_hunyuan15_i2v_makes_an_asked_size_it_has_even_of_another_aspect(tiny, tmp_path):
    """40x24 is one of its buckets, not the square portrait's: the job hands it the image at that
    size, so the pipeline picks that bucket."""
    kind, params, _ = _hunyuan15_i2v(tiny, width=40, height=24)
    final = _run(kind, params, tmp_path / "out.mp4")
    assert final.status == "done", final.error
    assert _size(tmp_path / "out.mp4") == (40, 24)


@pytest.mark.parametrize(
    "size, reason",
    [
        ({"width": 32, "height": 16}, r"asked 32x16, it would make 40x20; sizes it makes near that aspect: .*40x20"),
        ({"width": 24, "height": 40}, r"asked 24x40, it would make 24x36"),  # the pipeline's rule, not ours
        ({"width": 32}, "give both width and height, or neither"),
    ],
)
def test_hunyuan15_i2v_refuses_a_size_it_would_not_make_naming_what_it_would(tiny, size, reason):
    kind, params, _ = _hunyuan15_i2v(tiny, **size)
    with pytest.raises(JobRejected, match=r"HunyuanVideo15ImageToVideoPipeline \(HunyuanVideo 1.5\) .*" + reason):
        kind.validate(params)


def test_a_run_that_makes_another_size_says_so_in_the_job_and_keeps_the_frames(tiny, tmp_path, caplog):
    """Past the submit check (params stored by an older facecast, a pipeline that changed): the
    real pipeline makes its own bucket, and the job's report and log say what was asked and made."""
    kind, params, _ = _hunyuan15_i2v(tiny)
    stored = {**kind.validate(params), "width": 32, "height": 16}
    store = JobStore(tmp_path / "jobs.sqlite")
    job = store.submit("generate", stored, str(tmp_path / "out.mp4"))
    final = BatchRunner(store, {"generate": kind}).run_one()
    assert final.status == "done", final.error
    assert _size(tmp_path / "out.mp4") == (40, 20)  # as made, not stretched
    report = store.get(job.id).params["report"]
    assert report["size"].startswith("40x20, asked 32x16")
    assert "the video is 40x20, asked 32x16" in caplog.text


def test_no_audio_on_the_command_line_is_the_audio_param():
    import argparse

    from facecast.jobs.kinds.generate_cli import add_cli_arguments, cli_params

    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert cli_params(parser.parse_args(["--prompt", "x", "--no-audio"]), str)["audio"] is False
    assert "audio" not in cli_params(parser.parse_args(["--prompt", "x"]), str)  # the default: written


def test_a_soundtrack_rate_aac_cannot_carry_is_refused_at_submit(tiny, tmp_path):
    import json
    import shutil

    model = shutil.copytree(tiny("ltx2"), tmp_path / "ltx2-odd-rate")
    config = model / "vocoder" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "output_sampling_rate": 1000}))
    kind = _kind(model)
    with pytest.raises(JobRejected, match=r"makes audio at 1000 Hz, which an AAC track cannot carry .*--no-audio"):
        kind.validate(_params(model, "ltx2", frames=9))
    assert kind.validate(_params(model, "ltx2", frames=9, audio=False))["audio"] is False
