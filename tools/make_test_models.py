#!/usr/bin/env python3
"""Generate small ONNX **test fixtures** with exactly the real models' contracts.

They have the tensor names, shapes, dtypes and opset of the LivePortrait, inswapper and ArcFace
files users download (the warping model really contains a 5-D GridSample), and their outputs depend
on their inputs, so the effects can be run end to end on a machine without the weights. They are
random little networks: they animate nothing and swap no identity. Tests only; never models.

    python tools/make_test_models.py OUT_DIR [--nan-swapper] [--rename MODEL:OLD:NEW]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 20  # GridSample on 5-D inputs needs opset 20
F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, initializers, name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="facecast-test-fixture"
    )
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def _init(rng: np.random.Generator, name: str, shape, scale: float = 0.05) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def appearance(rng) -> onnx.ModelProto:
    nodes = [
        helper.make_node("AveragePool", ["img"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),  # 64x64
        helper.make_node("Conv", ["pooled", "w"], ["feat"]),  # 3 -> 512 channels
        helper.make_node("Reshape", ["feat", "shape"], ["output"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("img", F, [1, 3, 256, 256])],
        [helper.make_tensor_value_info("output", F, [1, 32, 16, 64, 64])],
        [_init(rng, "w", [512, 3, 1, 1], 1.0), _const("shape", np.array([1, 32, 16, 64, 64], np.int64))],
        "appearance",
    )


MOTION_OUTPUTS = [("pitch", 66), ("yaw", 66), ("roll", 66), ("t", 3), ("exp", 63), ("scale", 1), ("kp", 63)]


def motion(rng) -> onnx.ModelProto:
    total = sum(n for _, n in MOTION_OUTPUTS)
    nodes = [
        helper.make_node("AveragePool", ["img"], ["pooled"], kernel_shape=[16, 16], strides=[16, 16]),  # 16x16
        helper.make_node("Flatten", ["pooled"], ["flat"]),  # [1, 768]
        helper.make_node("Gemm", ["flat", "w", "b"], ["all"]),
        helper.make_node("Split", ["all", "sizes"], [f"raw_{n}" for n, _ in MOTION_OUTPUTS], axis=1),
    ]
    for name, _ in MOTION_OUTPUTS:
        if name == "scale":  # keep the scale positive, as a real one is
            nodes += [
                helper.make_node("Sigmoid", ["raw_scale"], ["sig_scale"]),
                helper.make_node("Add", ["sig_scale", "half"], ["scale"]),
            ]
        else:
            nodes.append(helper.make_node("Identity", [f"raw_{name}"], [name]))
    return _model(
        nodes,
        [helper.make_tensor_value_info("img", F, [1, 3, 256, 256])],
        [helper.make_tensor_value_info(n, F, [1, k]) for n, k in MOTION_OUTPUTS],
        [
            _init(rng, "w", [768, total], 0.5),
            _init(rng, "b", [total], 0.1),
            _const("sizes", np.array([k for _, k in MOTION_OUTPUTS], np.int64)),
            _const("half", np.float32(0.5)),
        ],
        "motion",
    )


def warping(rng) -> onnx.ModelProto:
    # Identity sampling grid over the 16x64x64 volume, shifted by the mean keypoint motion.
    z, y, x = np.meshgrid(np.linspace(-1, 1, 16), np.linspace(-1, 1, 64), np.linspace(-1, 1, 64), indexing="ij")
    grid = np.stack([x, y, z], axis=-1)[None].astype(np.float32)  # [1,16,64,64,3]
    nodes = [
        helper.make_node("Sub", ["kp_driving", "kp_source"], ["motion"]),
        helper.make_node("ReduceMean", ["motion", "axis1"], ["mean_motion"], keepdims=1),  # [1,1,3]
        helper.make_node("Reshape", ["mean_motion", "grid_shape"], ["shift"]),  # [1,1,1,1,3]
        helper.make_node("Add", ["base_grid", "shift"], ["grid"]),
        helper.make_node(
            "GridSample", ["feature_3d", "grid"], ["warped"], mode="linear", padding_mode="zeros", align_corners=0
        ),  # the 5-D GridSample the real model has
        helper.make_node("ReduceMean", ["warped", "axis2"], ["flat"], keepdims=0),  # [1,32,64,64]
        helper.make_node("Conv", ["flat", "w"], ["rgb64"]),
        helper.make_node("Resize", ["rgb64", "", "scales"], ["rgb512"], mode="linear"),
        helper.make_node("Sigmoid", ["rgb512"], ["out"]),
    ]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("feature_3d", F, [1, 32, 16, 64, 64]),
            helper.make_tensor_value_info("kp_driving", F, [1, 21, 3]),
            helper.make_tensor_value_info("kp_source", F, [1, 21, 3]),
        ],
        [helper.make_tensor_value_info("out", F, [1, 3, 512, 512])],
        [
            numpy_helper.from_array(grid, "base_grid"),
            _const("axis1", np.array([1], np.int64)),
            _const("axis2", np.array([2], np.int64)),
            _const("grid_shape", np.array([1, 1, 1, 1, 3], np.int64)),
            _init(rng, "w", [3, 32, 1, 1], 0.5),
            _const("scales", np.array([1, 1, 8, 8], np.float32)),
        ],
        "warping_spade",
    )


def mlp(rng, n_in: int, n_out: int, name: str) -> onnx.ModelProto:
    return _model(
        [helper.make_node("Gemm", ["input", "w", "b"], ["output"])],
        [helper.make_tensor_value_info("input", F, [1, n_in])],
        [helper.make_tensor_value_info("output", F, [1, n_out])],
        [_init(rng, "w", [n_in, n_out], 0.01), _init(rng, "b", [n_out], 0.001)],
        name,
    )


def inswapper(rng, nan: bool = False) -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["target", "w_target"], ["t_feat"]),  # [1,3,128,128]
        helper.make_node("Gemm", ["source", "w_source"], ["s_feat"]),  # [1,3]
        helper.make_node("Reshape", ["s_feat", "s_shape"], ["s_bias"]),  # [1,3,1,1]
        helper.make_node("Add", ["t_feat", "s_bias"], ["mixed"]),
        helper.make_node("Sigmoid", ["mixed"], ["sig"]),
        helper.make_node("Mul", ["sig", "gain"], ["output"]),
    ]
    inits = [
        numpy_helper.from_array((np.eye(3, dtype=np.float32) * 4.0).reshape(3, 3, 1, 1), "w_target"),
        _init(rng, "w_source", [512, 3], 0.5),
        _const("s_shape", np.array([1, 3, 1, 1], np.int64)),
        _const("gain", np.float32(np.nan if nan else 1.0)),
        # The identity projection, stored like the real file: the graph's last initializer.
        numpy_helper.from_array((np.eye(512) + rng.standard_normal((512, 512)) * 0.01).astype(np.float32), "emap"),
    ]
    return _model(
        nodes,
        [
            helper.make_tensor_value_info("target", F, [1, 3, 128, 128]),
            helper.make_tensor_value_info("source", F, [1, 512]),
        ],
        [helper.make_tensor_value_info("output", F, [1, 3, 128, 128])],
        inits,
        "inswapper",
    )


def arcface(rng) -> onnx.ModelProto:
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),  # 14x14
        helper.make_node("Flatten", ["pooled"], ["flat"]),  # [N, 588]
        helper.make_node("MatMul", ["flat", "w"], ["683"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("input.1", F, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("683", F, ["batch", 512])],
        [_init(rng, "w", [588, 512], 0.2)],
        "arcface",
    )


def interpolator() -> onnx.ModelProto:
    """Contract of interpolation/rife: the mean of the two stacked frames (a fixture, not RIFE)."""
    nodes = [
        helper.make_node("Split", ["img"], ["a", "b"], axis=1, num_outputs=2),
        helper.make_node("Add", ["a", "b"], ["sum"]),
        helper.make_node("Mul", ["sum", "half"], ["output"]),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("img", F, [1, 6, "h", "w"])],
        [helper.make_tensor_value_info("output", F, [1, 3, "h", "w"])],
        [_const("half", np.array(0.5, np.float32))],
        "interpolator",
    )


def enhancer(size: int, image_input: str = "input", output: str = "output", fidelity: str | None = None, flat=False):
    """Contract of a face enhancer (GFPGAN, GPEN, RestoreFormer++; CodeFormer with `fidelity`): RGB in
    [-1, 1] in and out. The fixture sharpens (a strong 5x5 unsharp kernel per channel), and
    CodeFormer's fidelity weight w mixes it with the input (w = 1: the input). `flat`: a solid colour
    out (the GFPGAN FP16 failure). A fixture, not a restoration model."""
    kernel = -np.full((5, 5), 4.0 / 24, np.float32)
    kernel[2, 2] = 5.0  # 1 + 4 x (the pixel minus its neighbours' mean): sums to 1
    weights = np.stack([kernel[None]] * 3).astype(np.float32)  # [3,1,5,5], depthwise
    nodes = [helper.make_node("Conv", [image_input, "k"], ["sharp"], group=3, pads=[2, 2, 2, 2])]
    inits = [numpy_helper.from_array(weights, "k"), _const("lo", np.float32(-1)), _const("hi", np.float32(1))]
    inputs = [helper.make_tensor_value_info(image_input, F, [1, 3, size, size])]
    result = "sharp"
    if fidelity is not None:
        nodes += [
            helper.make_node("Cast", [fidelity], ["w32"], to=F),
            helper.make_node("Sub", ["one", "w32"], ["keep"]),
            helper.make_node("Sub", ["sharp", image_input], ["detail"]),
            helper.make_node("Mul", ["detail", "keep"], ["kept"]),
            helper.make_node("Add", [image_input, "kept"], ["mixed"]),
        ]
        inits.append(_const("one", np.float32(1)))
        inputs.append(helper.make_tensor_value_info(fidelity, TensorProto.DOUBLE, [1]))
        result = "mixed"
    if flat:
        nodes.append(helper.make_node("Mul", [result, "zero"], ["flat"]))
        inits.append(_const("zero", np.float32(0)))
        result = "flat"
    nodes.append(helper.make_node("Clip", [result, "lo", "hi"], [output]))
    return _model(
        nodes, inputs, [helper.make_tensor_value_info(output, F, [1, 3, size, size])], inits, f"enhancer{size}"
    )


ENHANCER_FIXTURES = {
    "gfpgan_1.4.onnx": lambda: enhancer(512),
    "codeformer.onnx": lambda: enhancer(512, "x", "y", fidelity="w"),
    "gpen_bfr_256.onnx": lambda: enhancer(256),
    "gpen_bfr_512.onnx": lambda: enhancer(512),
    "restoreformer_plus_plus.onnx": lambda: enhancer(512),
}


def make_models(out_dir: Path, nan_swapper: bool = False, rename: tuple[str, str, str] | None = None) -> Path:
    """Write every fixture under out_dir in the hub's layout; returns out_dir."""
    rng = np.random.default_rng(1234)
    files = {
        "liveportrait_onnx/appearance_feature_extractor.onnx": appearance(rng),
        "liveportrait_onnx/motion_extractor.onnx": motion(rng),
        "liveportrait_onnx/warping_spade.onnx": warping(rng),
        "liveportrait_onnx/stitching.onnx": mlp(rng, 126, 65, "stitching"),
        "liveportrait_onnx/stitching_eye.onnx": mlp(rng, 66, 63, "stitching_eye"),
        "liveportrait_onnx/stitching_lip.onnx": mlp(rng, 65, 63, "stitching_lip"),
        "inswapper_128.onnx": inswapper(rng, nan=nan_swapper),
        "w600k_r50.onnx": arcface(rng),
        **{path: build() for path, build in ENHANCER_FIXTURES.items()},
        "interpolation/rife.onnx": interpolator(),
    }
    if rename is not None:
        target, old, new = rename
        model = files[target]
        for value_info in (*model.graph.input, *model.graph.output):
            if value_info.name == old:
                value_info.name = new
        for node in model.graph.node:
            node.input[:] = [new if n == old else n for n in node.input]
            node.output[:] = [new if n == old else n for n in node.output]
    for relative, model in files.items():
        path = Path(out_dir) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(path))
    return Path(out_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--nan-swapper", action="store_true", help="an inswapper fixture that returns NaN")
    parser.add_argument("--rename", metavar="FILE:OLD:NEW", help="rename one tensor (to test the contract check)")
    args = parser.parse_args()
    rename: tuple[str, str, str] | None = None
    if args.rename:
        parts = args.rename.split(":")
        if len(parts) != 3:
            parser.error("--rename takes FILE:OLD:NEW")
        rename = (parts[0], parts[1], parts[2])
    make_models(args.out_dir, args.nan_swapper, rename)
    print(f"test fixtures written to {args.out_dir} (not models: random weights, real contracts)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
