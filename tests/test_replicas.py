"""`facecast models replicas DIR` end to end: full-size files, published sizes, real contracts, the mark."""

from __future__ import annotations

import re

import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("mimic_head")

from facecast.engines.contracts import CONTRACTS
from facecast.engines.onnxruntime import EngineConfig
from facecast.engines.pool import EnginePool
from facecast.models.replicas import MARK_KEY, ensure_replicas, replica_note, replicas_cache_dir
from tests.conftest import facecast_env, run_facecast


@pytest.fixture(scope="module")
def cli_output(tmp_path_factory):
    ensure_replicas()  # the session's cached build; the command places the same files
    out = tmp_path_factory.mktemp("replicas")
    env = facecast_env()
    env["FACECAST_REPLICAS_DIR"] = str(replicas_cache_dir().parent)
    result = run_facecast("models", "replicas", str(out), timeout=900, env=env)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


# Every model of the live animate and swap paths; the face enhancers and the frame interpolator
# (optional steps after the swap or the job) have no replica yet.
OPTIONAL = ("interpolation/", "gfpgan", "codeformer", "gpen", "restoreformer")
REPLICATED = [key for key in CONTRACTS if not key.startswith(OPTIONAL)]


def test_every_model_file_is_written_in_the_models_dir_layout(cli_output):
    out, _ = cli_output
    live = [CONTRACTS[key] for key in REPLICATED]
    assert len(live) == 8
    for contract in live:
        assert (out / contract.file).is_file(), contract.file


def test_sizes_match_the_published_models(cli_output):
    """LivePortrait and ArcFace within 0.5% of the published parameter counts; inswapper's stand-in too."""
    _, stdout = cli_output
    rows = {
        m.group(1): float(m.group(2))
        for m in re.finditer(r"^(\S.*?)\s{2,}[\d.]+\s+[\d.]+\s+([+-][\d.]+)%", stdout, re.M)
    }
    compared = {
        "liveportrait_onnx/appearance_feature_extractor.onnx",
        "liveportrait_onnx/motion_extractor.onnx",
        "liveportrait_onnx/warping_spade.onnx",
        "liveportrait_onnx/stitching*.onnx (3 files)",
        "w600k_r50.onnx",
        "inswapper_128.onnx",
    }
    assert set(rows) == compared, stdout
    for file, diff_percent in rows.items():
        assert abs(diff_percent) < 0.5, (file, diff_percent)


def test_replicas_are_marked_and_load_under_the_real_contracts(cli_output, tmp_path):
    out, _ = cli_output
    pool = EnginePool(out, EngineConfig(device="cpu", warmup=False, cache_dir=tmp_path))
    for key in REPLICATED:
        contract = CONTRACTS[key]
        note = replica_note(out / contract.file)
        assert note and "random weights" in note, key
        if key != "liveportrait/warping_spade":  # 1.2 TFLOP per call: its contract is checked in the reference test
            engine = pool.get(key)
            assert engine.replica is not None
    stitching = onnx.load(str(out / CONTRACTS["liveportrait/stitching"].file))
    assert any(p.key == MARK_KEY for p in stitching.metadata_props)
