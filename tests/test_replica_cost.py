"""onnx_cost on tiny graphs whose parameter count and multiply-accumulates are worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from facecast.models.replicas.cost import onnx_cost


def _init(name: str, shape, dtype=np.float32):
    return numpy_helper.from_array(np.ones(shape, dtype), name)


def _tiny_graph(batch: int | str = 1) -> onnx.ModelProto:
    """x[B,3,8,8] -> Conv 3x3 (4 out, pad 1) -> grouped Conv 3x3 s2 (4->8, group 2) -> ConvTranspose 2x2 s2
    (8->2) -> Reshape [B, 128] -> Gemm (128->10, transB) -> MatMul [10->5]; plus an int64 shape constant
    and a float initializer no node reads (like inswapper's emap)."""
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["c1", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], group=2),
        helper.make_node("ConvTranspose", ["c2", "w3"], ["c3"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["c3", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w4", "b4"], ["g"], transB=1),
        helper.make_node("Relu", ["g"], ["r"]),
        helper.make_node("MatMul", ["r", "w5"], ["y"]),
    ]
    inits = [
        _init("w1", (4, 3, 3, 3)),
        _init("b1", (4,)),
        _init("w2", (8, 2, 3, 3)),
        _init("w3", (8, 2, 2, 2)),
        numpy_helper.from_array(np.array([-1, 128], np.int64), "shape"),
        _init("w4", (10, 128)),
        _init("b4", (10,)),
        _init("w5", (10, 5)),
        _init("unused", (16, 16)),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


PARAMS = 108 + 4 + 144 + 64 + 1280 + 10 + 50  # float initializers read by a node: not `shape`, not `unused`
MACS = (
    4 * 8 * 8 * 3 * 9  # conv: 4 out x 8x8 x (3 in x 3x3)
    + 8 * 4 * 4 * 2 * 9  # grouped stride-2 conv: 8 out x 4x4 x (4/2 in x 3x3)
    + 8 * 4 * 4 * 2 * 4  # transposed conv: every input element (8 x 4x4) scatters into 2 out x 2x2
    + 128 * 10  # gemm
    + 10 * 5  # matmul
)


def test_counts_weights_and_multiply_accumulates_of_a_known_graph(tmp_path: Path):
    path = tmp_path / "tiny.onnx"
    onnx.save(_tiny_graph(), str(path))
    params, gflops = onnx_cost(path)
    assert params == PARAMS
    assert gflops == pytest.approx(2 * MACS / 1e9, rel=1e-12)


def test_a_dynamic_batch_is_costed_at_one_and_external_weights_are_not_needed(tmp_path: Path):
    path = tmp_path / "dyn.onnx"
    onnx.save(
        _tiny_graph("N"), str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="dyn.weights"
    )  # the int64 shape constant (16 bytes) stays inline, as onnx keeps it
    (tmp_path / "dyn.weights").unlink()  # only shapes are read: the cost needs no weights at all
    assert onnx_cost(path) == (PARAMS, pytest.approx(2 * MACS / 1e9, rel=1e-12))
