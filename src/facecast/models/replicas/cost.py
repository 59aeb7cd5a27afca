"""Size and cost of an ONNX graph, counted the same way for every replica and published model.

Convention (the one the replica reports state beside the published figures):
- parameters: elements of the floating-point initializers that some node reads (in the main graph
  or a subgraph). Integer initializers (shape constants, indices) are not weights; an initializer
  no node reads (inswapper's `emap`, which the host code applies outside the graph) is data stored
  in the file, not a parameter of the network.
- GFLOPs: 2 x multiply-accumulates of one call, counting Conv, ConvTranspose, Gemm and MatMul only
  (biases, normalisations, activations, resizes and element-wise ops are left out: they are a few
  percent at most in these networks). Shapes come from ONNX shape inference at the graph's input
  shapes, with every dynamic dimension (a dynamic batch) taken as 1. Nodes inside subgraphs (If,
  Loop) are not costed.

Weights are never read: files with external data are loaded without it, since only the shapes matter.
"""

from __future__ import annotations

import math
from pathlib import Path

COSTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _float_types() -> set[int]:
    from onnx import TensorProto

    return {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}


def _read_names(graph) -> set[str]:
    """Every tensor name a node reads, in this graph and its subgraphs."""
    from onnx import AttributeProto

    names: set[str] = set()
    for node in graph.node:
        names.update(node.input)
        for attr in node.attribute:
            if attr.type == AttributeProto.GRAPH:
                names |= _read_names(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    names |= _read_names(sub)
    return names


def parameter_count(model) -> int:
    read = _read_names(model.graph)
    floats = _float_types()
    return sum(math.prod(t.dims) for t in model.graph.initializer if t.data_type in floats and t.name in read)


def _fix_dynamic_inputs(model) -> None:
    """Give every symbolic or unknown input dimension the value 1, so shape inference yields numbers."""
    init_names = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in init_names or not value.type.HasField("tensor_type"):
            continue
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value") or dim.dim_value <= 0:
                dim.Clear()
                dim.dim_value = 1


def _shapes(model) -> dict[str, tuple[int, ...]]:
    """Static shapes of every tensor shape inference could resolve (unknown dims left out)."""
    shapes: dict[str, tuple[int, ...]] = {}
    g = model.graph
    for value in [*g.input, *g.value_info, *g.output]:
        if not value.type.HasField("tensor_type") or not value.type.tensor_type.HasField("shape"):
            continue
        dims = value.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = tuple(d.dim_value for d in dims)
    for t in g.initializer:
        shapes[t.name] = tuple(t.dims)
    return shapes


def _attr(node, name: str, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def node_macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    """Multiply-accumulates of one Conv/ConvTranspose/Gemm/MatMul node (0 for other ops)."""
    op = node.op_type
    if op not in COSTED_OPS:
        return 0
    try:
        a = shapes[node.input[0]]
        b = shapes[node.input[1]]
        out = shapes[node.output[0]] if op != "ConvTranspose" else ()
    except KeyError as missing:
        raise ValueError(
            f"cannot cost {op} node {node.name!r}: shape of {missing} unknown after shape inference"
        ) from None
    if op == "Conv":  # each output element: (C_in / group) x kernel multiply-adds
        return math.prod(out) * b[1] * math.prod(b[2:])
    if op == "ConvTranspose":  # each input element scatters into (C_out / group) x kernel outputs
        return math.prod(a) * b[1] * math.prod(b[2:])
    if op == "Gemm":
        m, k = (a[1], a[0]) if _attr(node, "transA", 0) else (a[0], a[1])
        n = b[0] if _attr(node, "transB", 0) else b[1]
        return m * k * n
    # MatMul with numpy broadcasting; 1-D operands are promoted and the extra axis dropped.
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    batch = math.prod(max(x, y) for x, y in _broadcast_batch(a2[:-2], b2[:-2]))
    return batch * a2[-2] * a2[-1] * b2[-1]


def _broadcast_batch(a: tuple[int, ...], b: tuple[int, ...]):
    n = max(len(a), len(b))
    return zip((1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b, strict=False)


def _drop_weight_values(model) -> None:
    """Shape inference needs the weights' shapes only: dropping their values (in place) spares
    serialising hundreds of MB for it. Integer tensors (shapes, indices) keep their values."""
    floats = _float_types()
    for t in model.graph.initializer:
        if t.data_type in floats:
            for field in ("raw_data", "float_data", "double_data", "int32_data"):
                t.ClearField(field)


def graph_macs(model) -> int:
    """Multiply-accumulates of one call (modifies `model`: fixes dynamic input dims, drops weight values)."""
    from onnx import shape_inference

    _fix_dynamic_inputs(model)
    _drop_weight_values(model)
    inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    try:
        shapes = _shapes(inferred)
        return sum(node_macs(node, shapes) for node in inferred.graph.node)
    except ValueError:
        # Shapes computed inside the graph (LivePortrait's warping reshapes by values it derives from
        # Shape nodes) defeat ONNX's own inference; onnxruntime's symbolic inference propagates them.
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
        shapes = _shapes(inferred)
        return sum(node_macs(node, shapes) for node in inferred.graph.node)


def onnx_cost(path: Path | str) -> tuple[int, float]:
    """(parameter count, GFLOPs per call) of an ONNX file, by the convention in this module's docstring."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    params = parameter_count(model)
    return params, 2.0 * graph_macs(model) / 1e9
