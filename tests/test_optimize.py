"""The plugin-free 5-D GridSample rewrite for TensorRT and `facecast models optimize`.

Every check compares against onnxruntime's own GridSample on the CPU: small graphs with random
volumes and grids (out-of-range points included), the full-size warping_spade replica, and the
command run as a user runs it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from facecast.engines.contracts import CONTRACTS
from facecast.engines.optimize import (
    RewriteError,
    RewriteTarget,
    max_abs_difference,
    optimize_model,
    optimize_models,
    rewrite_gridsample_5d,
    trt_copy_path,
    trt_ready_path,
)
from tests.conftest import run_facecast

WARPING_FILE = CONTRACTS["liveportrait/warping_spade"].file


def gridsample_model(
    volume_shape, grid_shape, align_corners=0, padding="zeros", mode="linear", volume="v", grid="g"
) -> onnx.ModelProto:
    """One GridSample between two graph inputs; dims given as strings are symbolic."""
    spatial = len(volume_shape) - 2
    out_shape = [grid_shape[0], volume_shape[1], *grid_shape[1 : 1 + spatial]]
    node = helper.make_node(
        "GridSample", [volume, grid], ["y"], name="gs", align_corners=align_corners, mode=mode, padding_mode=padding
    )
    graph = helper.make_graph(
        [node],
        "gridsample",
        [
            helper.make_tensor_value_info(volume, TensorProto.FLOAT, volume_shape),
            helper.make_tensor_value_info(grid, TensorProto.FLOAT, grid_shape),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, feeds
    )[0]


def random_grid(rng, shape) -> np.ndarray:
    """Mostly inside [-1, 1], a good share just outside (zero padding matters there), a few far
    outside, and exact borders."""
    grid = rng.uniform(-1.3, 1.3, shape).astype(np.float32)
    flat = grid.reshape(-1)
    flat[::7] = rng.choice([-1.0, 1.0, -3.5, 4.0, 0.0], size=flat[::7].shape)
    assert (np.abs(grid) > 1).mean() > 0.1
    return grid


def gridsample_ops(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type == "GridSample"]


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("align_corners", [0, 1])
def test_rewrite_equals_onnxruntime_gridsample(align_corners, padding):
    rng = np.random.default_rng(align_corners)
    volume_shape, grid_shape = [2, 3, 4, 5, 6], [2, 3, 4, 7, 3]  # batch 2: per-batch offsets matter
    feeds = {"v": rng.standard_normal(volume_shape).astype(np.float32), "g": random_grid(rng, grid_shape)}
    expected = run(gridsample_model(volume_shape, grid_shape, align_corners, padding), feeds)

    rewritten, names = rewrite_gridsample_5d(gridsample_model(volume_shape, grid_shape, align_corners, padding))

    assert names == ["gs"]
    assert gridsample_ops(rewritten) == []
    onnx.checker.check_model(rewritten, full_check=True)
    got = run(rewritten, feeds)
    assert got.shape == expected.shape == (2, 3, 3, 4, 7)
    assert np.abs(got - expected).max() <= 1e-5
    if padding == "zeros":  # the points far outside really are zero, not border values
        far = (np.abs(feeds["g"]) > 2).any(axis=-1)
        assert np.all(got.transpose(0, 2, 3, 4, 1)[far] == 0)


def test_rewrite_needs_neither_channels_nor_grid_last_dim():
    # warping_spade's first GridSample: shape inference cannot tell its channel count.
    rng = np.random.default_rng(5)
    feeds = {"v": rng.standard_normal((3, 2, 4, 6, 5)).astype(np.float32), "g": random_grid(rng, (3, 2, 3, 4, 3))}
    model = gridsample_model([3, "channels", 4, 6, 5], [3, 2, 3, 4, "three"])
    expected = run(model, feeds)
    rewritten, names = rewrite_gridsample_5d(model)
    assert names == ["gs"] and gridsample_ops(rewritten) == []
    assert np.abs(run(rewritten, feeds) - expected).max() <= 1e-5


def test_rewrite_leaves_4d_gridsample_alone():
    model = gridsample_model([1, 3, 8, 8], [1, 4, 4, 2], mode="linear")
    rewritten, names = rewrite_gridsample_5d(model)
    assert names == []
    assert gridsample_ops(rewritten) == ["gs"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "nearest"}, "mode 'nearest' is not supported"),
        ({"padding": "reflection"}, "padding_mode 'reflection' is not supported"),
        ({"volume_shape": ["batch", 3, 4, 5, 6], "grid_shape": ["batch", 3, 4, 7, 3]}, "needs static shapes"),
    ],
)
def test_rewrite_refuses_what_it_cannot_do_exactly(kwargs, message):
    args = {"volume_shape": [1, 3, 4, 5, 6], "grid_shape": [1, 3, 4, 7, 3], **kwargs}
    with pytest.raises(RewriteError, match=message):
        rewrite_gridsample_5d(gridsample_model(**args))


def test_trt_ready_path_prefers_a_newer_rewritten_copy(tmp_path: Path):
    original = tmp_path / "warping_spade.onnx"
    original.write_bytes(b"model")
    assert trt_ready_path(original) == original  # no copy yet
    copy = trt_copy_path(original)
    assert copy.name == "warping_spade.trt.onnx"
    copy.write_bytes(b"rewritten")
    os.utime(original, ns=(1_000_000_000, 1_000_000_000))
    os.utime(copy, ns=(2_000_000_000, 2_000_000_000))
    assert trt_ready_path(original) == copy
    os.utime(original, ns=(3_000_000_000, 3_000_000_000))  # the model was downloaded again
    assert trt_ready_path(original) == original


def test_max_abs_difference_sees_a_difference(tmp_path: Path):
    # The check that guards every rewritten copy must not be blind.
    a = gridsample_model([1, 2, 3, 4, 5], [1, 2, 3, 4, 3])
    b = gridsample_model([1, 2, 3, 4, 5], [1, 2, 3, 4, 3])
    b.graph.node[0].output[0] = "y0"
    b.graph.initializer.append(onnx.numpy_helper.from_array(np.float32(0.25), "bias"))
    b.graph.node.append(helper.make_node("Add", ["y0", "bias"], ["y"]))
    onnx.save(a, tmp_path / "a.onnx")
    onnx.save(b, tmp_path / "b.onnx")
    assert max_abs_difference(tmp_path / "a.onnx", tmp_path / "a.onnx", threads=1) == 0
    assert max_abs_difference(tmp_path / "a.onnx", tmp_path / "b.onnx", threads=1) == pytest.approx(0.25)


def small_warping_folder(root: Path, mode: str = "linear") -> Path:
    """A models folder whose warping_spade.onnx is one small 5-D GridSample."""
    path = root / WARPING_FILE
    path.parent.mkdir(parents=True)
    onnx.save(gridsample_model([1, 4, 4, 8, 8], [1, 3, 5, 6, 3], mode=mode, volume="feature_3d", grid="grid"), path)
    return path


def test_optimize_writes_nothing_when_the_check_fails(tmp_path: Path):
    source = small_warping_folder(tmp_path)
    result = optimize_model(tmp_path, RewriteTarget(WARPING_FILE), tolerance=-1.0, threads=1)
    assert result.status == "failed" and "nothing written" in result.detail
    assert result.rewritten == ("gs",) and result.max_abs_diff is not None
    assert sorted(p.name for p in source.parent.iterdir()) == ["warping_spade.onnx"]  # no copy, no temp file
    assert trt_ready_path(source) == source


@pytest.fixture(scope="module")
def warping_spade_replica() -> Path:
    """The full-size warping_spade replica, built once into the replicas cache."""
    from facecast.models.replicas import ensure_replicas

    path = ensure_replicas(parts=("liveportrait",)) / WARPING_FILE
    assert path.is_file()
    return path


def test_full_size_warping_spade_rewrite_matches_onnxruntime(tmp_path: Path, warping_spade_replica: Path):
    source = tmp_path / WARPING_FILE
    source.parent.mkdir(parents=True)
    source.symlink_to(warping_spade_replica)

    [result] = optimize_models(tmp_path, threads=2)

    assert result.status == "written", result.detail
    assert len(result.rewritten) == 2  # the dense motion network's and the feature volume's
    assert result.max_abs_diff is not None and result.max_abs_diff < 1e-4  # the bar, FP32 CPU
    assert result.written == trt_copy_path(source) == trt_ready_path(source)
    rewritten = onnx.load(str(result.written))
    assert gridsample_ops(rewritten) == []
    assert [i.name for i in rewritten.graph.input] == ["feature_3d", "kp_driving", "kp_source"]


def test_cli_models_optimize(tmp_path: Path):
    source = small_warping_folder(tmp_path / "models")
    done = run_facecast("models", "optimize", "--models-dir", str(tmp_path / "models"))
    assert done.returncode == 0, done.stderr
    copy = trt_copy_path(source)
    line = done.stdout.strip()
    assert line.startswith(f"{WARPING_FILE}: rewrote 1 5-D GridSample (gs) -> {copy}, max abs diff ")
    assert line.endswith(" s")
    assert trt_ready_path(source) == copy
    rewritten = onnx.load(str(copy))
    assert gridsample_ops(rewritten) == []
    rng = np.random.default_rng(3)
    feeds = {
        "feature_3d": rng.standard_normal((1, 4, 4, 8, 8)).astype(np.float32),
        "grid": random_grid(rng, (1, 3, 5, 6, 3)),
    }
    assert np.abs(run(rewritten, feeds) - run(onnx.load(str(source)), feeds)).max() <= 1e-5

    # A model it cannot rewrite exactly: a clear failure, exit code 1, nothing written.
    unsupported = small_warping_folder(tmp_path / "other", mode="nearest")
    failed = run_facecast("models", "optimize", "--models-dir", str(tmp_path / "other"))
    assert failed.returncode == 1
    assert "FAILED" in failed.stdout and "mode 'nearest' is not supported" in failed.stdout
    assert not trt_copy_path(unsupported).exists()

    empty = run_facecast("models", "optimize", "--models-dir", str(tmp_path / "empty"))
    assert empty.returncode == 0 and "not here" in empty.stdout


@pytest.mark.parametrize("unknown", ["v", "g"])
def test_rewrite_refuses_a_5d_gridsample_with_one_shape_unknown(unknown):
    # The rank is known from one input; the other's shape is needed too (a clear error, not a crash).
    shapes = {"v": [1, 3, 4, 5, 6], "g": [1, 3, 4, 7, 3]}
    node = helper.make_node("GridSample", ["v", "g"], ["y"], name="gs", mode="linear")
    inputs = [
        helper.make_tensor_value_info(name, TensorProto.FLOAT, None if name == unknown else shape)
        for name, shape in shapes.items()
    ]
    graph = helper.make_graph(
        [node], "gridsample", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    which = "input" if unknown == "v" else "grid"
    with pytest.raises(RewriteError, match=f"cannot tell its {which}'s shape"):
        rewrite_gridsample_5d(model)
