"""The engine pool on generated ONNX fixtures with the real models' contracts (CPU provider)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from facecast.engines.contracts import CONTRACTS, ContractError
from facecast.engines.gate import PriorityGate
from facecast.engines.onnxruntime import CPU, EngineConfig, EngineError, engine_cache_dir, provider_chain
from facecast.engines.pool import EnginePool, ModelsMissing
from tests.neural_fixtures import make_models


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    return make_models(tmp_path_factory.mktemp("models"))


def _cfg(tmp_path: Path, **kw) -> EngineConfig:
    return EngineConfig(cache_dir=tmp_path / "cache", **kw)


def test_every_contract_loads_runs_and_is_shared(models_dir, tmp_path):
    pool = EnginePool(models_dir, _cfg(tmp_path))
    for key, contract in CONTRACTS.items():
        engine = pool.get(key)
        assert engine is pool.get(key)  # loaded once, shared
        assert engine.providers == [CPU]
        feeds = {s.name: np.random.rand(*[d or 2 for d in s.shape]).astype(np.float32) for s in contract.inputs}
        out = engine.run(feeds)
        for spec in contract.outputs:
            got = out[spec.name].shape
            # A dynamic dimension (None in the contract, e.g. the interpolator's H and W) follows the input.
            assert len(got) == len(spec.shape), (key, spec.name, got)
            assert all(e is None or e == g for e, g in zip(spec.shape[1:], got[1:], strict=True)), (key, spec.name)
    motion = pool.get("liveportrait/motion_extractor")
    a = motion.run({"img": np.zeros((1, 3, 256, 256), np.float32)})
    b = motion.run({"img": np.ones((1, 3, 256, 256), np.float32)})
    assert not np.allclose(a["yaw"], b["yaw"])  # outputs depend on inputs


def test_a_renamed_tensor_is_rejected_naming_it(tmp_path):
    bad = make_models(tmp_path / "bad", rename=("liveportrait_onnx/motion_extractor.onnx", "yaw", "yaw_logits"))
    pool = EnginePool(bad, _cfg(tmp_path))
    with pytest.raises(ContractError, match="no output tensor named 'yaw'"):
        pool.get("liveportrait/motion_extractor")


def test_wrong_file_for_a_model_is_rejected(models_dir, tmp_path):
    swapped = tmp_path / "swapped"
    (swapped / "liveportrait_onnx").mkdir(parents=True)
    (swapped / "liveportrait_onnx" / "stitching.onnx").write_bytes(
        (models_dir / "liveportrait_onnx" / "stitching_eye.onnx").read_bytes()
    )
    with pytest.raises(ContractError, match=r"input 'input' has shape \[1, 66\], expected \[1, 126\]"):
        EnginePool(swapped, _cfg(tmp_path)).get("liveportrait/stitching")


def test_missing_models_say_which_command_to_run(tmp_path):
    pool = EnginePool(tmp_path / "empty", _cfg(tmp_path))
    with pytest.raises(ModelsMissing, match="Run: facecast models download liveportrait"):
        pool.require(["liveportrait/warping_spade"], "liveportrait")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_asking_for_the_gpu_without_one_is_a_startup_error(models_dir, tmp_path):
    with pytest.raises(EngineError, match=r"engine\.device is 'cuda' but onnxruntime offers only"):
        EnginePool(models_dir, _cfg(tmp_path, device="cuda")).get("liveportrait/stitching")
    with pytest.raises(EngineError, match="make gpu"):
        provider_chain(_cfg(tmp_path, device="tensorrt"), models_dir / "w600k_r50.onnx", "fp16")
    fallback = EnginePool(models_dir, _cfg(tmp_path, device="cuda", allow_cpu_fallback=True))
    assert fallback.get("liveportrait/stitching").providers == [CPU]  # allowed explicitly


def test_engine_cache_is_keyed_by_model_runtime_gpu_and_precision(models_dir, tmp_path):
    cfg = _cfg(tmp_path)
    a = engine_cache_dir(cfg, models_dir / "inswapper_128.onnx", "fp16")
    b = engine_cache_dir(cfg, models_dir / "inswapper_128.onnx", "fp32")
    c = engine_cache_dir(cfg, models_dir / "w600k_r50.onnx", "fp16")
    assert len({a, b, c}) == 3 and f"ort{ort.__version__}" in a.name and a.parent == tmp_path / "cache"


def test_batch_work_waits_while_live_inference_runs():
    gate = PriorityGate()
    order: list[str] = []
    live_inside = threading.Event()
    release_live = threading.Event()

    def live() -> None:
        with gate.enter("live"):
            live_inside.set()
            release_live.wait(2)
            order.append("live done")

    def batch() -> None:
        with gate.enter("batch"):
            order.append("batch ran")

    t_live = threading.Thread(target=live)
    t_live.start()
    live_inside.wait(2)
    t_batch = threading.Thread(target=batch)
    t_batch.start()
    time.sleep(0.2)
    assert order == []  # batch is held back while a live call is in flight
    release_live.set()
    t_live.join(2)
    t_batch.join(2)
    assert order == ["live done", "batch ran"] and gate.batch_waits == 1
