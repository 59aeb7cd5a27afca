"""The torch engine (engine.device: torch) against onnxruntime's CPU output.

Every op of the table is held equal to onnxruntime on a one-node graph; the full-size replicas of
the models facecast runs (six LivePortrait graphs, ArcFace w600k_r50, inswapper) through both
engines on the CPU. Tolerances: FP32 on both sides, the only differences are summation order and
onnxruntime's fused kernels (measured: at most 3e-6 of the output's largest value, on ArcFace and
inswapper); we allow 1e-5 of it. warping_spade is the exception, explained at its test.
Runtime about 30 s with the replicas cached (warping_spade through both engines is most of it).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from facecast.engines import torch_engine
from facecast.engines.contracts import CONTRACTS, ModelContract, TensorSpec
from facecast.engines.gate import PriorityGate
from facecast.engines.onnxruntime import EngineConfig, EngineError, OnnxEngine
from facecast.engines.torch_engine import GraphError, OnnxModule, TorchEngine
from tests.neural_fixtures import make_models

CPU = EngineConfig(device="cpu", cpu_threads=2)


# --- one node at a time ----------------------------------------------------------------------------


def _graph(
    op: str, inputs: list[tuple[str, np.ndarray, bool]], attrs: dict, n_out: int = 1, opset: int = 20
) -> onnx.ModelProto:
    """A one-node model; inputs are (name, value, is_constant). Empty names are absent inputs."""
    graph_inputs, inits, names = [], [], []
    for name, value, constant in inputs:
        names.append(name)
        if not name:
            continue
        if constant:
            inits.append(numpy_helper.from_array(value, name))
        else:
            dtype = helper.np_dtype_to_tensor_dtype(value.dtype)
            graph_inputs.append(helper.make_tensor_value_info(name, dtype, value.shape))
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, name=f"the_{op.lower()}", **attrs)
    graph = helper.make_graph(
        [node], "one", graph_inputs, [helper.make_empty_tensor_value_info(o) for o in outs], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def _both(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    module = OnnxModule(model, "one-node")
    with torch.inference_mode():
        got = module({k: torch.from_numpy(v) for k, v in feeds.items()})
    return expected, [got[o.name].numpy() for o in model.graph.output]


def _case(op: str, *inputs, n_out: int = 1, opset: int = 20, **attrs):
    """inputs: (name, array) for a runtime input, (name, array, True) for a constant, "" for absent."""
    spec = []
    for item in inputs:
        if item == "":
            spec.append(("", None, False))
        else:
            name, value, *constant = item
            spec.append((name, value, bool(constant and constant[0])))
    _CASE_COUNT[op] = _CASE_COUNT.get(op, 0) + 1
    return pytest.param(op, spec, attrs, n_out, opset, id=f"{op}-{_CASE_COUNT[op]}")


_CASE_COUNT: dict[str, int] = {}
rng = np.random.default_rng(7)
x4 = rng.standard_normal((2, 4, 6, 6)).astype(np.float32)
x5 = rng.standard_normal((1, 4, 3, 6, 6)).astype(np.float32)
x3 = rng.standard_normal((2, 5, 8)).astype(np.float32)
m2 = rng.standard_normal((3, 8)).astype(np.float32)
pos = np.abs(x4) + 0.1
i64 = np.array([[0, 2], [-1, 1]], np.int64)


def c(name, value):
    return (name, np.asarray(value), True)


CASES = [
    *(
        _case(op, ("x", x4), c("k", rng.standard_normal((4, 1, 1)).astype(np.float32)))
        for op in ("Add", "Sub", "Mul", "Div")
    ),
    _case("Pow", ("p", pos), c("e", np.float32(2.0))),
    _case("Pow", ("p", pos), c("e", np.float32(0.5))),
    *(
        _case(op, ("x", x4))
        for op in (
            "Relu",
            "Sigmoid",
            "Tanh",
            "Exp",
            "Neg",
            "Abs",
            "Erf",
            "Floor",
            "Ceil",
            "Round",
            "Sin",
            "Cos",
            "Sign",
            "Softplus",
            "HardSwish",
        )
    ),
    *(_case(op, ("p", pos)) for op in ("Log", "Sqrt", "Reciprocal")),
    _case("LeakyRelu", ("x", x4), alpha=0.2),
    _case("Elu", ("x", x4), alpha=0.7),
    _case("HardSigmoid", ("x", x4), alpha=0.3, beta=0.4),
    _case("Gelu", ("x", x4)),
    _case("Gelu", ("x", x4), approximate="tanh"),
    _case("PRelu", ("x", x4), c("s", rng.standard_normal((4, 1, 1)).astype(np.float32))),
    _case("PRelu", ("x", x4), c("s", rng.standard_normal((6,)).astype(np.float32))),
    _case("Clip", ("x", x4), c("lo", np.float32(-0.5)), c("hi", np.float32(0.7))),
    _case("Clip", ("x", x4), "", c("hi", np.float32(0.7))),
    _case("Max", ("x", x4), ("p", pos)),
    _case("Min", ("x", x4), ("p", pos), c("k", np.float32(0.3))),
    _case("Sum", ("x", x4), ("p", pos)),
    _case("Mean", ("x", x4), ("p", pos)),
    _case("Where", ("b", x4 > 0), ("x", x4), ("p", pos)),
    _case("Equal", ("i", i64), c("j", np.array([0, 1], np.int64))),
    _case("Less", ("x", x4), ("p", pos)),
    _case("Not", ("b", x4 > 0)),
    *(_case(op, ("x", x4), ("p", pos)) for op in ("Greater", "LessOrEqual", "GreaterOrEqual")),
    *(_case(op, ("b", x4 > 0), ("b2", pos > 1)) for op in ("And", "Or", "Xor")),
    _case("IsNaN", ("x", np.where(x4 > 1, np.nan, x4).astype(np.float32))),
    _case("CastLike", ("x", x4), c("like", np.array([1], np.int32))),
    _case("ArgMin", ("x", x4), axis=-1),
    _case("Cast", ("x", x4), to=TensorProto.INT64),
    _case("Mod", ("i", i64), c("j", np.array([3, -2], np.int64))),
    _case("Reshape", ("x", x4), c("s", np.array([0, -1, 6], np.int64))),
    _case("Flatten", ("x", x4), axis=2),
    _case("Squeeze", ("x", x4[:, :1]), c("a", np.array([1], np.int64))),
    _case("Unsqueeze", ("x", x4), c("a", np.array([0, -1], np.int64))),
    _case("Transpose", ("x", x4), perm=[0, 2, 3, 1]),
    _case("Transpose", ("x", x4)),
    _case("Expand", ("x", x4[:, :1]), c("s", np.array([4, 1, 1], np.int64))),
    _case("Tile", ("x", x4), c("r", np.array([1, 2, 1, 3], np.int64))),
    _case("Concat", ("x", x4), ("p", pos), axis=1),
    _case("Split", ("x", x4), c("s", np.array([1, 3], np.int64)), n_out=2, axis=1),
    _case("Split", ("x", x4), n_out=3, axis=3, num_outputs=3),
    _case(
        "Slice",
        ("x", x4),
        c("s", np.array([1, -4], np.int64)),
        c("e", np.array([100, -1], np.int64)),
        c("a", np.array([1, 3], np.int64)),
        c("t", np.array([2, 1], np.int64)),
    ),
    _case("Gather", ("x", x4), c("i", np.array([[0, 2], [-1, 1]], np.int64)), axis=1),
    _case("Gather", ("x", x4), c("i", np.array(-2, np.int64)), axis=3),
    _case("Gather", ("x", x4), ("i", i64), axis=2),
    _case("GatherElements", ("x", x3), c("i", rng.integers(-5, 5, (2, 5, 3)).astype(np.int64)), axis=1),
    _case("DepthToSpace", ("x", x4), blocksize=2),
    _case("DepthToSpace", ("x", x4), blocksize=2, mode="CRD"),
    _case("SpaceToDepth", ("x", x4), blocksize=2),
    _case("Pad", ("x", x4), c("p", np.array([0, 0, 1, 2, 0, 0, 3, 0], np.int64)), c("v", np.float32(0.5))),
    _case("Pad", ("x", x4), c("p", np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64)), mode="reflect"),
    _case("Pad", ("x", x4), c("p", np.array([0, 0, 2, 1, 0, 0, 1, 2], np.int64)), mode="edge"),
    _case(
        "Pad",
        ("x", x4),
        c("p", np.array([1, 2, 1, 2], np.int64)),
        "",
        c("a", np.array([2, 3], np.int64)),
        mode="reflect",
    ),
    *(
        _case(op, ("x", x4), c("a", np.array([1, -1], np.int64)), keepdims=k)
        for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceL1", "ReduceSumSquare")
        for k in (0, 1)
    ),
    _case("ReduceMean", ("x", x4), keepdims=0),
    _case("ReduceMean", ("x", x4), axes=[2, 3], opset=17),
    _case("ReduceSum", ("x", x4), c("a", np.array([1], np.int64)), opset=17),
    _case("ArgMax", ("x", x4), axis=1, keepdims=0),
    _case("Softmax", ("x", x4), axis=1),
    _case("Softmax", ("x", x4), axis=2, opset=11),
    _case("LogSoftmax", ("x", x4)),
    _case(
        "BatchNormalization",
        ("x", x4),
        c("s", rng.standard_normal(4).astype(np.float32)),
        c("b", rng.standard_normal(4).astype(np.float32)),
        c("mu", rng.standard_normal(4).astype(np.float32)),
        c("var", rng.uniform(0.5, 2, 4).astype(np.float32)),
        epsilon=1e-3,
    ),
    _case(
        "InstanceNormalization",
        ("x", x4),
        c("s", rng.standard_normal(4).astype(np.float32)),
        c("b", rng.standard_normal(4).astype(np.float32)),
    ),
    _case(
        "InstanceNormalization",
        ("x5", x5),
        c("s", rng.standard_normal(4).astype(np.float32)),
        c("b", rng.standard_normal(4).astype(np.float32)),
    ),
    _case(
        "LayerNormalization",
        ("x3", x3),
        c("s", rng.standard_normal(8).astype(np.float32)),
        c("b", rng.standard_normal(8).astype(np.float32)),
        epsilon=1e-6,
    ),
    _case("LayerNormalization", ("x3", x3), c("s", rng.standard_normal((5, 8)).astype(np.float32)), axis=1),
    _case(
        "Conv",
        ("x", x4),
        c("w", rng.standard_normal((3, 4, 3, 3)).astype(np.float32)),
        c("b", rng.standard_normal(3).astype(np.float32)),
        pads=[1, 1, 1, 1],
    ),
    _case(
        "Conv",
        ("x", x4),
        ("w4", rng.standard_normal((3, 4, 3, 3)).astype(np.float32)),
        strides=[2, 2],
        pads=[0, 1, 1, 0],
        dilations=[1, 1],
    ),
    _case(
        "Conv",
        ("x", x4),
        c("w", rng.standard_normal((4, 2, 3, 3)).astype(np.float32)),
        group=2,
        auto_pad="SAME_UPPER",
        strides=[2, 2],
    ),
    _case(
        "Conv",
        ("x", x4),
        c("w", rng.standard_normal((4, 1, 3, 3)).astype(np.float32)),
        group=4,
        dilations=[2, 2],
        pads=[2, 2, 2, 2],
    ),
    _case("Conv", ("x5", x5), c("w", rng.standard_normal((2, 4, 3, 3, 3)).astype(np.float32)), pads=[1, 1, 1, 1, 1, 1]),
    _case("Conv", ("x3", x3), c("w", rng.standard_normal((2, 5, 3)).astype(np.float32)), pads=[1, 1]),
    _case(
        "ConvTranspose",
        ("x", x4),
        c("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32)),
        c("b", rng.standard_normal(3).astype(np.float32)),
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        output_padding=[1, 1],
    ),
    _case("MatMul", ("x3", x3), c("w", rng.standard_normal((8, 3)).astype(np.float32))),
    _case("MatMul", ("x", x4), ("p", pos)),
    _case(
        "Gemm",
        ("m", m2),
        c("w", rng.standard_normal((5, 8)).astype(np.float32)),
        c("b", rng.standard_normal(5).astype(np.float32)),
        transB=1,
    ),
    _case(
        "Gemm",
        ("m", m2),
        c("w", rng.standard_normal((8, 5)).astype(np.float32)),
        c("b", rng.standard_normal((1, 5)).astype(np.float32)),
    ),
    _case(
        "Gemm",
        ("m", m2),
        c("w", rng.standard_normal((3, 5)).astype(np.float32)),
        c("b", rng.standard_normal((8, 5)).astype(np.float32)),
        transA=1,
        alpha=0.5,
        beta=2.0,
    ),
    _case("Gemm", ("m", m2), c("w", rng.standard_normal((5, 8)).astype(np.float32)), transB=1),
    _case("Einsum", ("x3", x3), c("w", rng.standard_normal((8, 3)).astype(np.float32)), equation="bij,jk->bik"),
    _case("AveragePool", ("x", x4), kernel_shape=[2, 2], strides=[2, 2]),
    _case("AveragePool", ("x", x4), kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
    _case("AveragePool", ("x", x4), kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
    _case("AveragePool", ("x", x4), kernel_shape=[3, 3], pads=[0, 0, 1, 1], count_include_pad=1),
    _case("AveragePool", ("x5", x5), kernel_shape=[1, 2, 2], strides=[1, 2, 2]),
    _case("AveragePool", ("x", x4), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    _case("MaxPool", ("x", x4), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
    _case("MaxPool", ("x", x4), kernel_shape=[2, 2], pads=[0, 0, 1, 1]),
    _case("GlobalAveragePool", ("x", x4)),
    _case("GlobalMaxPool", ("x", x4)),
    _case(
        "Resize",
        ("x", x4),
        "",
        c("s", np.array([1, 1, 2, 2], np.float32)),
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    ),
    _case(
        "Resize",
        ("x5", x5),
        "",
        c("s", np.array([1, 1, 1, 2, 2], np.float32)),
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    ),
    _case("Resize", ("x", x4), "", "", c("z", np.array([2, 4, 9, 4], np.int64)), mode="nearest"),
    _case("Resize", ("x", x4), "", c("s", np.array([1, 1, 0.5, 0.5], np.float32)), mode="nearest"),
    _case(
        "Resize",
        ("x", x4),
        "",
        c("s", np.array([1, 1, 2, 3], np.float32)),
        mode="nearest",
        coordinate_transformation_mode="half_pixel",
        nearest_mode="round_prefer_ceil",
    ),
    _case("Resize", ("x", x4), "", c("s", np.array([1, 1, 2, 2], np.float32)), mode="linear"),
    _case("Resize", ("x", x4), "", "", c("z", np.array([2, 4, 4, 9], np.int64)), mode="linear"),
    _case(
        "Resize",
        ("x", x4),
        "",
        c("s", np.array([1, 1, 2, 2], np.float32)),
        mode="linear",
        coordinate_transformation_mode="align_corners",
    ),
    _case(
        "Resize",
        ("x", x4),
        "",
        c("s", np.array([1, 1, 0.5, 0.5], np.float32)),
        mode="linear",
        coordinate_transformation_mode="pytorch_half_pixel",
    ),
    _case("Resize", ("x5", x5), "", c("s", np.array([1, 1, 2, 2, 2], np.float32)), mode="linear"),
    _case("Resize", ("x", x4), "", c("s", np.array([1, 1, 2, 2], np.float32)), mode="cubic"),
    _case("Resize", ("x", x4), "", c("s", np.array([2, 2], np.float32)), mode="linear", axes=[2, 3]),
    _case("GridSample", ("x", x4), c("g", rng.uniform(-1.2, 1.2, (2, 5, 7, 2)).astype(np.float32))),
    _case(
        "GridSample",
        ("x", x4),
        c("g", rng.uniform(-1.2, 1.2, (2, 5, 7, 2)).astype(np.float32)),
        mode="nearest",
        padding_mode="border",
        align_corners=1,
    ),
    _case(
        "GridSample",
        ("x", x4),
        c("g", rng.uniform(-1.2, 1.2, (2, 5, 7, 2)).astype(np.float32)),
        mode="cubic",
        padding_mode="reflection",
    ),
    _case("GridSample", ("x5", x5), c("g", rng.uniform(-1.1, 1.1, (1, 2, 5, 7, 3)).astype(np.float32))),
    _case(
        "GridSample", ("x", x4), c("g", rng.uniform(-1, 1, (2, 5, 7, 2)).astype(np.float32)), mode="bilinear", opset=16
    ),
    _case("Shape", ("x", x4), start=1, end=-1),
    _case("Size", ("x", x4)),
    _case(
        "ConstantOfShape",
        c("s", np.array([2, 3], np.int64)),
        value=numpy_helper.from_array(np.array([1.5], np.float32)),
    ),
    _case("Range", c("a", np.array(2, np.int64)), c("b", np.array(11, np.int64)), c("d", np.array(3, np.int64))),
    _case("Identity", ("x", x4)),
    _case("Dropout", ("x", x4)),
]


@pytest.mark.parametrize("op,inputs,attrs,n_out,opset", CASES)
def test_each_op_equals_onnxruntime(op, inputs, attrs, n_out, opset):
    feeds = {name: value for name, value, constant in inputs if name and not constant}
    expected, got = _both(_graph(op, inputs, attrs, n_out, opset), feeds)
    for e, g in zip(expected, got, strict=False):
        assert g.shape == e.shape and g.dtype == e.dtype, (g.shape, e.shape, g.dtype, e.dtype)
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_the_table_covers_every_op_of_the_models():
    # The 38 op types of the six LivePortrait graphs (docs: shared reference, engines.md) and the
    # ArcFace / inswapper ones; Constant and Identity are folded at load.
    used = {
        "Add",
        "AveragePool",
        "BatchNormalization",
        "Cast",
        "Concat",
        "Constant",
        "ConstantOfShape",
        "Conv",
        "DepthToSpace",
        "Div",
        "Exp",
        "Expand",
        "Gather",
        "Gelu",
        "Gemm",
        "GridSample",
        "Identity",
        "InstanceNormalization",
        "LayerNormalization",
        "LeakyRelu",
        "MatMul",
        "Mul",
        "Pow",
        "ReduceL2",
        "ReduceMean",
        "ReduceSum",
        "Relu",
        "Reshape",
        "Resize",
        "Shape",
        "Sigmoid",
        "Slice",
        "Softmax",
        "Sqrt",
        "Sub",
        "Tile",
        "Transpose",
        "Unsqueeze",
        "PRelu",
        "Flatten",
        "Tanh",
        "Pad",
    }
    from facecast.engines.torch_engine import supported_ops

    assert used <= set(supported_ops())
    tested = {case.values[0] for case in CASES}
    assert set(supported_ops()) - {"Constant"} == tested  # every op of the table has a case above


# --- refusals ----------------------------------------------------------------------------------------


def _write(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def _contract_for(model: onnx.ModelProto) -> ModelContract:
    def spec(v):
        return TensorSpec(v.name, tuple(d.dim_value or None for d in v.type.tensor_type.shape.dim))

    return ModelContract(
        "test/one", "one.onnx", tuple(spec(v) for v in model.graph.input), tuple(spec(v) for v in model.graph.output)
    )


def _typed_graph(nodes, inputs, outputs, inits=(), opset: int = 20) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


F32 = TensorProto.FLOAT


def test_an_unknown_op_is_refused_at_load_naming_op_and_node(tmp_path):
    model = _typed_graph(
        [
            helper.make_node("Relu", ["x"], ["r"], name="first"),
            helper.make_node("Hardmax", ["r"], ["y"], name="the_odd_one"),
        ],
        [helper.make_tensor_value_info("x", F32, [1, 4])],
        [helper.make_tensor_value_info("y", F32, [1, 4])],
    )
    with pytest.raises(EngineError, match=r"node 'the_odd_one' uses op Hardmax"):
        TorchEngine(_contract_for(model), _write(model, tmp_path / "m.onnx"), CPU, PriorityGate())


def test_a_shape_computed_from_tensor_data_is_refused_naming_the_node():
    # Reshape's target shape comes from the data (a Cast of the input): nothing to fold at load.
    model = _typed_graph(
        [
            helper.make_node("Cast", ["s"], ["si"], to=TensorProto.INT64),
            helper.make_node("Reshape", ["x", "si"], ["y"], name="data_shaped"),
        ],
        [helper.make_tensor_value_info("x", F32, [2, 6]), helper.make_tensor_value_info("s", F32, [2])],
        [helper.make_empty_tensor_value_info("y")],
    )
    module = OnnxModule(model, "m.onnx")
    with pytest.raises(GraphError, match=r"Reshape node 'data_shaped': input 1 .* computed at run time"):
        module.program({"x": (2, 6), "s": (2,)})


def test_shape_subgraphs_are_folded_at_load():
    # x.reshape(x.shape[0], -1) the way exporters write it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape.
    model = _typed_graph(
        [
            helper.make_node("Shape", ["x"], ["shape"]),
            helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
            helper.make_node("Unsqueeze", ["batch", "zero1"], ["batch1"]),
            helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
            helper.make_node("Reshape", ["x", "target"], ["flat"]),
            helper.make_node("Relu", ["flat"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", F32, ["N", 3, 4])],
        [helper.make_tensor_value_info("y", F32, ["N", 12])],
        [
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
            numpy_helper.from_array(np.array([0], np.int64), "zero1"),
            numpy_helper.from_array(np.array([-1], np.int64), "minus_one"),
        ],
    )
    module = OnnxModule(model, "m.onnx")
    assert module.count_steps({"x": (2, 3, 4)}) == {"Reshape": 1, "Relu": 1}
    for batch in (2, 5):  # a dynamic batch gets a program per batch size
        x = np.random.default_rng(batch).standard_normal((batch, 3, 4)).astype(np.float32)
        with torch.inference_mode():
            y = module({"x": torch.from_numpy(x)})["y"].numpy()
        np.testing.assert_array_equal(y, np.maximum(x.reshape(batch, -1), 0))


def test_device_torch_without_cuda_is_an_error_unless_the_fallback_is_allowed(tmp_path, caplog, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    models = make_models(tmp_path)
    contract = CONTRACTS["liveportrait/stitching"]
    path = models / contract.file
    with pytest.raises(
        EngineError, match=r"engine.device is 'torch' but this PyTorch .* has no CUDA.*allow_cpu_fallback"
    ):
        TorchEngine(contract, path, EngineConfig(device="torch"), PriorityGate())
    monkeypatch.setattr(torch_engine, "_fallback_logged", False)
    with caplog.at_level(logging.WARNING, logger="facecast.engines.torch_engine"):
        engine = TorchEngine(contract, path, EngineConfig(device="torch", allow_cpu_fallback=True), PriorityGate())
        TorchEngine(contract, path, EngineConfig(device="torch", allow_cpu_fallback=True), PriorityGate())
    assert caplog.text.count("the torch engine runs on the CPU") == 1  # said once, not once per model
    assert engine.providers == ["torch-cpu"] and not engine.on_gpu and engine.precision == "fp32"


def test_a_wrong_file_is_refused_by_the_contract(tmp_path):
    models = make_models(tmp_path, rename=("liveportrait_onnx/stitching.onnx", "input", "x"))
    contract = CONTRACTS["liveportrait/stitching"]
    with pytest.raises(Exception, match="no input tensor named 'input'"):
        TorchEngine(contract, models / contract.file, CPU, PriorityGate())


# --- the engine on the small fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return make_models(tmp_path_factory.mktemp("fixtures"))


@pytest.mark.parametrize("key", sorted(CONTRACTS))
def test_fixture_models_equal_onnxruntime(fixtures, key):
    contract = CONTRACTS[key]
    engine = TorchEngine(contract, fixtures / contract.file, CPU, PriorityGate())
    reference = OnnxEngine(contract, fixtures / contract.file, CPU, PriorityGate())
    feeds = _random_feeds(contract, seed=3)
    _assert_close(engine.run(feeds), reference.run(feeds), rel=1e-5)


def test_the_pool_hands_out_torch_engines_for_device_torch(fixtures):
    from facecast.engines.pool import EnginePool

    cfg = EngineConfig(device="torch", allow_cpu_fallback=not torch.cuda.is_available())
    engine = EnginePool(fixtures, cfg).get("liveportrait/stitching")
    assert isinstance(engine, TorchEngine) and engine.providers[0].startswith("torch-")
    assert engine.call_stats.calls == 1  # warmed up at load


def test_upload_and_keep_on_device_round_trip_without_transfers_on_the_cpu(fixtures):
    appearance = TorchEngine(
        CONTRACTS["liveportrait/appearance_feature_extractor"],
        fixtures / "liveportrait_onnx/appearance_feature_extractor.onnx",
        CPU,
        PriorityGate(),
    )
    warping = TorchEngine(
        CONTRACTS["liveportrait/warping_spade"], fixtures / "liveportrait_onnx/warping_spade.onnx", CPU, PriorityGate()
    )
    img = np.random.default_rng(0).random((1, 3, 256, 256), dtype=np.float32)
    kp = {"kp_driving": np.full((1, 21, 3), 0.05, np.float32), "kp_source": np.zeros((1, 21, 3), np.float32)}
    # The appearance volume stays where the model runs and is fed straight into the warping model...
    kept = appearance.run({"img": img}, keep_on_device=("output",))["output"]
    assert isinstance(kept, torch.Tensor) and kept.device == warping.device
    on_device = warping.run({"feature_3d": kept, **kp})["out"]
    # ...as is a copy uploaded once (per character), and both equal the all-numpy path.
    as_array = appearance.run({"img": img})["output"]
    assert isinstance(as_array, np.ndarray) and as_array.dtype == np.float32
    resident = warping.upload(as_array)
    assert isinstance(resident, torch.Tensor)
    from_upload = warping.run({"feature_3d": resident, **kp})["out"]
    from_numpy = warping.run({"feature_3d": as_array, **kp})["out"]
    np.testing.assert_array_equal(on_device, from_numpy)
    np.testing.assert_array_equal(from_upload, from_numpy)
    for engine in (appearance, warping):  # the CPU is the device: nothing crosses a bus
        assert (engine.transfers.h2d_bytes, engine.transfers.d2h_bytes) == (0, 0)
    assert warping.call_stats.calls == 3 and appearance.call_stats.calls == 2
    assert (warping.call_stats.samples() > 0).all()


def test_the_gate_is_held_while_the_model_runs(fixtures):
    seen = []

    class Watching(PriorityGate):
        def enter(self, priority="live"):
            seen.append(priority)
            return super().enter(priority)

    gate = Watching()
    engine = TorchEngine(CONTRACTS["liveportrait/stitching"], fixtures / "liveportrait_onnx/stitching.onnx", CPU, gate)
    forward = engine.module.forward
    busy_while_running = []

    def watched(inputs):
        busy_while_running.append(gate.live_busy)
        return forward(inputs)

    engine.module.forward = watched
    engine.run({"input": np.zeros((1, 126), np.float32)}, priority="batch")
    engine.warmup()  # a live call
    assert seen == ["batch", "live"]
    assert busy_while_running == [False, True]  # the live call runs inside the gate


def test_the_fp16_path_runs_conv_weights_in_half_under_autocast(fixtures):
    # What the engine does on CUDA, exercised on the CPU: conv/matmul weights cast once at load,
    # autocast around the call. Compared with the FP32 module, FP16 rounding only.
    model = onnx.load(str(fixtures / "liveportrait_onnx/appearance_feature_extractor.onnx"))
    full, half = OnnxModule(model, "fp32"), OnnxModule(model, "fp16").prepare("cpu", half_weights=True)
    assert {getattr(half, half._const_buffer[n]).dtype for n in half._weight_names} == {torch.float16}
    img = torch.from_numpy(np.random.default_rng(1).random((1, 3, 256, 256), dtype=np.float32))
    with torch.inference_mode():
        expected = full({"img": img})["output"]
        with torch.autocast("cpu", dtype=torch.float16, cache_enabled=False):
            got = half({"img": img})["output"]
    assert got.dtype == torch.float16
    np.testing.assert_allclose(
        got.float().numpy(), expected.numpy(), rtol=2e-2, atol=2e-2 * float(expected.abs().max())
    )


# --- full-size replicas ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def replicas():
    """The full-size replicas, built once into the shared replicas cache (skipped, with the reason,
    where their build tools are not installed)."""
    pytest.importorskip("mimic_head", reason="the LivePortrait replicas need mimic-head (requirements-reference.txt)")
    from facecast.models.replicas import ensure_replicas

    return ensure_replicas()


def _random_feeds(contract: ModelContract, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in contract.inputs:
        shape = [d or 1 for d in spec.shape]
        if spec.name.startswith("kp"):  # keypoints live in [-1, 1]
            feeds[spec.name] = rng.uniform(-0.8, 0.8, shape).astype(np.float32)
        elif spec.name == "source":  # an identity latent: unit length, as the swap feeds it
            latent = rng.standard_normal(shape).astype(np.float32)
            feeds[spec.name] = latent / np.linalg.norm(latent)
        elif len(shape) == 4:  # images in [0, 1] (LivePortrait) / normalised crops (insightface)
            feeds[spec.name] = rng.random(shape, dtype=np.float32)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _assert_close(got: dict, expected: dict, rel: float) -> None:
    assert set(got) == set(expected)
    for name, want in expected.items():
        scale = float(np.abs(want).max()) or 1.0
        assert got[name].shape == want.shape and got[name].dtype == np.float32
        np.testing.assert_allclose(got[name], want, rtol=0, atol=rel * scale, err_msg=name)


@pytest.mark.parametrize(
    "key, rel",
    [
        ("liveportrait/appearance_feature_extractor", 1e-5),
        ("liveportrait/motion_extractor", 1e-5),
        ("liveportrait/stitching", 1e-5),
        ("liveportrait/stitching_eye", 1e-5),
        ("liveportrait/stitching_lip", 1e-5),
        ("w600k_r50", 1e-5),
        ("inswapper_128", 1e-5),
    ],
)
def test_full_size_replicas_equal_onnxruntime(replicas, key, rel):
    contract = CONTRACTS[key]
    path = replicas / contract.file
    engine = TorchEngine(contract, path, CPU, PriorityGate())
    feeds = _random_feeds(contract, seed=11)
    expected = OnnxEngine(contract, path, CPU, PriorityGate()).run(feeds)
    _assert_close(engine.run(feeds), expected, rel)


def test_full_size_warping_spade_equals_onnxruntime(replicas):
    # The one deep generator (3-D hourglass, SPADE decoder, 5-D GridSample) ends in a sigmoid that the
    # random weights drive into saturation; where a pre-activation of a few hundred lands near zero,
    # FP32 summation-order differences (1e-7 relative) show as up to ~1e-3 after the sigmoid.
    # LivePortrait's own PyTorch module differs from onnxruntime by the same (2e-3 measured on this
    # export), so the bound is on the mean and a high percentile, with a loose cap on the maximum.
    # The mean depends on the CPU's kernels (summation order): 2.8e-5 measured on one 2-core machine,
    # under 1e-5 on another; a wrong conversion gives errors of order 1e-1.
    contract = CONTRACTS["liveportrait/warping_spade"]
    path = replicas / contract.file
    appearance = CONTRACTS["liveportrait/appearance_feature_extractor"]
    img = np.random.default_rng(5).random((1, 3, 256, 256), dtype=np.float32)
    feature = OnnxEngine(appearance, replicas / appearance.file, CPU, PriorityGate()).run({"img": img})["output"]
    rng = np.random.default_rng(6)
    kp_source = rng.uniform(-0.6, 0.6, (1, 21, 3)).astype(np.float32)
    feeds = {
        "feature_3d": feature,
        "kp_source": kp_source,
        "kp_driving": kp_source + rng.normal(0, 0.03, kp_source.shape).astype(np.float32),
    }
    engine = TorchEngine(contract, path, CPU, PriorityGate())
    # The exporter's shape arithmetic (Shape, Gather, Cast, ConstantOfShape, ...) is folded at load:
    # what runs per call is well under half of the graph's nodes.
    steps = engine.module.count_steps(
        {"feature_3d": (1, 32, 16, 64, 64), "kp_driving": (1, 21, 3), "kp_source": (1, 21, 3)}
    )
    assert not {"Shape", "Gather", "Cast", "ConstantOfShape"} & set(steps)
    assert sum(steps.values()) < len(onnx.load(str(path), load_external_data=False).graph.node) / 2
    got = engine.run(feeds)["out"]
    expected = OnnxEngine(contract, path, CPU, PriorityGate()).run(feeds)["out"]
    diff = np.abs(got - expected)
    assert got.shape == expected.shape == (1, 3, 512, 512)
    assert diff.mean() < 5e-5 and np.percentile(diff, 99.9) < 1e-3 and diff.max() < 5e-3, (
        diff.mean(),
        np.percentile(diff, 99.9),
        diff.max(),
    )


def test_full_size_arcface_runs_a_batch_of_faces(replicas):
    contract = CONTRACTS["w600k_r50"]
    path = replicas / contract.file
    engine = TorchEngine(contract, path, CPU, PriorityGate())
    faces = np.random.default_rng(2).uniform(-1, 1, (3, 3, 112, 112)).astype(np.float32)
    expected = OnnxEngine(contract, path, CPU, PriorityGate()).run({"input.1": faces})
    _assert_close(engine.run({"input.1": faces}), expected, 1e-5)


# --- CUDA (runs only where PyTorch has CUDA; tools/gpu_check.sh measures it) ---------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs PyTorch with CUDA")


@cuda
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_cuda_fp16_with_resident_volume_equals_onnxruntime(fixtures, cuda_graph):
    cfg = EngineConfig(device="torch", cuda_graph=cuda_graph)
    contract = CONTRACTS["liveportrait/warping_spade"]
    engine = TorchEngine(contract, fixtures / contract.file, cfg, PriorityGate())
    assert engine.on_gpu and engine.precision == "fp16" and engine.providers[0].startswith("torch-cuda:")
    engine.warmup()
    feeds = _random_feeds(contract, seed=4)
    resident = engine.upload(feeds["feature_3d"])
    engine.transfers.reset()
    for priority in ("live", "batch", "live"):
        got = engine.run({**feeds, "feature_3d": resident}, priority=priority)
    expected = OnnxEngine(contract, fixtures / contract.file, CPU, PriorityGate()).run(feeds)
    _assert_close(got, expected, rel=2e-2)
    kp_bytes = 2 * 21 * 3 * 4
    assert engine.transfers.h2d_bytes == 3 * kp_bytes
    assert engine.transfers.d2h_bytes in (3 * got["out"].size * 2, 3 * got["out"].size * 4)  # FP16 or FP32 readback
