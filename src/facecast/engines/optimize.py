"""Graph rewrites that let TensorRT build a model natively, behind `facecast models optimize`.

TensorRT's GridSample takes 4-D input only (NVIDIA has no plans to change that), and LivePortrait's
warping_spade samples two 5-D volumes with it. onnxruntime's TensorRT provider then splits the
graph into several engines with CUDA islands between them, and the popular TensorRT port compiles
a C++ plugin per GPU architecture. Here each 5-D GridSample becomes ops TensorRT builds natively:
the 8 corner indices and weights of trilinear sampling are computed from the grid, the corners are
gathered from the volume laid out as rows of channels (one Gather), and interpolated along x, y,
then z as onnxruntime does. Zero padding is a mask on the weights of corners outside the volume.
(Blending 4-D GridSamples of depth slices was not chosen: the depth coordinate varies per output
point, so it needs every slice sampled, or slices stacked into one tall image, where normalised
coordinates lose up to ~6e-5 px.) The rewritten copy,
`NAME.trt.onnx` next to the original, is held equal to onnxruntime's own GridSample on the CPU
before it is put in place.

Index arithmetic is int32 from the start (a flat index into a 1.4 M-row volume is not representable
in FP16, which TensorRT may pick for float arithmetic in an FP16 build); only the small per-axis
coordinates and weights are floats.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from facecast.engines.contracts import CONTRACTS

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

TRT_SUFFIX = ".trt.onnx"
REWRITE_MARK_KEY = "facecast.trt_rewrite"
# The bar for a rewritten copy: max abs difference of every output to the original with onnxruntime's
# own GridSample, FP32 on the CPU. The rewrite repeats onnxruntime's arithmetic, so on x86 the
# full-size warping_spade replica comes out bit-identical (0.0). The bar is tighter than it looks:
# the replica is so sensitive that a 2-ulp nudge of kp_driving moves its output by 4e-4.
DEFAULT_TOLERANCE = 1e-4
_FLOAT_TYPES = {1: np.float32, 10: np.float16, 11: np.float64}  # onnx TensorProto element types


class RewriteError(ValueError):
    """A node the rewrite cannot replace exactly; the message names the node and what is unsupported."""


@dataclass(frozen=True, slots=True)
class RewriteTarget:
    """A model that needs a rewrite before TensorRT can build it in one piece."""

    file: str  # path under models.dir
    # Spread (standard deviation) of the random inputs of the check, per input: their realistic ranges.
    # Inputs not named here get 1.0.
    input_std: Mapping[str, float] = field(default_factory=dict)


TARGETS: tuple[RewriteTarget, ...] = (
    RewriteTarget(
        CONTRACTS["liveportrait/warping_spade"].file,
        {"feature_3d": 1.0, "kp_driving": 0.1, "kp_source": 0.1},
    ),
)

Status = Literal["written", "missing", "unchanged", "failed"]


@dataclass(frozen=True, slots=True)
class OptimizeResult:
    """What `optimize_models` did with one model."""

    file: str  # path under models.dir
    status: Status  # written; missing (not downloaded); unchanged (nothing to rewrite); failed (see detail)
    source: Path
    written: Path | None = None
    rewritten: tuple[str, ...] = ()  # names of the replaced nodes
    max_abs_diff: float | None = None  # rewritten vs original, on onnxruntime's CPU provider
    seconds: float = 0.0
    detail: str = ""


def trt_copy_path(path: Path) -> Path:
    """Where the rewritten copy of a model lives: `NAME.trt.onnx` next to `NAME.onnx`."""
    return path.with_name(path.name.removesuffix(".onnx") + TRT_SUFFIX)


def trt_ready_path(path: Path) -> Path:
    """The file the TensorRT provider should load: the rewritten copy when it exists and is newer
    than the original (a re-downloaded model makes an old copy stale), else the original."""
    copy = trt_copy_path(path)
    try:
        if copy.stat().st_mtime_ns > path.stat().st_mtime_ns:
            return copy
    except FileNotFoundError:
        pass
    return path


# --- the rewrite -------------------------------------------------------------------------------


def _static_shapes(model) -> dict[str, tuple[tuple[int | None, ...], int]]:
    """(shape, element type) of every tensor shape inference can tell, None for unknown dims.

    Inference runs on a copy that declares the large weights as inputs instead of carrying them:
    the same shapes, in milliseconds instead of seconds and without a second copy of 500 MB.
    """
    import onnx
    from onnx import helper

    graph = model.graph
    declared = {i.name for i in graph.input}
    small, as_inputs = [], []
    for init in graph.initializer:
        if int(np.prod(init.dims)) > 1024 and init.data_type in _FLOAT_TYPES:
            if init.name not in declared:
                as_inputs.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            small.append(init)
    light = helper.make_model(
        helper.make_graph(
            list(graph.node),
            "shapes",
            list(graph.input) + as_inputs,
            list(graph.output),
            small,
            value_info=list(graph.value_info),
        ),
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
    )
    inferred = onnx.shape_inference.infer_shapes(light).graph
    shapes = {}
    for info in (*inferred.input, *inferred.value_info, *inferred.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim)
            shapes[info.name] = (dims, tensor.elem_type)
    for init in graph.initializer:
        shapes[init.name] = (tuple(init.dims), init.data_type)
    return shapes


class _Emitter:
    """Appends nodes and constants, all named under one prefix, in execution order."""

    def __init__(self, prefix: str, dtype: type) -> None:
        self.prefix, self.dtype = prefix, dtype
        self.nodes: list = []
        self.initializers: list = []
        self._count = 0
        self._constants: dict[tuple, str] = {}

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}/{hint}_{self._count}"

    def const(self, hint: str, value, dtype=None) -> str:
        """A constant, shared by every use of the same value."""
        from onnx import numpy_helper

        array = np.asarray(value, dtype=dtype or self.dtype)
        key = (array.dtype.str, array.shape, array.tobytes())
        if key not in self._constants:
            self._constants[key] = name = self._name(hint)
            self.initializers.append(numpy_helper.from_array(array, name))
        return self._constants[key]

    def ints(self, hint: str, value) -> str:
        return self.const(hint, value, np.int64)

    def op(self, op_type: str, *inputs: str, output: str | None = None, **attrs) -> str:
        from onnx import helper

        name = self._name(op_type)
        out = output or name
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out


def _axis_corners(e: _Emitter, coord: str, size: int, align_corners: bool, zero_padding: bool):
    """Both corner indices (int32, clamped into the volume) and weights along one axis.

    The arithmetic is onnxruntime's, operation for operation (denormalise, floor, `high - pos` and
    `pos - low`), so on the CPU the rewrite gives its results to the last bit. With zero padding a
    corner outside [0, size) gets weight 0 (its index is clamped only to keep the Gather in bounds);
    border padding is the clamped index with the unmasked weight, as onnxruntime does it.
    """
    one = e.const("one", 1.0)
    shifted = e.op("Add", coord, one)
    if align_corners:  # [-1, 1] -> [0, size - 1]
        pos = e.op("Mul", e.op("Mul", shifted, e.const("half", 0.5)), e.const("size_minus_1", size - 1))
    else:  # [-1, 1] -> [-0.5, size - 0.5]
        pos = e.op("Mul", e.op("Sub", e.op("Mul", shifted, e.const("size", size)), one), e.const("half", 0.5))
    low = e.op("Floor", pos)
    high = e.op("Add", low, one)
    w_low = e.op("Sub", high, pos)
    w_high = e.op("Sub", pos, low)
    zero, last = e.const("zero", 0.0), e.const("last", size - 1)
    if zero_padding:
        # valid(i) = clip(i + 1, 0, 1) * clip(size - i, 0, 1): 1 for integers in [0, size), else 0.
        sz = e.const("size", size)

        def valid(index: str) -> str:
            return e.op(
                "Mul", e.op("Clip", e.op("Add", index, one), zero, one), e.op("Clip", e.op("Sub", sz, index), zero, one)
            )

        w_low, w_high = e.op("Mul", w_low, valid(low)), e.op("Mul", w_high, valid(high))
    to_int32 = 6  # TensorProto.INT32
    i_low = e.op("Cast", e.op("Clip", low, zero, last), to=to_int32)
    i_high = e.op("Cast", e.op("Clip", high, zero, last), to=to_int32)
    return (i_low, i_high), (w_low, w_high)


def _stack_pair(e: _Emitter, pair: tuple[str, str], shape: list[int]) -> str:
    """[low, high], each [N, P], as one tensor of `shape`: the pair on this axis' slot, 1 elsewhere."""
    axis0 = e.ints("axis0", [0])
    stacked = e.op("Concat", e.op("Unsqueeze", pair[0], axis0), e.op("Unsqueeze", pair[1], axis0), axis=0)
    return e.op("Reshape", stacked, e.ints("shape", shape))


def _emit_trilinear(
    e: _Emitter, volume: str, grid: str, output: str, volume_dims, grid_dims, align_corners: bool, zero_padding: bool
) -> None:
    n, depth, height, width = volume_dims
    _, out_d, out_h, out_w = grid_dims
    points = out_d * out_h * out_w
    grid_rows = e.op("Reshape", grid, e.ints("grid_rows", [n, points, 3]))
    indices, weights = {}, {}
    for name, component, size in (("x", 0, width), ("y", 1, height), ("z", 2, depth)):
        coord = e.op("Gather", grid_rows, e.ints(f"{name}_component", component), axis=2)  # [N, P]
        indices[name], weights[name] = _axis_corners(e, coord, size, align_corners, zero_padding)
    # Corner (z, y, x) is element [z, y, x] of a [2, 2, 2, N, P] index tensor.
    slot = {"z": [2, 1, 1], "y": [1, 2, 1], "x": [1, 1, 2]}
    z, y, x = (_stack_pair(e, indices[a], [*slot[a], n, points]) for a in ("z", "y", "x"))
    flat = e.op(
        "Add",
        e.op(
            "Add",
            e.op("Mul", z, e.const("plane", height * width, np.int32)),
            e.op("Mul", y, e.const("row", width, np.int32)),
        ),
        x,
    )
    flat = e.op("Add", flat, e.const("batch_start", (np.arange(n) * depth * height * width).reshape(n, 1), np.int32))
    # The volume as rows of channels, [N*D*H*W, C] (C may be unknown to shape inference: -1), so one
    # Gather reads each corner's channels contiguously: [2, 2, 2, N, P, C].
    rows = e.op(
        "Reshape", e.op("Transpose", volume, perm=[0, 2, 3, 4, 1]), e.ints("rows", [n * depth * height * width, -1])
    )
    sampled = e.op("Gather", rows, flat, axis=0)
    # Interpolate along x, then y, then z, as onnxruntime nests its lerps (each sum has two terms).
    for name, axis in (("x", 2), ("y", 1), ("z", 0)):
        w = _stack_pair(e, weights[name], [*slot[name], n, points, 1])
        sampled = e.op("ReduceSum", e.op("Mul", sampled, w), e.ints(f"{name}_axis", [axis]), keepdims=1)
    shaped = e.op("Reshape", sampled, e.ints("out", [n, out_d, out_h, out_w, -1]))
    e.op("Transpose", shaped, output=output, perm=[0, 4, 1, 2, 3])


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _check_supported(node, attrs: dict, volume_dims, grid_dims, volume_type: int, grid_type: int) -> None:
    where = f"GridSample node {node.name!r}"
    mode = attrs.get("mode", b"linear").decode()
    padding = attrs.get("padding_mode", b"zeros").decode()
    if mode not in ("linear", "bilinear"):
        raise RewriteError(f"{where}: mode {mode!r} is not supported (only linear, i.e. trilinear)")
    if padding not in ("zeros", "border"):
        raise RewriteError(f"{where}: padding_mode {padding!r} is not supported (zeros or border)")
    unknown = set(attrs) - {"mode", "padding_mode", "align_corners"}
    if unknown:
        raise RewriteError(f"{where}: unknown attributes {sorted(unknown)}")
    if volume_type not in _FLOAT_TYPES or volume_type != grid_type:
        raise RewriteError(f"{where}: input and grid must share one float type (got types {volume_type}, {grid_type})")
    if None in volume_dims or None in grid_dims:
        raise RewriteError(
            f"{where}: needs static shapes, shape inference gave input {volume_dims} (channels may be unknown) "
            f"and grid {grid_dims} (last dim may be unknown)"
        )
    if volume_dims[0] != grid_dims[0]:
        raise RewriteError(f"{where}: input batch {volume_dims[0]} differs from grid batch {grid_dims[0]}")
    n, d, h, w = volume_dims
    if n * d * h * w >= 2**31:
        raise RewriteError(f"{where}: volume too large for int32 indices")


def rewrite_gridsample_5d(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Replace every 5-D GridSample of `model` (an onnx.ModelProto, changed in place and returned:
    warping_spade is 500 MB) by Gather-based trilinear sampling; 4-D ones are left alone.

    Supports mode linear, padding zeros or border, align_corners 0 or 1, float32/16/64; needs the
    batch and spatial sizes static (channels and the grid's last dim may be unknown). Anything
    else raises `RewriteError` naming the node. Returns the model and the replaced nodes' names.
    """
    graph = model.graph
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)

    def is_gridsample(node) -> bool:
        return node.op_type == "GridSample" and node.domain in ("", "ai.onnx")

    if not any(is_gridsample(n) for n in graph.node):
        return model, []
    shapes = _static_shapes(model)
    used = {t for n in graph.node for t in (*n.input, *n.output, n.name)} | {i.name for i in graph.initializer}
    replaced: list[str] = []
    new_nodes, new_initializers = [], []
    for index, node in enumerate(graph.node):
        if not is_gridsample(node):
            new_nodes.append(node)
            continue
        volume_shape, volume_type = shapes.get(node.input[0], (None, 0))
        grid_shape, grid_type = shapes.get(node.input[1], (None, 0))
        # The grid has the input's rank: (N, D, H, W, 3) for an (N, C, D, H, W) input.
        rank = len(volume_shape) if volume_shape is not None else len(grid_shape) if grid_shape is not None else None
        if rank is None:
            raise RewriteError(f"GridSample node {node.name!r}: shape inference cannot tell its input rank")
        if rank != 5:
            new_nodes.append(node)
            continue
        if volume_shape is None or grid_shape is None:  # the rank came from the other one
            unknown = "input" if volume_shape is None else "grid"
            raise RewriteError(f"GridSample node {node.name!r}: shape inference cannot tell its {unknown}'s shape")
        if opset < 13:
            raise RewriteError(f"the model's opset {opset} is older than 13")
        attrs = _attributes(node)
        volume_dims = (volume_shape[0], *volume_shape[2:])  # N, D, H, W (channels are not needed)
        grid_dims = grid_shape[:4]
        _check_supported(node, attrs, volume_dims, grid_dims, volume_type, grid_type)
        name = node.name or f"GridSample_{index}"
        emitter = _Emitter(f"{name}/trilinear", _FLOAT_TYPES[volume_type])
        _emit_trilinear(
            emitter,
            node.input[0],
            node.input[1],
            node.output[0],
            volume_dims,
            grid_dims,
            bool(attrs.get("align_corners", 0)),
            attrs.get("padding_mode", b"zeros") == b"zeros",
        )
        clash = used & ({i.name for i in emitter.initializers} | {n.name for n in emitter.nodes})
        if clash:
            raise RewriteError(
                f"GridSample node {node.name!r}: the names the rewrite needs are taken: {sorted(clash)[:3]}"
            )
        new_nodes += emitter.nodes
        new_initializers += emitter.initializers
        replaced.append(name)
    if replaced:
        del graph.node[:]
        graph.node.extend(new_nodes)
        graph.initializer.extend(new_initializers)
    return model, replaced


# --- optimize the models folder ----------------------------------------------------------------


def random_feeds(session, input_std: Mapping[str, float], seed: int = 0) -> dict[str, np.ndarray]:
    """One random array per input of an onnxruntime session: N(0, std) with std per input name
    (1.0 if unnamed); dynamic dims are 1."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for arg in session.get_inputs():
        if arg.type not in ("tensor(float)", "tensor(float16)", "tensor(double)"):
            raise RewriteError(f"cannot make random values for input {arg.name!r} of type {arg.type}")
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in arg.shape]
        dtype = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}[arg.type]
        feeds[arg.name] = (rng.standard_normal(shape) * input_std.get(arg.name, 1.0)).astype(dtype)
    return feeds


def _cpu_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_abs_difference(
    original: Path, rewritten: Path, input_std: Mapping[str, float] | None = None, threads: int = 0, seed: int = 0
) -> float:
    """Largest absolute difference over every output of two models run on the same random inputs on
    onnxruntime's CPU provider (one session at a time: warping_spade is 500 MB each)."""
    session = _cpu_session(original, threads)
    feeds = random_feeds(session, input_std or {}, seed)
    expected = session.run(None, feeds)
    del session
    got = _cpu_session(rewritten, threads).run(None, feeds)
    worst = 0.0
    for a, b in zip(expected, got, strict=True):
        if a.shape != b.shape:
            raise RewriteError(f"output shapes differ: {a.shape} vs {b.shape}")
        diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0
        worst = max(worst, diff) if not np.isnan(diff) else float("nan")
        if np.isnan(worst):
            break
    return worst


def _mark(model, rewritten: list[str], source: Path) -> None:
    entry = model.metadata_props.add()
    entry.key = REWRITE_MARK_KEY
    entry.value = json.dumps(
        {
            "source": source.name,
            "gridsample_5d": rewritten,
            "note": "5-D GridSample rewritten as Gather-based trilinear sampling for TensorRT",
        }
    )


def optimize_model(
    models_dir: Path, target: RewriteTarget, tolerance: float = DEFAULT_TOLERANCE, threads: int = 0, seed: int = 0
) -> OptimizeResult:
    """Rewrite one model into `NAME.trt.onnx`, put in place (temp file + rename) only when every
    output stays within `tolerance` of the original's on onnxruntime's CPU provider."""
    import onnx

    start = time.perf_counter()
    source = models_dir / target.file

    def result(status: Status, **kw) -> OptimizeResult:
        return OptimizeResult(target.file, status, source, seconds=time.perf_counter() - start, **kw)

    if not source.is_file():
        return result("missing", detail="not downloaded")
    model = onnx.load(str(source))
    try:
        model, rewritten = rewrite_gridsample_5d(model)
    except RewriteError as exc:
        return result("failed", detail=str(exc))
    if not rewritten:
        return result("unchanged", detail="no 5-D GridSample")
    _mark(model, rewritten, source)
    dest = trt_copy_path(source)
    temp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        onnx.save(model, str(temp))
        del model
        try:
            diff = max_abs_difference(source, temp, target.input_std, threads, seed)
        except Exception as exc:  # onnxruntime refusing the copy is a failed rewrite, reported as such
            return result("failed", rewritten=tuple(rewritten), detail=f"checking the rewritten copy failed: {exc}")
        if not diff <= tolerance:  # NaN fails too
            return result(
                "failed",
                rewritten=tuple(rewritten),
                max_abs_diff=diff,
                detail=f"max abs difference {diff:.3g} exceeds {tolerance:g}; nothing written",
            )
        os.replace(temp, dest)
    finally:
        temp.unlink(missing_ok=True)
    log.debug("%s: rewrote %d 5-D GridSample -> %s (max abs diff %.3g)", target.file, len(rewritten), dest, diff)
    return result("written", written=dest, rewritten=tuple(rewritten), max_abs_diff=diff)


def optimize_models(
    models_dir: Path, tolerance: float = DEFAULT_TOLERANCE, threads: int = 0, seed: int = 0
) -> list[OptimizeResult]:
    """Every model that needs a rewrite for TensorRT (today: warping_spade): one result each."""
    return [optimize_model(models_dir, target, tolerance, threads, seed) for target in TARGETS]
