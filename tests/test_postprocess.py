"""Post steps on a job's output: frame interpolation (CPU flow and the ONNX contract) and the
quality report stored with the job."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecast.jobs.runner import BatchRunner, JobContext, JobRejected
from facecast.jobs.store import JobStore
from facecast.postprocess.hook import PostSteps
from facecast.postprocess.interpolate import interpolate_flow
from tests.conftest import PORTRAIT, write_video
from tests.test_jobs_cli import _probe

FPS = 12.0


def _shifted(dx: float) -> np.ndarray:
    image = cv2.imread(str(PORTRAIT))[::2, ::2]
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, 0]]), (256, 256), borderMode=cv2.BORDER_REPLICATE)


class CopyKind:
    """Test scaffolding: a kind whose output is a given video, so the post steps are what is tested."""

    name = "copy"

    def __init__(self, video: Path) -> None:
        self.video = video

    def validate(self, params):
        return dict(params)

    def run(self, ctx: JobContext) -> None:
        shutil.copyfile(self.video, ctx.temp_output)


@pytest.fixture
def moving(tmp_path) -> Path:
    return write_video(tmp_path / "moving.mp4", [_shifted(8 * i) for i in range(9)], FPS, audio=True)


def test_flow_interpolation_puts_the_true_middle_between_neighbours():
    frames = [_shifted(8 * i) for i in range(4)]
    out = interpolate_flow(frames, 12, 24)
    assert len(out) == 8
    truth = _shifted(4)  # the picture half-way between frames 0 and 1
    err = lambda a, b: float(np.abs(a[:, 20:-20].astype(int) - b[:, 20:-20]).mean())  # noqa: E731
    assert err(out[1], truth) < 0.5 * min(err(frames[0], truth), err(frames[1], truth))
    assert out[0] is frames[0] and out[2] is frames[1]


def _run(tmp_path, video: Path, models: Path, **params):
    db = tmp_path / "jobs.sqlite"
    store = JobStore(db)
    kind = PostSteps(CopyKind(video), models)
    out = tmp_path / "out.mp4"
    store.submit("copy", kind.validate(params), str(out))
    final = BatchRunner(store, {"copy": kind}).run_one()
    assert final.status == "done", final.error
    return out, final


def test_interpolation_job_doubles_frames_and_keeps_audio(tmp_path, moving):
    out, _ = _run(tmp_path, moving, tmp_path, interpolate_fps=24.0)
    source, result = _probe(moving), _probe(out)
    assert result["frames"] == 2 * source["frames"] and result["fps"] == pytest.approx(24.0)
    assert result["audio"] and result["audio_s"] == pytest.approx(source["audio_s"], abs=0.05)


def test_onnx_interpolator_through_its_contract(tmp_path, moving):
    from tools.make_test_models import make_models

    models = make_models(tmp_path / "models")
    from facecast.engines.onnxruntime import EngineConfig
    from facecast.engines.pool import EnginePool

    pool = EnginePool(models, EngineConfig())
    db = tmp_path / "jobs.sqlite"
    store = JobStore(db)
    kind = PostSteps(CopyKind(moving), models, engines=lambda: pool)
    params = kind.validate({"interpolate_fps": 24.0, "interpolate_method": "onnx"})
    store.submit("copy", params, str(tmp_path / "o.mp4"))
    assert BatchRunner(store, {"copy": kind}).run_one().status == "done"
    assert _probe(tmp_path / "o.mp4")["frames"] == 18
    with pytest.raises(JobRejected, match=r"no interpolation/rife\.onnx"):
        PostSteps(CopyKind(moving), tmp_path).validate({"interpolate_method": "onnx", "interpolate_fps": 24.0})


def test_quality_report_is_stored_with_the_job(tmp_path, moving):
    _out, final = _run(tmp_path, moving, tmp_path / "no-models", quality_report=True, character=str(PORTRAIT))
    report = final.params["report"]
    assert report["frames"] == 9 and report["change"] > 1.0
    assert "w600k_r50.onnx is not in" in report["identity_note"]
    flicker = [(_shifted(0) * (0.6 if i % 2 else 1.0)).astype(np.uint8) for i in range(9)]
    steady = write_video(tmp_path / "flicker.mp4", flicker, FPS)
    (tmp_path / "f").mkdir()
    _, flickering = _run(tmp_path / "f", steady, tmp_path, quality_report=True)
    assert flickering.params["report"]["flicker"] > 10 * max(report["flicker"], 0.1)
