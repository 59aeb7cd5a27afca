"""The generate job on a tiny diffusion pipeline built from configs with random weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="the diffusion extras (facecast[diffusion]) are not installed")

from facecast.jobs.folders import AllowedFolders
from facecast.jobs.kinds.generate import GenerateKind
from facecast.jobs.runner import BatchRunner, JobRejected
from facecast.jobs.store import JobStore
from tests.conftest import PORTRAIT, count_frames
from tests.diffusion_fixtures import make_tiny_ltx


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_ltx(tmp_path_factory.mktemp("tiny-ltx"))


def _kind(model: Path) -> GenerateKind:
    """Inputs from the portrait's folder, pipelines from the folder the model is in (as models.dir)."""
    return GenerateKind(
        AllowedFolders([PORTRAIT.parent], "jobs.input_dirs"),
        AllowedFolders([model.parent], "models.dir, jobs.generate_model_dirs"),
    )


def _params(model: Path, **kw):
    return {
        "character": str(PORTRAIT),
        "prompt": "she smiles and nods",
        "model": str(model),
        "frames": 9,
        "width": 32,
        "height": 32,
        "steps": 2,
        "fps": 12,
        **kw,
    }


def test_generate_writes_a_video_of_the_requested_frames(tiny_model, tmp_path):
    kind = _kind(tiny_model)
    kind.validate(_params(tiny_model))
    store = JobStore(tmp_path / "jobs.sqlite")
    out = tmp_path / "gen.mp4"
    store.submit("generate", _params(tiny_model), str(out))
    final = BatchRunner(store, {"generate": kind}).run_one()
    assert final.status == "done", final.error
    assert count_frames(out) == 9


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"frames": 10}, r"frames = 8k\+1"),
        ({"width": 40}, r"LTXImageToVideoPipeline \(LTX-Video\) needs width divisible by 32"),
        ({"prompt": " "}, "prompt: must not be blank"),
        ({"character": "/nonexistent.png"}, "no such file in the allowed folders"),
        ({"steps": "30"}, "steps: Input should be a valid integer"),
    ],
)
def test_bad_generate_requests_are_refused_with_the_reason(tiny_model, change, reason):
    with pytest.raises(JobRejected, match=reason):
        _kind(tiny_model).validate(_params(tiny_model, **change))


def test_a_folder_that_is_not_a_pipeline_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobRejected, match=r"model_index\.json"):
        _kind(tmp_path / "empty").validate(_params(tmp_path / "empty"))


# --- LoRAs: real peft LoRA files in diffusers' format, made for the tiny Wan pipeline ---------------

TAGS = {"trainset": {"zorblax style": 12, "neon": 5, "portrait": 3}}


@pytest.fixture(scope="module")
def wan_and_loras(tmp_path_factory):
    import json

    from tests.diffusion_fixtures import make_lora, make_tiny

    root = tmp_path_factory.mktemp("wan-lora")
    model = make_tiny("wan", root)
    folder = root / "loras"
    (folder / "styles").mkdir(parents=True)
    make_lora(model, folder / "glow.safetensors", metadata={"modelspec.trigger_phrase": "glowing eyes, ember"})
    make_lora(model, folder / "styles" / "zorb.safetensors", seed=2, metadata={"ss_tag_frequency": json.dumps(TAGS)})
    make_lora(model, folder / "plain.safetensors", seed=3)
    return model, folder


def _wan_frames(kind, model, tmp_path, name, **kw):
    import cv2

    params = {"prompt": "a dancer", "model": str(model), "frames": 5, "width": 16, "height": 16, "steps": 2, **kw}
    store = JobStore(tmp_path / f"{name}.sqlite")
    out = tmp_path / f"{name}.mp4"
    store.submit("generate", kind.validate(params), str(out))
    final = BatchRunner(store, {"generate": kind}).run_one()
    assert final.status == "done", final.error
    cap, frames = cv2.VideoCapture(str(out)), []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    return np.stack(frames)


def test_a_lora_changes_the_output_and_unloading_restores_it(wan_and_loras, tmp_path):
    model, folder = wan_and_loras
    kind = _kind(model)
    kind.lora_dirs = [folder]
    plain = _wan_frames(kind, model, tmp_path, "plain")
    with_lora = _wan_frames(kind, model, tmp_path, "lora", loras=[{"name": "styles/zorb", "weight": 1.0}])
    assert np.abs(with_lora.astype(int) - plain.astype(int)).mean() > 1.0  # the adapter really acts
    assert not kind._loaded[1].get_list_adapters()  # unloaded after the job; the pipeline is kept
    again = _wan_frames(kind, model, tmp_path, "again")
    assert np.array_equal(again, plain)


def test_lora_requests_are_checked_at_submit(wan_and_loras):
    model, folder = wan_and_loras
    kind = _kind(model)
    kind.lora_dirs = [folder]
    base = {"prompt": "a dancer", "model": str(model), "frames": 5, "width": 16, "height": 16}
    with pytest.raises(JobRejected, match=r"LoRA 'nope' not found in .*available: glow, plain, styles/zorb"):
        kind.validate({**base, "loras": [{"name": "nope"}]})
    with pytest.raises(JobRejected, match=r"loras\.0\.weight: Input should be less than or equal to 4"):
        kind.validate({**base, "loras": [{"name": "glow", "weight": 8.0}]})
    with pytest.raises(JobRejected, match=r"LoRA '\.\./escape' not found"):
        kind.validate({**base, "loras": [{"name": "../escape"}]})


def test_loras_are_listed_with_their_triggers_and_matched_to_a_prompt(wan_and_loras):
    from facecast.jobs.loras import find_loras, matches

    _, folder = wan_and_loras
    found = {lora.name: lora for lora in find_loras([folder])}
    assert set(found) == {"glow", "plain", "styles/zorb"}
    assert found["glow"].triggers == ("glowing eyes", "ember")
    assert found["styles/zorb"].tags == ("zorblax style", "neon", "portrait")
    assert matches(found["glow"], "A dancer with Glowing Eyes") == ["glowing eyes"]
    assert matches(found["styles/zorb"], "neon city, zorblax style") == ["zorblax style", "neon"]
    assert matches(found["glow"], "embers fly") == []  # whole words only
    assert matches(found["plain"], "anything") == []


def test_facecast_jobs_loras_lists_the_matching_ones(wan_and_loras, tmp_path):
    from tests.conftest import run_facecast

    _, folder = wan_and_loras
    common = ("jobs", "--offline", "--set", f"jobs.db={tmp_path / 'q.sqlite'}", "--set", f"jobs.lora_dirs=[{folder}]")
    everything = run_facecast(*common, "loras")
    assert everything.returncode == 0, everything.stderr
    assert [line for line in everything.stdout.splitlines() if not line.startswith(" ")] == [
        "glow",
        "plain",
        "styles/zorb",
    ]
    matched = run_facecast(*common, "loras", "--prompt", "a neon street at night")
    assert matched.returncode == 0, matched.stderr
    assert matched.stdout.splitlines()[0] == "styles/zorb" and "matches: neon" in matched.stdout
    assert "glow" not in matched.stdout


def test_generate_submitted_from_the_cli_with_shots_and_a_lora(wan_and_loras, tmp_path):
    from tests.conftest import run_facecast

    model, folder = wan_and_loras
    (tmp_path / "recordings").mkdir()
    out = tmp_path / "recordings" / "two.mp4"
    common = (
        "jobs", "--offline", "--set", f"jobs.db={tmp_path / 'q.sqlite'}", "--set", f"jobs.lora_dirs=[{folder}]",
        "--set", f"jobs.generate_model_dirs=[{model.parent}]",
    )  # fmt: skip
    submitted = run_facecast(
        *common, "submit", "generate", "--model", str(model), "--prompt", "she waves", "--prompt", "she bows",
        "--lora", "glow:0.7", "--frames", "5", "--width", "16", "--height", "16", "--steps", "1", "-o", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    ran = run_facecast(*common, "run", cwd=tmp_path, timeout=300)
    assert ran.returncode == 0, ran.stderr
    assert count_frames(out) == 10  # two shots of 5
    bad = run_facecast(*common, "submit", "generate", "--prompt", "x", "--lora", "glow:strong", "-o", str(out))
    assert bad.returncode == 2 and "the weight after ':' must be a number" in bad.stderr
