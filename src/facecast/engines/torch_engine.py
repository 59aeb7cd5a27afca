"""engine.device: torch -- the same ONNX files run as PyTorch modules (on CUDA: FP16, CUDA graphs,
stream priorities).

For machines that have PyTorch with CUDA but neither onnxruntime-gpu nor TensorRT (the diffusion
users' installs, the GPU machines we measure on). Each ONNX file is converted once at load by a
small interpreter of our own (`OnnxModule`): initializers become buffers, the subgraphs that only
compute shapes (Shape, Gather, Concat, ConstantOfShape, ... on static shapes) are folded into
constants for the fixed input shapes, and what remains is a list of real tensor ops run in
topological order through a table op type -> torch function. A graph using an op the table does
not know is refused at load, naming the op and the node. Outputs are held equal to onnxruntime's
CPU output by tests/test_torch_engine.py.

FP16 follows LivePortrait's own PyTorch code: autocast, with the conv/matmul weights cast once at
load, so norms, softmax, exp and reductions keep FP32 while convolutions run in FP16.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from facecast.engines.base import CallStats, TransferStats
from facecast.engines.contracts import ModelContract, Precision, check_contract
from facecast.engines.gate import Priority, PriorityGate
from facecast.engines.onnxruntime import EngineError

try:
    import torch
    import torch.nn.functional as F
except ImportError as _missing:  # the pool imports this module only for engine.device: torch
    raise EngineError(
        f"engine.device: torch needs PyTorch ({_missing}). Install it (the CUDA build from pytorch.org on "
        "NVIDIA machines), or choose another engine.device"
    ) from _missing

if TYPE_CHECKING:
    import onnx

    from facecast.engines.onnxruntime import EngineConfig

log = logging.getLogger(__name__)


class GraphError(ValueError):
    """The ONNX graph uses something the torch interpreter cannot run; the message names the node."""


# ---------------------------------------------------------------------------------------------
# The op table: op type -> converter. A converter is called once per node at plan time with a
# `_NodeView` (attributes, constant inputs, input shapes) and returns the torch function run for
# that node: fn(*data_inputs, *extra_constants) -> tensor or tuple of tensors.
# ---------------------------------------------------------------------------------------------

Converter = Callable[["_NodeView"], Callable[..., Any]]


class _OpEntry(NamedTuple):
    convert: Converter
    static: tuple[int, ...]  # inputs that must be constant at load (shapes, axes, pads, ...)


_OPS: dict[str, _OpEntry] = {}
# Ops whose output is the input itself; no step is run for them.
_ALIASES = {"Identity", "Dropout"}
# Ops whose output depends only on the input's shape, which is known at plan time.
_SHAPE_ONLY = {"Shape", "Size"}


def _op(*names: str, static: tuple[int, ...] = ()) -> Callable[[Converter], Converter]:
    def register(convert: Converter) -> Converter:
        for name in names:
            _OPS[name] = _OpEntry(convert, static)
        return convert

    return register


def supported_ops() -> list[str]:
    return sorted({*_OPS, *_ALIASES, "Constant"})


class _NodeView:
    """What a converter may know about its node at plan time."""

    def __init__(
        self,
        node: onnx.NodeProto,
        opset: int,
        attrs: dict[str, Any],
        fetchers: list[Callable[[], Any] | None],
        shapes: list[tuple[int, ...] | None],
    ) -> None:
        self.node = node
        self.opset = opset
        self.attrs = attrs
        self._fetchers = fetchers  # per input: returns its CPU tensor when it is constant, else None
        self._shapes = shapes
        self.extra: list[Any] = []  # constants the converter adds (index tables and the like)

    @property
    def label(self) -> str:
        return f"{self.node.op_type} node {self.node.name or self.node.output[0]!r}"

    def attr(self, name: str, default: Any = None) -> Any:
        return self.attrs.get(name, default)

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def const(self, i: int) -> np.ndarray | None:
        """Input i's value when it is constant at plan time, else None."""
        fetch = self._fetchers[i] if self.has(i) else None
        if fetch is None:
            return None
        return fetch().numpy()

    def static(self, i: int) -> np.ndarray | None:
        """A static input (shape, axes, pads, ...): its value, or None when the input is absent."""
        return self.const(i)

    def required(self, i: int) -> np.ndarray:
        """A static input the op cannot do without (a Reshape's shape, a Range's bounds, ...)."""
        value = self.static(i)
        if value is None:
            raise self.refuse(f"input {i} is required but absent")
        return value

    def shape(self, i: int) -> tuple[int, ...]:
        shape = self._shapes[i]
        assert shape is not None
        return shape

    def add_const(self, array: np.ndarray) -> None:
        """A constant computed by the converter, passed to fn after the node's data inputs."""
        self.extra.append(array)

    def refuse(self, why: str) -> GraphError:
        return GraphError(f"{self.label}: {why}")


def _axes(n: _NodeView, input_index: int | None = 1, attr: str = "axes") -> list[int] | None:
    """Axes given as a static input (newer opsets) or as an attribute (older ones)."""
    value = n.static(input_index) if input_index is not None else None
    if value is not None:
        return [int(a) for a in np.asarray(value).reshape(-1)]
    listed = n.attr(attr)
    return None if listed is None else [int(a) for a in listed]


def _norm_axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# --- elementwise ---------------------------------------------------------------------------------


def _unary(fn_name: str) -> Converter:
    def convert(n: _NodeView):
        return getattr(torch, fn_name)

    return convert


for _name, _fn in {
    "Relu": "relu",
    "Sigmoid": "sigmoid",
    "Tanh": "tanh",
    "Exp": "exp",
    "Log": "log",
    "Sqrt": "sqrt",
    "Neg": "neg",
    "Abs": "abs",
    "Reciprocal": "reciprocal",
    "Erf": "erf",
    "Floor": "floor",
    "Ceil": "ceil",
    "Round": "round",
    "Sin": "sin",
    "Cos": "cos",
    "Sign": "sign",
    "Not": "logical_not",
    "IsNaN": "isnan",
}.items():
    _op(_name)(_unary(_fn))


@_op("Add", "Sub", "Mul", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor")
def _binary(n: _NodeView):
    return {
        "Add": torch.add,
        "Sub": torch.sub,
        "Mul": torch.mul,
        "Equal": torch.eq,
        "Less": torch.lt,
        "Greater": torch.gt,
        "LessOrEqual": torch.le,
        "GreaterOrEqual": torch.ge,
        "And": torch.logical_and,
        "Or": torch.logical_or,
        "Xor": torch.logical_xor,
    }[n.node.op_type]


@_op("Div")
def _div(n: _NodeView):

    def div(a, b):
        if a.is_floating_point() or b.is_floating_point():
            return torch.div(a, b)
        return torch.div(a, b, rounding_mode="trunc")  # ONNX integer division truncates

    return div


@_op("Pow")
def _pow(n: _NodeView):
    exponent = n.const(1)
    if exponent is not None and exponent.size == 1:
        e = float(exponent.reshape(-1)[0])
        if e == 2.0:
            return lambda a, _b: a * a
        return lambda a, _b: torch.pow(a, e)
    return lambda a, b: torch.pow(a, b).to(a.dtype)  # ONNX: the result has the base's type


@_op("Mod")
def _mod(n: _NodeView):
    return torch.fmod if n.attr("fmod", 0) else torch.remainder


@_op("Max", "Min", "Sum", "Mean")
def _variadic(n: _NodeView):
    pairs: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
        "Max": torch.maximum,
        "Min": torch.minimum,
        "Sum": torch.add,
        "Mean": torch.add,
    }
    pair = pairs[n.node.op_type]
    count = len(n.node.input)

    def reduce(*xs):
        out = xs[0]
        for x in xs[1:]:
            out = pair(out, x)
        return out / count if n.node.op_type == "Mean" else out

    return reduce


@_op("Where")
def _where(n: _NodeView):
    return torch.where


@_op("LeakyRelu")
def _leaky_relu(n: _NodeView):
    alpha = float(n.attr("alpha", 0.01))
    return lambda x: F.leaky_relu(x, alpha)


@_op("Elu")
def _elu(n: _NodeView):
    alpha = float(n.attr("alpha", 1.0))
    return lambda x: F.elu(x, alpha)


@_op("PRelu")
def _prelu(n: _NodeView):
    shape, slope_shape = n.shape(0), n.shape(1)
    channels = shape[1] if len(shape) > 1 else 1
    # A per-channel slope ([C], [C,1,1], ...) is torch's prelu; anything else broadcasts by hand.
    per_channel = (
        math.prod(slope_shape) == channels
        and len(slope_shape) < len(shape)
        and ((len(slope_shape) == 1 and len(shape) == 2) or all(d == 1 for d in slope_shape[1:]))
    )
    if per_channel and len(shape) >= 2:
        return lambda x, slope: F.prelu(x, slope.reshape(-1).to(x.dtype))
    return lambda x, slope: torch.where(x >= 0, x, x * slope)


@_op("HardSigmoid")
def _hard_sigmoid(n: _NodeView):
    alpha, beta = float(n.attr("alpha", 0.2)), float(n.attr("beta", 0.5))
    return lambda x: torch.clamp(x * alpha + beta, 0.0, 1.0)


@_op("HardSwish")
def _hard_swish(n: _NodeView):
    return F.hardswish


@_op("Softplus")
def _softplus(n: _NodeView):
    return F.softplus


@_op("Gelu")
def _gelu(n: _NodeView):
    approximate = n.attr("approximate", "none")
    return lambda x: F.gelu(x, approximate=approximate)


@_op("Clip", static=(1, 2))
def _clip(n: _NodeView):
    low_input, high_input = n.static(1), n.static(2)
    # opset < 11 keeps the bounds as attributes
    low: float | None = float(low_input) if low_input is not None else n.attr("min")
    high: float | None = float(high_input) if high_input is not None else n.attr("max")
    return lambda x: torch.clamp(x, low, high)


@_op("Cast")
def _cast(n: _NodeView):
    dtype = _torch_dtype(int(n.attr("to")))
    return lambda x: x.to(dtype)


@_op("CastLike")
def _cast_like(n: _NodeView):
    return lambda x, like: x.to(like.dtype)


# --- shapes and layout ---------------------------------------------------------------------------


@_op("Shape")
def _shape(n: _NodeView):
    start, end = n.attr("start", 0), n.attr("end")
    return lambda x: torch.tensor(list(x.shape)[start:end], dtype=torch.int64)


@_op("Size")
def _size(n: _NodeView):
    return lambda x: torch.tensor(x.numel(), dtype=torch.int64)


@_op("ConstantOfShape", static=(0,))
def _constant_of_shape(n: _NodeView):
    shape = [int(d) for d in n.required(0)]
    value = n.attr("value")
    fill = np.zeros(1, np.float32) if value is None else value.reshape(-1)
    dtype = _torch_dtype_of_np(fill.dtype)
    return lambda: torch.full(shape, fill[0].item(), dtype=dtype)


@_op("Range", static=(0, 1, 2))
def _range(n: _NodeView):
    start, limit, delta = (n.required(i) for i in range(3))
    dtype = _torch_dtype_of_np(np.asarray(start).dtype)
    return lambda: torch.arange(start.item(), limit.item(), delta.item(), dtype=dtype)


@_op("Reshape", static=(1,))
def _reshape(n: _NodeView):
    source = n.shape(0)
    target = [int(d) for d in n.required(1)]
    if not n.attr("allowzero", 0):
        target = [source[i] if d == 0 else d for i, d in enumerate(target)]
    return lambda x: x.reshape(target)


def _reshape_to(out_shape: tuple[int, ...]):
    return lambda x: x.reshape(out_shape)


@_op("Flatten")
def _flatten(n: _NodeView):
    shape = n.shape(0)
    axis = _norm_axis(int(n.attr("axis", 1)), len(shape))
    return _reshape_to((math.prod(shape[:axis]), math.prod(shape[axis:])))


@_op("Squeeze", static=(1,))
def _squeeze(n: _NodeView):
    shape = n.shape(0)
    axes = _axes(n)
    axes = [i for i, d in enumerate(shape) if d == 1] if axes is None else [_norm_axis(a, len(shape)) for a in axes]
    return _reshape_to(tuple(d for i, d in enumerate(shape) if i not in axes))


@_op("Unsqueeze", static=(1,))
def _unsqueeze(n: _NodeView):
    shape = list(n.shape(0))
    axes = _axes(n) or []
    rank = len(shape) + len(axes)
    for axis in sorted(_norm_axis(a, rank) for a in axes):
        shape.insert(axis, 1)
    return _reshape_to(tuple(shape))


@_op("Transpose")
def _transpose(n: _NodeView):
    perm = n.attr("perm")
    perm = list(range(len(n.shape(0))))[::-1] if perm is None else [int(p) for p in perm]
    return lambda x: x.permute(perm)


@_op("Expand", static=(1,))
def _expand(n: _NodeView):
    out = tuple(np.broadcast_shapes(n.shape(0), tuple(int(d) for d in n.required(1))))
    return lambda x: x.expand(out)


@_op("Tile", static=(1,))
def _tile(n: _NodeView):
    repeats = [int(r) for r in n.required(1)]
    return lambda x: x.repeat(repeats)


@_op("Concat")
def _concat(n: _NodeView):
    axis = int(n.attr("axis"))
    return lambda *xs: torch.cat(xs, axis)


@_op("Split", static=(1,))
def _split(n: _NodeView):
    shape = n.shape(0)
    axis = _norm_axis(int(n.attr("axis", 0)), len(shape))
    given = n.static(1)
    sizes: list[int] | None = [int(s) for s in given] if given is not None else n.attr("split")
    if sizes is None:  # equal parts; the last one smaller when the axis does not divide
        parts = len(n.node.output)
        step = -(-shape[axis] // parts)
        sizes = [min(step, shape[axis] - i * step) for i in range(parts)]
    sizes = [int(s) for s in sizes]
    return lambda x: torch.split(x, sizes, axis)


@_op("Slice", static=(1, 2, 3, 4))
def _slice(n: _NodeView):
    shape = n.shape(0)
    if n.opset < 10:
        starts, ends, given_axes, given_steps = n.attr("starts"), n.attr("ends"), n.attr("axes"), None
    else:
        starts, ends = n.required(1), n.required(2)
        given_axes, given_steps = n.static(3), n.static(4)
    axes = list(range(len(starts))) if given_axes is None else [_norm_axis(int(a), len(shape)) for a in given_axes]
    steps = [1] * len(axes) if given_steps is None else [int(s) for s in given_steps]
    index: list[slice] = [slice(None)] * len(shape)
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=False):
        if step <= 0:
            raise n.refuse("negative slice steps are not supported")
        dim = shape[axis]
        start, end = int(start), int(end)
        start = min(max(start + dim if start < 0 else start, 0), dim)
        end = min(max(end + dim if end < 0 else end, 0), dim)
        index[axis] = slice(start, max(start, end), step)
    key = tuple(index)
    return lambda x: x[key]


@_op("Gather")
def _gather(n: _NodeView):
    shape = n.shape(0)
    axis = _norm_axis(int(n.attr("axis", 0)), len(shape))
    idx_shape = n.shape(1)
    out = shape[:axis] + idx_shape + shape[axis + 1 :]
    indices = n.const(1)
    if indices is not None:  # the usual case: normalise once at load
        n.add_const((np.where(indices < 0, indices + shape[axis], indices)).reshape(-1).astype(np.int64))
        return lambda x, _i, flat: torch.index_select(x, axis, flat).reshape(out)

    def gather(x, i):
        flat = torch.where(i < 0, i + shape[axis], i).reshape(-1)
        return torch.index_select(x, axis, flat).reshape(out)

    return gather


@_op("GatherElements")
def _gather_elements(n: _NodeView):
    shape = n.shape(0)
    axis = _norm_axis(int(n.attr("axis", 0)), len(shape))
    return lambda x, i: torch.gather(x, axis, torch.where(i < 0, i + shape[axis], i))


@_op("DepthToSpace")
def _depth_to_space(n: _NodeView):
    b, c, h, w = n.shape(0)
    size = int(n.attr("blocksize"))
    if n.attr("mode", "DCR") == "CRD":
        return lambda x: F.pixel_shuffle(x, size)
    depth = c // (size * size)
    return lambda x: (
        x.reshape(b, size, size, depth, h, w).permute(0, 3, 4, 1, 5, 2).reshape(b, depth, h * size, w * size)
    )


@_op("SpaceToDepth")
def _space_to_depth(n: _NodeView):
    b, c, h, w = n.shape(0)
    size = int(n.attr("blocksize"))
    return lambda x: (
        x.reshape(b, c, h // size, size, w // size, size)
        .permute(0, 3, 5, 1, 2, 4)
        .reshape(b, c * size * size, h // size, w // size)
    )


@_op("Pad", static=(1, 2, 3))
def _pad(n: _NodeView):
    shape = n.shape(0)
    rank = len(shape)
    if n.opset < 11:
        pads, value, axes = list(n.attr("pads")), float(n.attr("value", 0.0)), None
    else:
        pads = [int(p) for p in n.required(1)]
        given_value = n.static(2)
        value = 0.0 if given_value is None or given_value.size == 0 else given_value.reshape(-1)[0].item()
        axes = _axes(n, 3) if n.has(3) else None
    axes = list(range(rank)) if axes is None else [_norm_axis(a, rank) for a in axes]
    begin, end = [0] * rank, [0] * rank
    for k, axis in enumerate(axes):
        begin[axis], end[axis] = int(pads[k]), int(pads[k + len(axes)])
    mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}[
        n.attr("mode", "constant")
    ]
    first = next((i for i in range(rank) if begin[i] or end[i]), rank)
    if mode != "constant" and rank - first > 3:
        raise n.refuse(f"{mode} padding of more than the last 3 dimensions")
    torch_pads: list[int] = []
    for axis in range(rank - 1, first - 1, -1):
        torch_pads += [begin[axis], end[axis]]
    if not torch_pads:
        return lambda x: x
    if mode == "constant":
        return lambda x: F.pad(x, torch_pads, "constant", value)
    if first == 0:  # torch pads reflect/replicate/circular only below a batch dimension
        return lambda x: F.pad(x.unsqueeze(0), torch_pads, mode).squeeze(0)
    return lambda x: F.pad(x, torch_pads, mode)


# --- reductions and normalisations ---------------------------------------------------------------


def _reduce_dims(n: _NodeView) -> tuple[list[int] | None, bool]:
    rank = len(n.shape(0))
    # ReduceSum takes axes as an input since opset 13, the others since opset 18.
    as_input = n.opset >= (13 if n.node.op_type == "ReduceSum" else 18)
    axes = _axes(n, 1 if as_input else None)
    keep = bool(n.attr("keepdims", 1))
    if not axes:
        if n.attr("noop_with_empty_axes", 0):
            return None, keep
        return list(range(rank)), keep
    return [_norm_axis(a, rank) for a in axes], keep


@_op("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL2", "ReduceL1", "ReduceSumSquare", static=(1,))
def _reduce(n: _NodeView):
    dims, keep = _reduce_dims(n)
    if dims is None:
        return lambda x: x
    kind = n.node.op_type
    if kind == "ReduceMean":
        return lambda x: torch.mean(x, dims, keep)
    if kind == "ReduceSum":
        return lambda x: torch.sum(x, dims, keep)
    if kind == "ReduceMax":
        return lambda x: torch.amax(x, dims, keep)
    if kind == "ReduceMin":
        return lambda x: torch.amin(x, dims, keep)
    if kind == "ReduceSumSquare":
        return lambda x: torch.sum(x * x, dims, keep)
    order = 2 if kind == "ReduceL2" else 1
    return lambda x: torch.linalg.vector_norm(x, order, dims, keep)


@_op("ArgMax", "ArgMin")
def _arg_extreme(n: _NodeView):
    if n.attr("select_last_index", 0):
        raise n.refuse("select_last_index=1 is not supported")
    axis, keep = int(n.attr("axis", 0)), bool(n.attr("keepdims", 1))
    fn = torch.argmax if n.node.op_type == "ArgMax" else torch.argmin
    return lambda x: fn(x, axis, keep)


@_op("Softmax", "LogSoftmax")
def _softmax(n: _NodeView):
    shape = n.shape(0)
    log_ = n.node.op_type == "LogSoftmax"
    fn = torch.log_softmax if log_ else torch.softmax
    if n.opset >= 13:
        axis = int(n.attr("axis", -1))
        return lambda x: fn(x, axis)
    axis = _norm_axis(int(n.attr("axis", 1)), len(shape))  # older opsets: softmax of the 2-D flattening
    rows = math.prod(shape[:axis])
    return lambda x: fn(x.reshape(rows, -1), 1).reshape(shape)


@_op("BatchNormalization")
def _batch_norm(n: _NodeView):
    if n.attr("training_mode", 0):
        raise n.refuse("training_mode=1 (batch statistics) is not supported")
    eps = float(n.attr("epsilon", 1e-5))
    return lambda x, scale, bias, mean, var: F.batch_norm(x, mean, var, scale, bias, False, 0.0, eps)


@_op("InstanceNormalization")
def _instance_norm(n: _NodeView):
    eps = float(n.attr("epsilon", 1e-5))
    return lambda x, scale, bias: F.instance_norm(x, weight=scale, bias=bias, eps=eps)


@_op("LayerNormalization")
def _layer_norm(n: _NodeView):
    shape = n.shape(0)
    axis = _norm_axis(int(n.attr("axis", -1)), len(shape))
    normalized = tuple(shape[axis:])
    eps = float(n.attr("epsilon", 1e-5))

    def layer_norm(x, scale, bias=None):
        scale = scale.expand(normalized) if tuple(scale.shape) != normalized else scale
        if bias is not None and tuple(bias.shape) != normalized:
            bias = bias.expand(normalized)
        return F.layer_norm(x, normalized, scale, bias, eps)

    return layer_norm


# --- convolution, matrix products, pooling -------------------------------------------------------


def _explicit_pads(
    n: _NodeView, spatial: tuple[int, ...], kernel: list[int], strides: list[int], dilations: list[int]
) -> list[int]:
    """ONNX pads [begin..., end...], with auto_pad SAME_* resolved for the known input shape."""
    auto = n.attr("auto_pad", "NOTSET")
    rank = len(spatial)
    if auto in ("NOTSET", ""):
        pads = n.attr("pads")
        return [0] * (2 * rank) if pads is None else [int(p) for p in pads]
    if auto == "VALID":
        return [0] * (2 * rank)
    begin, end = [], []
    for size, k, s, d in zip(spatial, kernel, strides, dilations, strict=False):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small = total // 2
        begin.append(small if auto == "SAME_UPPER" else total - small)
        end.append(total - small if auto == "SAME_UPPER" else small)
    return begin + end


def _pre_pad(pads: list[int], rank: int):
    """torch pads symmetrically; asymmetric ONNX pads become an explicit zero pad first."""
    begin, end = pads[:rank], pads[rank:]
    if begin == end:
        return begin, None
    torch_pads: list[int] = []
    for axis in range(rank - 1, -1, -1):
        torch_pads += [begin[axis], end[axis]]
    return [0] * rank, torch_pads


@_op("Conv")
def _conv(n: _NodeView):
    shape, w_shape = n.shape(0), n.shape(1)
    rank = len(shape) - 2
    if rank not in (1, 2, 3):
        raise n.refuse(f"{rank}-D convolution")
    kernel = list(n.attr("kernel_shape") or w_shape[2:])
    strides = list(n.attr("strides") or [1] * rank)
    dilations = list(n.attr("dilations") or [1] * rank)
    padding, pre = _pre_pad(_explicit_pads(n, shape[2:], kernel, strides, dilations), rank)
    groups = int(n.attr("group", 1))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[rank]

    def run(x, w, b=None):
        if pre is not None:
            x = F.pad(x, pre)
        return conv(x, w, b, strides, padding, dilations, groups)

    return run


@_op("ConvTranspose")
def _conv_transpose(n: _NodeView):
    shape = n.shape(0)
    rank = len(shape) - 2
    if rank not in (1, 2, 3):
        raise n.refuse(f"{rank}-D transposed convolution")
    if n.attr("output_shape") is not None or n.attr("auto_pad", "NOTSET") not in ("NOTSET", "", "VALID"):
        raise n.refuse("output_shape / auto_pad SAME are not supported")
    pads = list(n.attr("pads") or [0] * (2 * rank))
    if pads[:rank] != pads[rank:]:
        raise n.refuse("asymmetric pads are not supported")
    strides = list(n.attr("strides") or [1] * rank)
    dilations = list(n.attr("dilations") or [1] * rank)
    output_padding = list(n.attr("output_padding") or [0] * rank)
    groups = int(n.attr("group", 1))
    conv = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[rank]
    return lambda x, w, b=None: conv(x, w, b, strides, pads[:rank], output_padding, groups, dilations)


@_op("MatMul")
def _matmul(n: _NodeView):
    return torch.matmul


@_op("Gemm")
def _gemm(n: _NodeView):
    alpha, beta = float(n.attr("alpha", 1.0)), float(n.attr("beta", 1.0))
    trans_a, trans_b = int(n.attr("transA", 0)), int(n.attr("transB", 0))
    out_n = n.shape(1)[0 if trans_b else 1]
    bias_is_row = n.has(2) and math.prod(n.shape(2)) == out_n
    if alpha == 1.0 and beta == 1.0 and not trans_a and (not n.has(2) or bias_is_row):
        if trans_b:  # B is [N, K]: exactly nn.Linear's weight
            return lambda a, b, c=None: F.linear(a, b, None if c is None else c.reshape(-1))
        return lambda a, b, c=None: a @ b if c is None else torch.addmm(c.reshape(-1), a, b)

    def gemm(a, b, c=None):
        y = (a.t() if trans_a else a) @ (b.t() if trans_b else b)
        if alpha != 1.0:
            y = y * alpha
        if c is not None:
            y = y + (c * beta if beta != 1.0 else c)
        return y

    return gemm


@_op("Einsum")
def _einsum(n: _NodeView):
    equation = n.attr("equation")
    return lambda *xs: torch.einsum(equation, *xs)


def _pool_setup(n: _NodeView):
    shape = n.shape(0)
    rank = len(shape) - 2
    if rank not in (1, 2, 3):
        raise n.refuse(f"{rank}-D pooling")
    kernel = list(n.attr("kernel_shape"))
    strides = list(n.attr("strides") or [1] * rank)
    dilations = list(n.attr("dilations") or [1] * rank)
    pads = _explicit_pads(n, shape[2:], kernel, strides, dilations)
    return rank, kernel, strides, dilations, pads


@_op("AveragePool")
def _average_pool(n: _NodeView):
    rank, kernel, strides, dilations, pads = _pool_setup(n)
    if any(d != 1 for d in dilations):
        raise n.refuse("dilated average pooling")
    ceil, include = bool(n.attr("ceil_mode", 0)), bool(n.attr("count_include_pad", 0))
    padding, pre = _pre_pad(pads, rank)
    if pre is not None and not include:
        raise n.refuse("asymmetric pads with count_include_pad=0")
    if any(2 * p > k for p, k in zip(padding, kernel, strict=False)):
        raise n.refuse("pads larger than half the kernel")
    pool = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[rank]

    def run(x):
        if pre is not None:
            x = F.pad(x, pre)
        return pool(x, kernel, strides, padding, ceil, include)

    return run


@_op("MaxPool")
def _max_pool(n: _NodeView):
    if len(n.node.output) > 1 and n.node.output[1]:
        raise n.refuse("the Indices output is not supported")
    rank, kernel, strides, dilations, pads = _pool_setup(n)
    ceil = bool(n.attr("ceil_mode", 0))
    padding, pre = _pre_pad(pads, rank)
    pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[rank]

    def run(x):
        if pre is not None:
            x = F.pad(x, pre, value=float("-inf"))
        return pool(x, kernel, strides, padding, dilations, ceil)

    return run


@_op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(n: _NodeView):
    dims = list(range(2, len(n.shape(0))))
    if n.node.op_type == "GlobalAveragePool":
        return lambda x: torch.mean(x, dims, True)
    return lambda x: torch.amax(x, dims, True)


# --- resampling ----------------------------------------------------------------------------------


def _nearest_index(out: int, size: int, scale: float, transform: str, rounding: str) -> np.ndarray:
    """Source index of each output position along one axis, by the ONNX Resize formulas."""
    x = np.arange(out, dtype=np.float64)
    if transform == "asymmetric":
        src = x / scale
    elif transform == "align_corners":
        src = np.zeros_like(x) if out == 1 else x * (size - 1) / (out - 1)
    elif transform == "pytorch_half_pixel":
        src = (x + 0.5) / scale - 0.5 if out > 1 else np.zeros_like(x)
    elif transform in ("half_pixel", "half_pixel_symmetric"):
        src = (x + 0.5) / scale - 0.5
        if transform == "half_pixel_symmetric":
            src += (size - out / scale) / 2
    else:
        raise ValueError(transform)
    if rounding == "floor":
        idx = np.floor(src)
    elif rounding == "ceil":
        idx = np.ceil(src)
    elif rounding == "round_prefer_ceil":
        idx = np.floor(src + 0.5)
    else:  # round_prefer_floor
        idx = np.ceil(src - 0.5)
    return np.clip(idx, 0, size - 1).astype(np.int64)


@_op("Resize", static=(1, 2, 3))
def _resize(n: _NodeView):
    shape = n.shape(0)
    rank = len(shape)
    mode = n.attr("mode", "nearest")
    transform = n.attr("coordinate_transformation_mode", "half_pixel")
    scales, sizes = n.static(2), n.static(3)
    axes = n.attr("axes")
    if n.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise n.refuse("keep_aspect_ratio_policy other than stretch")
    full_scales = [1.0] * rank
    out = list(shape)
    axes = list(range(rank)) if axes is None else [_norm_axis(int(a), rank) for a in axes]
    if sizes is not None and sizes.size:
        for axis, size in zip(axes, sizes, strict=False):
            out[axis] = int(size)
            full_scales[axis] = int(size) / shape[axis]
        by_scale = False
    elif scales is not None and scales.size:
        for axis, scale in zip(axes, scales, strict=False):
            full_scales[axis] = float(scale)
            out[axis] = math.floor(shape[axis] * float(scale))
        by_scale = True
    else:
        raise n.refuse("neither scales nor sizes given")
    if out[:2] != list(shape[:2]):
        raise n.refuse("resizing the batch or channel axis")
    spatial = rank - 2
    if spatial not in (1, 2, 3):
        raise n.refuse(f"{spatial}-D resize")
    downscales = any(o < s for o, s in zip(out[2:], shape[2:], strict=False))
    if n.attr("antialias", 0) and downscales and mode != "nearest":
        raise n.refuse("antialiased downscaling")
    size_or_scale = (
        {"scale_factor": tuple(full_scales[2:]), "recompute_scale_factor": False}
        if by_scale
        else {"size": tuple(out[2:])}
    )
    if mode == "nearest":
        rounding = n.attr("nearest_mode", "round_prefer_floor")
        if transform == "asymmetric" and rounding == "floor":
            return lambda x: F.interpolate(x, mode="nearest", **size_or_scale)
        # Every other nearest variant: gather the source rows/columns computed here at load.
        tables = []
        for axis in range(2, rank):
            if out[axis] == shape[axis] and full_scales[axis] == 1.0:
                continue
            tables.append(axis)
            n.add_const(_nearest_index(out[axis], shape[axis], full_scales[axis], transform, rounding))

        def gather(x, *indices):  # X, then one index table per resized axis
            for axis, index in zip(tables, indices, strict=False):
                x = x.index_select(axis, index)
            return x

        return gather
    if mode not in ("linear", "cubic"):
        raise n.refuse(f"mode {mode!r}")
    if transform in ("half_pixel", "pytorch_half_pixel"):
        align = False
        if transform == "pytorch_half_pixel" and any(o == 1 for o in out[2:]):
            raise n.refuse("pytorch_half_pixel to a size of 1")
    elif transform == "align_corners":
        align = True
    else:
        raise n.refuse(f"{mode} resize with coordinate_transformation_mode {transform!r}")
    if mode == "cubic":
        if spatial != 2 or n.attr("exclude_outside", 0) or abs(float(n.attr("cubic_coeff_a", -0.75)) + 0.75) > 1e-6:
            raise n.refuse("cubic resize other than torch's bicubic (2-D, a=-0.75, exclude_outside=0)")
        torch_mode = "bicubic"
    else:
        torch_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial]
    return lambda x: F.interpolate(x, mode=torch_mode, align_corners=align, **size_or_scale)


@_op("GridSample")
def _grid_sample(n: _NodeView):
    mode = {
        "linear": "bilinear",
        "bilinear": "bilinear",
        "nearest": "nearest",
        "cubic": "bicubic",
        "bicubic": "bicubic",
    }[n.attr("mode", "linear" if n.opset >= 20 else "bilinear")]
    padding = n.attr("padding_mode", "zeros")
    align = bool(n.attr("align_corners", 0))
    # torch wants one dtype for the volume and the grid (autocast may leave them different)
    return lambda x, grid: F.grid_sample(x, grid.to(x.dtype), mode, padding, align)


# ---------------------------------------------------------------------------------------------
# The converted module
# ---------------------------------------------------------------------------------------------


_TORCH_OF_ONNX = {
    1: torch.float32,
    2: torch.uint8,
    3: torch.int8,
    5: torch.int16,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
    16: torch.bfloat16,
}
_NP_OF_TORCH = {
    torch.float32: np.float32,
    torch.float16: np.float16,
    torch.float64: np.float64,
    torch.int64: np.int64,
    torch.int32: np.int32,
    torch.int16: np.int16,
    torch.int8: np.int8,
    torch.uint8: np.uint8,
    torch.bool: np.bool_,
}


def _torch_dtype(onnx_type: int):
    if onnx_type not in _TORCH_OF_ONNX:
        raise GraphError(f"ONNX tensor type {onnx_type} is not supported")
    return _TORCH_OF_ONNX[onnx_type]


def _torch_dtype_of_np(dtype: np.dtype):
    return torch.from_numpy(np.zeros(0, dtype)).dtype


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper, numpy_helper

    out: dict[str, Any] = {}
    for a in node.attribute:
        if a.type == a.TENSOR:
            out[a.name] = numpy_helper.to_array(a.t)
            continue
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [v.decode() for v in value]
        out[a.name] = value
    return out


def _constant_value(node: onnx.NodeProto, attrs: dict[str, Any]) -> np.ndarray:
    if "value" in attrs:
        return np.asarray(attrs["value"])
    for key, dtype in (
        ("value_float", np.float32),
        ("value_floats", np.float32),
        ("value_int", np.int64),
        ("value_ints", np.int64),
    ):
        if key in attrs:
            return np.asarray(attrs[key], dtype=dtype)
    raise GraphError(f"Constant node {node.name!r}: only tensor and numeric values are supported")


@dataclass(slots=True)
class _Step:
    fn: Callable[..., Any]
    args: tuple[int | None, ...]  # env slots; None = an absent optional input
    outs: tuple[int, ...]  # -1 = an output nobody reads
    free: tuple[int, ...]  # slots read for the last time by this step
    label: str


@dataclass(slots=True)
class _Program:
    """The graph for one set of input shapes: real tensor ops only, shapes folded."""

    inputs: dict[str, int]
    consts: dict[int, str]  # slot -> buffer name
    steps: list[_Step]
    outputs: dict[str, int]
    slots: int
    env: list[Any] | None = None  # the slot list with the constants in place (rebuilt after .to())


@dataclass(slots=True)
class _PlannedNode:
    fn: Callable[..., Any]
    args: list[str | None]  # value names (None = absent optional input)
    outs: list[str]
    label: str


# Inputs that hold weights: cast to FP16 once at load and laid out channels-last for 4-D convs.
_WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (1,)}


class OnnxModule(torch.nn.Module):
    """One ONNX graph as a torch module. Buffers hold the initializers; `forward(inputs)` runs the
    program planned for the inputs' shapes (planned once per distinct set of shapes)."""

    def __init__(self, model: onnx.ModelProto, name: str = "model") -> None:
        from onnx import numpy_helper

        super().__init__()
        self.name = name
        graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        for node in graph.node:
            if node.domain not in ("", "ai.onnx") or node.op_type not in {*_OPS, *_ALIASES, "Constant"}:
                domain = f"{node.domain}." if node.domain not in ("", "ai.onnx") else ""
                raise GraphError(
                    f"{name}: node {node.name or node.output[0]!r} uses op {domain}{node.op_type}, "
                    "which the torch engine cannot run"
                )
        self._nodes = list(graph.node)
        self._attrs = [_attributes(node) for node in self._nodes]
        init_names = {t.name for t in graph.initializer}
        graph_inputs = [v for v in graph.input if v.name not in init_names]
        self.input_names = [v.name for v in graph_inputs]
        self.input_types = {v.name: v.type.tensor_type.elem_type for v in graph_inputs}
        self.input_dims = {
            v.name: tuple(
                d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in v.type.tensor_type.shape.dim
            )
            for v in graph_inputs
        }
        self.output_names = [v.name for v in graph.output]
        self._device = torch.device("cpu")
        self._programs: dict[tuple, _Program] = {}
        self._plan_lock = threading.Lock()
        # Initializers and Constant nodes become buffers c0, c1, ... (in their ONNX dtype)
        self._const_buffer: dict[str, str] = {}
        self._const_dtype: dict[str, Any] = {}
        for tensor in graph.initializer:
            self._const_buffer[tensor.name] = self._new_buffer(torch.from_numpy(numpy_helper.to_array(tensor).copy()))
        for node, attrs in zip(self._nodes, self._attrs, strict=False):
            if node.op_type == "Constant":
                self._const_buffer[node.output[0]] = self._new_buffer(
                    torch.from_numpy(np.array(_constant_value(node, attrs), copy=True))
                )
        self._weight_names = self._weights()

    # -- constants --
    def _new_buffer(self, tensor) -> str:
        key = f"c{len(self._const_dtype)}"
        self._const_dtype[key] = tensor.dtype
        self.register_buffer(key, tensor.to(self._device), persistent=False)
        return key

    def _host_const(self, onnx_name: str):
        """A constant's value on the CPU in its ONNX dtype (weights may be FP16 on the GPU by now)."""
        key = self._const_buffer[onnx_name]
        return getattr(self, key).detach().to("cpu", self._const_dtype[key]).contiguous()

    def _const_meta(self, onnx_name: str):
        key = self._const_buffer[onnx_name]
        return torch.empty(getattr(self, key).shape, dtype=self._const_dtype[key], device="meta")

    def _weights(self) -> set[str]:
        """Constants read only as conv/matmul weights (safe to cast to FP16 and re-lay out)."""
        uses: dict[str, set[bool]] = {}
        for node in self._nodes:
            weight_slots = _WEIGHT_INPUTS.get(node.op_type, ())
            for i, name in enumerate(node.input):
                if name in self._const_buffer:
                    uses.setdefault(name, set()).add(i in weight_slots)
        return {name for name, kinds in uses.items() if kinds == {True}}

    def prepare(self, device, half_weights: bool = False, channels_last: bool = False) -> OnnxModule:
        """Move to the device; cast conv/matmul weights to FP16 and lay 4-D conv weights out
        channels-last once, so autocast has nothing to cast per call."""
        for onnx_name in self._weight_names:
            key = self._const_buffer[onnx_name]
            tensor = getattr(self, key)
            if half_weights and tensor.dtype == torch.float32:
                tensor = tensor.half()
            if channels_last and tensor.dim() == 4:
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            self._buffers[key] = tensor
        self._device = torch.device(device)
        self.to(self._device)
        return self

    def _apply(self, fn, *args, **kwargs):  # .to()/.half(): the cached slot lists point at old tensors
        result = super()._apply(fn, *args, **kwargs)
        for program in self._programs.values():
            program.env = None
        return result

    # -- planning --
    def program(self, shapes: dict[str, tuple[int, ...]]) -> _Program:
        key = tuple(tuple(shapes[name]) for name in self.input_names)
        program = self._programs.get(key)
        if program is None:
            with self._plan_lock:
                program = self._programs.get(key)
                if program is None:
                    program = self._plan({name: tuple(shapes[name]) for name in self.input_names})
                    self._programs[key] = program
        return program

    def _plan(self, shapes: dict[str, tuple[int, ...]]) -> _Program:
        """Walk the graph once for these input shapes: fold what is known at load (constants, shapes,
        everything computed only from them), and keep the rest as steps. Runtime values are tracked as
        meta tensors, so every shape is known without running anything."""
        alias: dict[str, str] = {}
        folded: dict[str, Any] = {}  # value -> CPU tensor computed here
        fetched: dict[str, Any] = {}  # initializer -> its CPU copy (fetched only when needed)
        meta: dict[str, Any] = {
            name: torch.empty(shapes[name], dtype=_torch_dtype(self.input_types[name]), device="meta")
            for name in self.input_names
        }
        extras: dict[str, Any] = {}
        planned: list[_PlannedNode] = []

        def resolve(name: str) -> str:
            while name in alias:
                name = alias[name]
            return name

        def is_const(name: str) -> bool:
            return name in folded or name in self._const_buffer

        def value(name: str):
            if name in folded:
                return folded[name]
            if name not in fetched:
                fetched[name] = self._host_const(name)
            return fetched[name]

        def meta_of(name: str):
            if name in meta:
                return meta[name]
            if name in folded:
                return folded[name].to("meta")
            return self._const_meta(name)

        for index in sorted(self._needed()):
            node, attrs = self._nodes[index], self._attrs[index]
            if node.op_type == "Constant":
                continue
            names = [resolve(name) if name else "" for name in node.input]
            if node.op_type in _ALIASES:
                if len(node.output) > 1 and node.output[1]:
                    raise GraphError(
                        f"{self.name}: {node.op_type} node {node.name!r}: the mask output is not supported"
                    )
                alias[node.output[0]] = names[0]
                continue
            entry = _OPS[node.op_type]
            view = _NodeView(
                node,
                self.opset,
                attrs,
                [functools.partial(value, name) if name and is_const(name) else None for name in names],
                [tuple(meta_of(name).shape) if name else None for name in names],
            )
            for i in entry.static:
                if view.has(i) and not is_const(names[i]):
                    raise GraphError(
                        f"{self.name}: {view.label}: input {i} ({node.input[i]!r}) is computed at run "
                        "time; the torch engine needs it constant for fixed input shapes"
                    )
            try:
                fn = entry.convert(view)
            except GraphError as exc:
                raise GraphError(f"{self.name}: {exc}") from None
            data = [i for i in range(len(names)) if i not in entry.static]
            while data and not names[data[-1]]:
                data.pop()  # trailing absent optional inputs are not passed at all
            extra = [torch.from_numpy(np.ascontiguousarray(a)) for a in view.extra]
            if node.op_type in _SHAPE_ONLY or all(not names[i] or is_const(names[i]) for i in data):
                args = [
                    None if not names[i] else (value(names[i]) if is_const(names[i]) else meta[names[i]]) for i in data
                ]
                try:
                    result = fn(*args, *extra)
                except Exception as exc:
                    raise GraphError(f"{self.name}: {view.label}: cannot compute it at load ({exc})") from exc
                for out, tensor in zip(node.output, _as_tuple(result), strict=False):
                    if out:
                        folded[out] = tensor.contiguous()
                continue
            # A real tensor op: its output shapes come from running it on meta tensors.
            try:
                result = fn(*[meta_of(names[i]) if names[i] else None for i in data], *(t.to("meta") for t in extra))
            except Exception as exc:
                raise GraphError(f"{self.name}: {view.label}: {exc}") from exc
            for out, tensor in zip(node.output, _as_tuple(result), strict=False):
                if out:
                    meta[out] = tensor
            extra_names: list[str | None] = []
            for tensor in extra:
                extra_name = f"extra:{len(extras)}"
                extras[extra_name] = tensor
                extra_names.append(extra_name)
            planned.append(
                _PlannedNode(fn, [names[i] or None for i in data] + extra_names, list(node.output), view.label)
            )
        outputs = {name: resolve(name) for name in self.output_names}
        return self._assemble(planned, outputs, folded, extras)

    def _needed(self) -> set[int]:
        """Indices of the nodes the graph outputs depend on."""
        wanted = set(self.output_names)
        needed: set[int] = set()
        for index in range(len(self._nodes) - 1, -1, -1):
            node = self._nodes[index]
            if any(name in wanted for name in node.output):
                needed.add(index)
                wanted.update(name for name in node.input if name)
        return needed

    def _assemble(
        self, planned: list[_PlannedNode], outputs: dict[str, str], folded: dict[str, Any], extras: dict[str, Any]
    ) -> _Program:
        """Number the slots, register the constants the steps read as buffers, and free each
        intermediate after its last reader."""
        slot: dict[str, int] = {name: i for i, name in enumerate(self.input_names)}
        consts: dict[int, str] = {}

        def read(name: str | None) -> int | None:
            return None if name is None else slot_of(name)

        def slot_of(name: str) -> int:
            if name not in slot:
                if name in extras or name in folded:
                    key = self._new_buffer(extras.get(name) if name in extras else folded[name])
                elif name in self._const_buffer:
                    key = self._const_buffer[name]
                else:
                    raise GraphError(f"{self.name}: value {name!r} is read before it is computed")
                slot[name] = len(slot)
                consts[slot[name]] = key
            return slot[name]

        steps: list[_Step] = []
        for node in planned:
            args = tuple(read(name) for name in node.args)
            outs = []
            for name in node.outs:
                if name:
                    slot[name] = len(slot)
                outs.append(slot[name] if name else -1)
            steps.append(_Step(node.fn, args, tuple(outs), (), node.label))
        output_slots = {name: slot_of(source) for name, source in outputs.items()}
        keep = set(range(len(self.input_names))) | set(consts) | set(output_slots.values())
        last: dict[int, int] = {}
        for index, step in enumerate(steps):
            for s in (*step.outs, *step.args):
                if s is not None and s >= 0 and s not in keep:
                    last[s] = index
        frees: dict[int, list[int]] = {}
        for s, index in last.items():
            frees.setdefault(index, []).append(s)
        for index, step in enumerate(steps):
            step.free = tuple(frees.get(index, ()))
        return _Program({name: i for i, name in enumerate(self.input_names)}, consts, steps, output_slots, len(slot))

    # -- running --
    def forward(self, inputs: dict[str, Any]) -> dict[str, Any]:
        program = self.program({name: tuple(inputs[name].shape) for name in self.input_names})
        if program.env is None:
            env = [None] * program.slots
            for s, key in program.consts.items():
                env[s] = getattr(self, key)
            program.env = env
        env = list(program.env)
        for name, s in program.inputs.items():
            env[s] = inputs[name]
        for step in program.steps:
            try:
                result = step.fn(*[None if a is None else env[a] for a in step.args])
            except Exception as exc:
                raise RuntimeError(f"{self.name}: {step.label}: {exc}") from exc
            if len(step.outs) == 1:
                env[step.outs[0]] = result
            else:
                for s, tensor in zip(step.outs, result, strict=False):
                    if s >= 0:
                        env[s] = tensor
            for s in step.free:
                env[s] = None
        return {name: env[s] for name, s in program.outputs.items()}

    def count_steps(self, shapes: dict[str, tuple[int, ...]]) -> dict[str, int]:
        """op type -> how many tensor ops one call runs after folding (for reports and tests)."""
        counts: dict[str, int] = {}
        for step in self.program(shapes).steps:
            op = step.label.split(" ", 1)[0]
            counts[op] = counts.get(op, 0) + 1
        return counts


# ---------------------------------------------------------------------------------------------
# The engine
# ---------------------------------------------------------------------------------------------


class _Arg(NamedTuple):  # what check_contract reads of an input/output (like onnxruntime's NodeArg)
    name: str
    shape: tuple
    type: str


_ORT_TYPE = {
    1: "tensor(float)",
    10: "tensor(float16)",
    11: "tensor(double)",
    7: "tensor(int64)",
    6: "tensor(int32)",
    9: "tensor(bool)",
}


def _graph_args(values) -> list[_Arg]:
    return [
        _Arg(
            v.name,
            tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim),
            _ORT_TYPE.get(v.type.tensor_type.elem_type, f"tensor({v.type.tensor_type.elem_type})"),
        )
        for v in values
    ]


class _EagerRunner:
    """Runs the module op by op (CPU, or CUDA without graphs)."""

    static_outputs = False

    def __init__(self, engine: TorchEngine) -> None:
        self.engine = engine
        self.lock = contextlib.nullcontext()

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        staged = {name: self.engine._to_device(name, value) for name, value in inputs.items()}
        with self.engine._autocast():
            return self.engine.module(staged)


class _GraphRunner:
    """One CUDA graph for one set of input shapes and one stream: static input buffers the inputs are
    copied into, captured once after warm-up calls, then replayed. Its outputs are static too (the
    next replay overwrites them), so callers copy them out while holding `lock`."""

    static_outputs = True

    def __init__(self, engine: TorchEngine, sample: dict[str, Any], stream) -> None:
        self.lock = threading.Lock()
        self.inputs = {name: engine._to_device(name, value).clone() for name, value in sample.items()}
        stream.wait_stream(torch.cuda.current_stream(engine.device))
        with torch.cuda.stream(stream), engine._autocast():
            for _ in range(3):  # cudnn times its algorithms, the allocator settles
                engine.module(self.inputs)
        stream.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=stream, capture_error_mode="thread_local"), engine._autocast():
            self.outputs = engine.module(self.inputs)
        stream.synchronize()

    def __call__(self, inputs: dict[str, Any]) -> dict[str, Any]:
        for name, value in inputs.items():
            self.inputs[name].copy_(torch.from_numpy(value) if isinstance(value, np.ndarray) else value)
        self.graph.replay()
        return self.outputs


_CAPTURE_LOCK = threading.Lock()  # one CUDA graph capture at a time in this process
_fallback_logged = False


def _as_tuple(result) -> tuple:
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)


class TorchEngine:
    """One ONNX model run as a torch module. Thread-safe: the live path and the batch thread share it."""

    def __init__(
        self,
        contract: ModelContract,
        path: Path,
        cfg: EngineConfig,
        gate: PriorityGate,
        precision: Precision | None = None,
    ) -> None:
        import onnx

        self.contract = contract
        self.path = Path(path)
        self.gate = gate
        self.device = self._pick_device(cfg)
        self.on_gpu = self.device.type == "cuda"
        wanted: Precision = precision or ("fp32" if not cfg.fp16 else contract.precision)
        self.precision: Precision = wanted if self.on_gpu else "fp32"  # the CPU runs FP32
        try:
            model = onnx.load(str(self.path))
        except Exception as exc:
            raise EngineError(f"{contract.file}: cannot read it as ONNX ({exc})") from exc
        from facecast.models.replicas import MARK_KEY

        # A full-size replica (random weights) says so in its metadata: read it from this parse.
        self.replica: str | None = next((p.value for p in model.metadata_props if p.key == MARK_KEY), None)
        init_names = {t.name for t in model.graph.initializer}
        check_contract(
            contract,
            _graph_args(v for v in model.graph.input if v.name not in init_names),
            _graph_args(model.graph.output),
        )
        try:
            self.module = OnnxModule(model, contract.file)
            del model
            self._default_shapes = {
                name: tuple(d if d is not None else 1 for d in dims) for name, dims in self.module.input_dims.items()
            }
            self.module.program(self._default_shapes)  # converted and planned once, here at load
        except GraphError as exc:
            raise EngineError(f"{contract.file}: {exc}") from exc
        self.module.prepare(self.device, half_weights=self.precision == "fp16", channels_last=self.on_gpu)
        self.module.eval()
        self._input_dtypes = {name: _torch_dtype(t) for name, t in self.module.input_types.items()}
        self._output_names = [o.name for o in contract.outputs]
        self.cuda_graph = bool(cfg.cuda_graph and self.on_gpu)
        self._runners: dict[tuple, Any] = {}
        self._runners_lock = threading.Lock()
        if self.on_gpu:
            torch.backends.cudnn.benchmark = True  # fixed shapes: cudnn times its algorithms once
            # Lower number = higher priority: live frames go before batch work queued on the GPU.
            self._streams = {
                "live": torch.cuda.Stream(self.device, priority=-1),
                "batch": torch.cuda.Stream(self.device, priority=0),
            }
            self.providers = [f"torch-cuda:{torch.cuda.get_device_name(self.device)}"]
        else:
            self._streams = {}
            self.providers = ["torch-cpu"]
        self.call_stats = CallStats()
        self.transfers = TransferStats()
        log.info(
            "engine %s: %s (%s%s)",
            contract.key,
            ", ".join(self.providers),
            self.precision,
            ", CUDA graphs" if self.cuda_graph else "",
        )

    @staticmethod
    def _pick_device(cfg: EngineConfig):
        if cfg.device == "cpu":
            return torch.device("cpu")
        if torch.cuda.is_available() and cfg.device_id < torch.cuda.device_count():
            return torch.device("cuda", cfg.device_id)
        if torch.cuda.is_available():
            why = f"there is no GPU number {cfg.device_id} (PyTorch sees {torch.cuda.device_count()})"
        else:
            why = f"this PyTorch ({torch.__version__}) has no CUDA device"
        if not cfg.allow_cpu_fallback:
            raise EngineError(
                f"engine.device is {cfg.device!r} but {why}. Install the CUDA build of PyTorch (pytorch.org), "
                "or set engine.device: cpu, or engine.allow_cpu_fallback: true to run on the CPU knowingly."
            )
        global _fallback_logged
        if not _fallback_logged:  # once, not once per model
            log.warning(
                "engine.device is %r but %s: the torch engine runs on the CPU (allow_cpu_fallback)", cfg.device, why
            )
            _fallback_logged = True
        return torch.device("cpu")

    # -- what the runners share --
    def _autocast(self):
        if self.precision != "fp16":
            return contextlib.nullcontext()
        # cache_enabled=False: cached casts cannot outlive a CUDA graph capture (weights are FP16 already)
        return torch.autocast(self.device.type, dtype=torch.float16, cache_enabled=False)

    def _to_device(self, name: str, value: Any):
        """An input as a tensor on the device in the graph's dtype; 4-D images channels-last on CUDA."""
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(value)
        tensor = tensor.to(self.device, self._input_dtypes[name])
        if self.on_gpu and tensor.dim() == 4 and tensor.is_floating_point():
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _runner(self, shapes_key: tuple, priority: Priority, sample: dict[str, Any]):
        key = (shapes_key, priority if self.cuda_graph else None)
        runner = self._runners.get(key)
        if runner is None:
            with self._runners_lock:
                runner = self._runners.get(key)
                if runner is None:
                    if self.cuda_graph:
                        with _CAPTURE_LOCK:
                            runner = _GraphRunner(self, sample, self._streams[priority])
                    else:
                        runner = _EagerRunner(self)
                    self._runners[key] = runner
        return runner

    # -- the Engine protocol --
    def upload(self, array: np.ndarray) -> Any:
        """A copy of `array` that stays on the device (a torch tensor): feed it to every call instead of
        sending it again (per-character tensors)."""
        tensor = torch.from_numpy(np.array(array, dtype=np.float32, copy=True))
        if self.on_gpu:
            tensor = tensor.to(self.device)
            torch.cuda.current_stream(self.device).synchronize()  # usable from any stream once this returns
            self.transfers.add(h2d=tensor.nbytes)
        return tensor

    def run(
        self, feeds: dict[str, Any], priority: Priority = "live", keep_on_device: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Run the model. Inputs may be numpy arrays or tensors already on the device (`upload`, or an
        output kept there); outputs named in `keep_on_device` stay there as torch tensors (in the
        engine's compute dtype), the others come back as float32 numpy arrays."""
        missing = [name for name in self.module.input_names if name not in feeds]
        if missing:
            raise ValueError(f"{self.contract.file}: missing input {', '.join(missing)}")
        h2d = d2h = 0
        inputs: dict[str, Any] = {}
        for name in self.module.input_names:
            value = feeds[name]
            if isinstance(value, torch.Tensor):
                if value.device != self.device:
                    h2d, d2h = (h2d + value.nbytes, d2h) if self.on_gpu else (h2d, d2h + value.nbytes)
            else:
                value = np.ascontiguousarray(value, dtype=_NP_OF_TORCH[self._input_dtypes[name]])
                if self.on_gpu:
                    h2d += value.nbytes
            inputs[name] = value
        shapes_key = tuple(tuple(inputs[name].shape) for name in self.module.input_names)
        stream = self._streams.get(priority)
        with torch.inference_mode(), torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            runner = self._runner(shapes_key, priority, inputs)
            with runner.lock:
                start = time.perf_counter()
                with self.gate.enter(priority):
                    outputs = runner(inputs)  # the only line that runs a model
                    # A CUDA graph's outputs are overwritten by its next replay: kept ones are copied out.
                    result = {
                        name: outputs[name].clone() if runner.static_outputs else outputs[name]
                        for name in self._output_names
                        if name in keep_on_device
                    }
                    if stream is not None:
                        # The call is over when the GPU is done (the gate covers that), and what it keeps
                        # on the device is ready for any other engine's stream.
                        stream.synchronize()
                for name in self._output_names:
                    if name in result:
                        continue
                    tensor = outputs[name]
                    if self.on_gpu:
                        tensor = tensor.contiguous().to("cpu")  # in its own dtype: FP16 halves the bytes
                        d2h += tensor.nbytes
                    result[name] = tensor.to(torch.float32).contiguous().numpy()
                self.call_stats.add((time.perf_counter() - start) * 1e3)
        self.transfers.add(h2d, d2h)
        return result

    def warmup(self) -> None:
        """One call on zeros (on CUDA with cuda_graph on, this captures the live graph)."""
        self.run(
            {
                name: np.zeros(shape, _NP_OF_TORCH[self._input_dtypes[name]])
                for name, shape in self._default_shapes.items()
            }
        )
