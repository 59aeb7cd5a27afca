"""The generate job on a tiny diffusion pipeline built from configs with random weights."""

from __future__ import annotations

from pathlib import Path

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
        ({"width": 40}, "width divisible by 32"),
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
