"""The input/output contract of every model facecast runs, checked when a model is loaded.

Names, shapes and dtypes are exactly those of the files users download, so a real model loads
without renaming anything, and a wrong file is refused with the tensor that does not match.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Precision = Literal["fp16", "fp32"]


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    shape: tuple[int | None, ...]  # None = any size (dynamic batch)
    dtype: str = "float32"


@dataclass(frozen=True, slots=True)
class ModelContract:
    key: str  # e.g. "liveportrait/motion_extractor"
    file: str  # path under models.dir, as users get it from the hub
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    # The motion extractor overflows in FP16: it always runs in FP32 even when the rest is FP16.
    precision: Precision = "fp16"


class ContractError(ValueError):
    """A model file does not have the tensors facecast needs; the message names the tensor."""


def _lp(name: str, inputs, outputs, precision: Precision = "fp16") -> ModelContract:
    return ModelContract(
        f"liveportrait/{name}", f"liveportrait_onnx/{name}.onnx", tuple(inputs), tuple(outputs), precision
    )


T = TensorSpec
CONTRACTS: dict[str, ModelContract] = {
    c.key: c
    for c in (
        _lp("appearance_feature_extractor", [T("img", (1, 3, 256, 256))], [T("output", (1, 32, 16, 64, 64))]),
        _lp(
            "motion_extractor",
            [T("img", (1, 3, 256, 256))],
            [
                T("pitch", (1, 66)),
                T("yaw", (1, 66)),
                T("roll", (1, 66)),
                T("t", (1, 3)),
                T("exp", (1, 63)),
                T("scale", (1, 1)),
                T("kp", (1, 63)),
            ],
            precision="fp32",
        ),
        _lp(
            "warping_spade",
            [T("feature_3d", (1, 32, 16, 64, 64)), T("kp_driving", (1, 21, 3)), T("kp_source", (1, 21, 3))],
            [T("out", (1, 3, 512, 512))],
        ),
        _lp("stitching", [T("input", (1, 126))], [T("output", (1, 65))]),
        _lp("stitching_eye", [T("input", (1, 66))], [T("output", (1, 63))]),
        _lp("stitching_lip", [T("input", (1, 65))], [T("output", (1, 63))]),
        ModelContract(
            "inswapper_128",
            "inswapper_128.onnx",
            (T("target", (1, 3, 128, 128)), T("source", (1, 512))),
            (T("output", (1, 3, 128, 128)),),
        ),
        ModelContract("w600k_r50", "w600k_r50.onnx", (T("input.1", (None, 3, 112, 112)),), (T("683", (None, 512)),)),
        # A RIFE-style frame interpolator exported by the user: two RGB frames in 0..1 stacked on the
        # channels (sides multiples of 32) -> the frame midway (facecast.postprocess.interpolate).
        ModelContract(
            "interpolation/rife",
            "interpolation/rife.onnx",
            (T("img", (1, 6, None, None)),),
            (T("output", (1, 3, None, None)),),
            precision="fp32",
        ),
        # Face enhancers (restoration after a swap): RGB in [-1, 1] in and out. They stay FP32: GFPGAN
        # built in FP16 returns a solid colour (GFPGAN issue #483).
        ModelContract(
            "gfpgan_1.4", "gfpgan_1.4.onnx", (T("input", (1, 3, 512, 512)),), (T("output", (1, 3, 512, 512)),), "fp32"
        ),
        ModelContract(
            "codeformer",
            "codeformer.onnx",
            (T("x", (1, 3, 512, 512)), T("w", (1,), "float64")),  # w: the fidelity weight
            (T("y", (1, 3, 512, 512)),),
            "fp32",
        ),
        ModelContract(
            "gpen_bfr_256",
            "gpen_bfr_256.onnx",
            (T("input", (1, 3, 256, 256)),),
            (T("output", (1, 3, 256, 256)),),
            "fp32",
        ),
        ModelContract(
            "gpen_bfr_512",
            "gpen_bfr_512.onnx",
            (T("input", (1, 3, 512, 512)),),
            (T("output", (1, 3, 512, 512)),),
            "fp32",
        ),
        ModelContract(
            "restoreformer_pp",
            "restoreformer_plus_plus.onnx",
            (T("input", (1, 3, 512, 512)),),
            (T("output", (1, 3, 512, 512)),),
            "fp32",
        ),
    )
}

_ORT_DTYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(double)": "float64",
}


def _dims(shape) -> tuple[int | None, ...]:
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def check_contract(contract: ModelContract, inputs, outputs) -> None:
    """Compare a session's inputs/outputs (onnxruntime NodeArg lists) with the contract."""
    for kind, specs, args in (("input", contract.inputs, inputs), ("output", contract.outputs, outputs)):
        found = {a.name: a for a in args}
        for spec in specs:
            arg = found.get(spec.name)
            if arg is None:
                raise ContractError(
                    f"{contract.file}: no {kind} tensor named {spec.name!r} "
                    f"(the model has {', '.join(found) or 'none'}); "
                    "is this the right file?"
                )
            got = _dims(arg.shape)
            if len(got) != len(spec.shape) or any(
                want is not None and have is not None and want != have
                for want, have in zip(spec.shape, got, strict=False)
            ):
                raise ContractError(
                    f"{contract.file}: {kind} {spec.name!r} has shape {list(arg.shape)}, expected {list(spec.shape)}"
                )
            dtype = _ORT_DTYPES.get(arg.type, arg.type)
            if dtype not in (spec.dtype, "float16"):  # FP16 exports of the same model are accepted
                raise ContractError(f"{contract.file}: {kind} {spec.name!r} is {arg.type}, expected {spec.dtype}")
