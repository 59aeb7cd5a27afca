"""The neural backends as streamers use them: daemon, render, start-up errors (ONNX test fixtures)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from facecast.characters.library import CharacterLibrary
from facecast.effects.animate_liveportrait import AnimateLivePortrait, AnimateLivePortraitConfig
from facecast.engines.onnxruntime import EngineConfig
from facecast.engines.pool import EnginePool
from facecast.tracking.face_mesh import track_image
from facecast.types import FramePacket
from tests.conftest import PORTRAIT, count_frames, run_facecast
from tests.neural_fixtures import make_models


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize(
    "effect",
    [
        ["effect.active=animate", "effect.animate.backend=liveportrait"],
        ["effect.active=swap", "effect.swap.backend=inswapper"],
    ],
)
def test_daemon_runs_a_neural_backend_end_to_end(models_dir, synthetic_video, tmp_path, effect):
    video = synthetic_video(12, 320, 240)
    out = tmp_path / "out.mp4"
    sets = [
        f"models.dir={models_dir}",
        *effect,
        "capture.source=file",
        f"capture.file.path={video}",
        "capture.file.realtime=false",
        "outputs.record.enabled=true",
        f"outputs.record.path={out}",
    ]
    result = run_facecast("run", "--frames", "6", *(a for s in sets for a in ("--set", s)), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert count_frames(out) == 6
    assert "CPUExecutionProvider" in result.stderr  # the providers really in use are logged


def test_missing_weights_stop_with_the_command_to_run(tmp_path):
    result = run_facecast(
        "run", "--frames", "1", "--set", f"models.dir={tmp_path}", "--set", "effect.animate.backend=liveportrait"
    )
    assert result.returncode == 3
    assert "Run: facecast models download liveportrait" in result.stderr


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_asking_for_the_gpu_without_one_stops_at_startup(models_dir):
    result = run_facecast(
        "run",
        "--frames",
        "1",
        "--set",
        f"models.dir={models_dir}",
        "--set",
        "effect.swap.backend=inswapper",
        "--set",
        "effect.active=swap",
        "--set",
        "engine.device=tensorrt",
    )
    assert result.returncode == 3
    assert "engine.device is 'tensorrt' but onnxruntime offers only" in result.stderr


def test_render_with_a_neural_backend_keeps_the_frame_count(models_dir, synthetic_video, tmp_path):
    video = synthetic_video(10, 320, 240, audio=True)
    out = tmp_path / "r.mp4"
    result = run_facecast(
        "render",
        "swap",
        "--face",
        str(PORTRAIT),
        "--target",
        str(video),
        "-o",
        str(out),
        "--backend",
        "inswapper",
        "--quiet",
        "--set",
        f"models.dir={models_dir}",
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert count_frames(out) == 10


def test_liveportrait_eases_back_to_neutral_when_the_face_is_lost(models_dir, tmp_path, portrait):
    library = CharacterLibrary(PORTRAIT.parent)
    library.load_all()
    effect = AnimateLivePortrait(
        AnimateLivePortraitConfig(return_to_neutral_s=0.2),
        library,
        EnginePool(models_dir, EngineConfig(cache_dir=tmp_path)),
    )
    effect.start()
    face = track_image(portrait)[0]
    neutral_packet = FramePacket(0, portrait, 0, faces=[face])
    effect.apply(neutral_packet)  # first tracked frame = neutral
    turned = portrait[:, ::-1].copy()
    effect.apply(FramePacket(1, turned, int(0.05e9), faces=track_image(turned)))
    src = next(iter(effect._sources.values()))
    moved = np.abs(effect._last_xd - src.x_s).mean()
    assert moved > 0
    for i, t in enumerate((0.1, 0.3, 0.6, 1.0)):
        out = effect.apply(FramePacket(2 + i, portrait, int(t * 1e9), faces=[]))
    assert out.shape == (512, 512, 4)  # the character with its matte as alpha
    assert np.abs(effect._last_xd - src.x_s).mean() < moved * 0.05  # back near the character's own pose
