"""How well `animate` (mesh) follows a performer on real videos, judged by a tracker we did not write.

    .venv/bin/python tools/judge_animate.py VIDEO [VIDEO ...] [--set KEY=VALUE ...] [--json OUT]

Each video is driven through facecast's own tracking stage and animate effect exactly as the live
pipeline runs them (the config's smoothing and multipliers, each frame stamped with the video's
time), rendering the bundled character at 1024x1024. Then dlib's 68-point shape predictor (a
different model from MediaPipe, its weights from the face-recognition-models package) reads the
same signals from the driver's frame and from the character's frame:

- eyes: each eye's aspect ratio (mean lid gap / eye width), image-left and image-right
- pitch, yaw: where the nose tip stands against the eye corners, in eye widths, roll taken out
  (points that move with the skull only; not degrees, but they move with the head's angles)
- mouth: inner-lip gap / mouth width

and the Pearson correlation of the two series is reported per video and signal, with the mean
over videos and the correlation pooled over all judged frames (each video centred). For the head's
angles it also tells the two steps apart: `pitch_asked_driver` correlates the nod facecast asked
the character for (tracking and retargeting) with the judge's reading of the performer, and
`pitch_asked_output` the same nod with the judge's reading of the character (rendering); `yaw_*`
likewise.

With `--pose-model whenet.onnx` (tools/whenet_to_onnx.py makes it) the head's angles are also read in
degrees by WHENet, a published head-pose network trained on its own data (`pitch_deg`, `yaw_deg` and
their `*_asked_*` splits): dlib's nose-vs-eyes reading moves when a performer smiles or opens the
mouth, and is noise for a head that barely nods. Frames where dlib finds no face in either image are
left out (counted). Videos of your
own are what this is for: the project's tests use generated faces (no real video is committed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

import cv2
import numpy as np

from facecast.types import Image

DETECT_EVERY = 10
SIGNALS = ("eye_left", "eye_right", "eyes", "pitch", "yaw", "mouth")
# With --pose-model: the head's angles in degrees as WHENet reads them (RigParams' signs).
POSE_SIGNALS = ("pitch_deg", "yaw_deg")
# Each angle signal against the RigParams angle it reads, with the sign that makes them run the same
# way: RigParams' pitch is chin up > 0, the dlib reading's nose down > 0.
ASKED_SIGN = {"pitch": ("pitch", -1.0), "yaw": ("yaw", 1.0), "pitch_deg": ("pitch", 1.0), "yaw_deg": ("yaw", 1.0)}
# The splits: the asked angle against the judge's reading of the driver, and of the output.
ASKED_PAIRS = {f"{k}_asked_{side}": (k, side) for k in ASKED_SIGN for side in ("driver", "output")}

# Head turn and nod from points that move with the skull only: the nose tip against the eye
# corners, in eye widths, with the head's roll taken out. The tip stands out in front of the eyes, so
# it moves sideways as the head turns and up or down as it nods. No 3-D head model: solvePnP with one
# (generic six points with the chin and the mouth corners, or the nose and the eye corners alone) read
# an "O" mouth on a frontal face as 40 degrees of turn, and flipped between mirror solutions on
# near-frontal faces. These are not degrees, but correlations only need them to move with the angles.
_EYE_CORNERS = [36, 39, 42, 45]
_NOSE_TIP = 30


class Judge:
    def __init__(self) -> None:
        import importlib.util

        import dlib

        spec = importlib.util.find_spec("face_recognition_models")  # its weights; its module needs pkg_resources
        if spec is None or spec.origin is None:
            raise SystemExit("the judge needs dlib-bin and face-recognition-models (pip install -e '.[test]')")
        models = Path(spec.origin).parent / "models"
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self._dlib = dlib
        self._boxes: dict = {}

    def reset(self) -> None:
        """Forget the tracked boxes (a new video)."""
        self._boxes.clear()

    def points(self, bgr: np.ndarray, key: str) -> np.ndarray | None:
        """dlib's 68 points on the largest face. The detector runs every DETECT_EVERY frames per `key`
        (and whenever the face was lost); between, its last box follows the points' centre."""
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        box, shifted_by, age = self._boxes.get(key, (None, None, 0))
        if box is not None and age < DETECT_EVERY:
            shape = self.predictor(gray, box)
            p = np.array([(q.x, q.y) for q in shape.parts()], np.float64)
            dx, dy = (p.mean(0) - shifted_by).round().astype(int)
            moved = self._dlib.rectangle(box.left() + dx, box.top() + dy, box.right() + dx, box.bottom() + dy)
            self._boxes[key] = (moved, p.mean(0), age + 1)
            return p
        scale = 1.0
        if max(gray.shape) > 720:  # dlib's HOG detector is slow on large frames; landmarks at full size
            scale = 720 / max(gray.shape)
        small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else gray
        faces = self.detector(small, 1)
        if not faces:
            self._boxes.pop(key, None)
            return None
        f = max(faces, key=lambda r: r.width() * r.height())
        rect = self._dlib.rectangle(
            int(f.left() / scale), int(f.top() / scale), int(f.right() / scale), int(f.bottom() / scale)
        )
        shape = self.predictor(gray, rect)
        p = np.array([(q.x, q.y) for q in shape.parts()], np.float64)
        self._boxes[key] = (rect, p.mean(0), 0)
        return p

    @staticmethod
    def signals(p: np.ndarray) -> dict[str, float]:
        """The judged signals from 68 points (all ratios: no image size needed)."""

        def ear(i: int) -> float:  # points i..i+5: corner, two upper, corner, two lower
            e = p[i : i + 6]
            gaps = np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])
            return float(gaps / (2 * max(float(np.linalg.norm(e[0] - e[3])), 1e-6)))

        eyes = p[_EYE_CORNERS]
        axis = p[45] - p[36]
        eye_width = max(float(np.linalg.norm(axis)), 1e-6)
        c, s_ = axis / eye_width
        nose = p[_NOSE_TIP] - eyes.mean(0)
        across, down = c * nose[0] + s_ * nose[1], -s_ * nose[0] + c * nose[1]  # in the eyes' own frame
        yaw, pitch = across / eye_width, down / eye_width
        gap = np.linalg.norm(p[[61, 62, 63]] - p[[67, 66, 65]], axis=1).mean()
        width_m = max(np.linalg.norm(p[48] - p[54]), 1e-6)
        left, right = ear(36), ear(42)
        return {
            "eye_left": left,
            "eye_right": right,
            "eyes": (left + right) / 2,
            "pitch": float(pitch),
            "yaw": float(yaw),
            "mouth": float(gap / width_m),
        }


class PoseNet:
    """WHENet (tools/whenet_to_onnx.py makes its ONNX file) on onnxruntime: the head's pitch and yaw
    in degrees from a 224x224 crop. The crop is placed by dlib's eye corners and nose tip, points
    that move with the skull only, so an opening mouth or a smile does not move or resize it."""

    MEAN = np.array([0.485, 0.456, 0.406], np.float32)  # WHENet's input normalisation (ImageNet's)
    STD = np.array([0.229, 0.224, 0.225], np.float32)

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        if not path.is_file():
            raise SystemExit(f"--pose-model {path}: no such file (tools/whenet_to_onnx.py makes it)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        names = {o.name for o in self.session.get_outputs()}
        if names != {"yaw_new", "pitch_new", "roll_new"}:
            raise SystemExit(f"--pose-model {path}: outputs {sorted(names)}, not WHENet's yaw_new/pitch_new/roll_new")
        self.input = self.session.get_inputs()[0].name

    @staticmethod
    def crop(bgr: np.ndarray, p: np.ndarray) -> np.ndarray:
        """224x224 RGB around the face: centred a little above the eyes and nose tip, 3.6 eye
        distances wide (about the padded detector box WHENet was trained on)."""
        centre = np.vstack([p[_EYE_CORNERS], p[[_NOSE_TIP]]]).mean(0)
        eyes_apart = float(np.linalg.norm(p[[42, 45]].mean(0) - p[[36, 39]].mean(0)))
        side = 3.6 * max(eyes_apart, 1.0)
        k = 224 / side
        m = np.array([[k, 0, 112 - centre[0] * k], [0, k, 112 - (centre[1] - 0.1 * side) * k]])
        out = cv2.warpAffine(bgr, m, (224, 224), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
        return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)

    @staticmethod
    def degrees(logits: np.ndarray, bins: int) -> np.ndarray:
        """WHENet's angle: the expected bin under the softmax, 3 degrees a bin, centred."""
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob = z / z.sum(axis=1, keepdims=True)
        return (prob * np.arange(bins)).sum(axis=1) * 3 - (180 if bins == 120 else 99)

    def read(self, bgr: np.ndarray, p: np.ndarray) -> dict[str, float]:
        x = (self.crop(bgr, p).astype(np.float32) / 255 - self.MEAN) / self.STD
        names = [o.name for o in self.session.get_outputs()]
        out = dict(zip(names, self.session.run(None, {self.input: x[None].astype(np.float32)}), strict=True))
        pitch = float(self.degrees(out["pitch_new"], 66)[0])  # chin up > 0, as RigParams
        yaw = float(self.degrees(out["yaw_new"], 120)[0])  # WHENet's yaw runs against RigParams'
        return {"pitch_deg": pitch, "yaw_deg": -yaw}


def _pearson(a: list[float], b: list[float]) -> float | None:
    x, y = np.asarray(a), np.asarray(b)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 10 or x.std() < 1e-9 or y.std() < 1e-9:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def pooled(rows: list[dict]) -> dict[str, float | None]:
    """Each signal's correlation over all videos' judged frames, each video's series centred on its
    own median first (so a video with more frames or more motion counts for more, and the videos'
    different resting levels do not). The asked angles' splits (see the module's docstring) too."""
    read = [k for k in (*SIGNALS, *POSE_SIGNALS) if all(k in row["series"]["driver"] for row in rows)]
    pairs = {k: (("driver", k), ("output", k)) for k in read}
    pairs.update({name: (("asked", k), (side, k)) for name, (k, side) in ASKED_PAIRS.items() if k in read})
    result: dict[str, float | None] = {}
    for name, ((sa, ka), (sb, kb)) in pairs.items():
        a: list[float] = []
        b: list[float] = []
        for row in rows:
            x, y = np.asarray(row["series"][sa][ka]), np.asarray(row["series"][sb][kb])
            if len(x) and np.isfinite(x).any():
                a += list(x - np.nanmedian(x))
                b += list(y - np.median(y))
        result[name] = _pearson(a, b)
    return result


# Each judge's reading of the performer and of the character, as `corrected_for_judges` names them.
JUDGE_READINGS = {"dlib": ("dlib_in", "dlib_out"), "whenet": ("net_in", "net_out")}


def corrected_for_judges(rows: list[dict]) -> dict[str, float | None]:
    """With two judges of the head's angles (dlib's points and WHENet), how well facecast follows the
    performer with each judge's own reading errors taken out, for pitch and yaw, pooled as `pooled`.

    Three readings of the performer's angle whose errors are independent (facecast's asked angle, dlib
    and WHENet on the driver's frame): the correlation of each with the true angle is
    sqrt(r_ab * r_ac / r_bc) (the triad estimate of measurement theory). Likewise on the character's
    side. Then the performer's true angle against the character's, from the judges' cross pairs
    (dlib on one side, WHENet on the other, so no judge's habits are shared across the two), each
    divided by the two readings' own correlations with the truth (Spearman's correction for
    attenuation); the mean of the two pairs. These are estimates: a value over 1 is their noise, and
    errors two judges share (both misreading the same faces) make them too high.

    Per judge, its own ceiling: `*_<judge>_reads_performer` and `*_<judge>_reads_character` (its
    readings' correlations with the two true angles) and `*_<judge>_ceiling`, their product: what that
    judge alone would read for a character that followed the performer exactly. No character scores
    above `*_reads_performer` with that judge."""
    result: dict[str, float | None] = {}
    for angle in ("pitch", "yaw"):
        degrees = f"{angle}_deg"
        if not rows or not all(degrees in row["series"]["driver"] for row in rows):
            return result
        sign = ASKED_SIGN[angle][1]  # the dlib reading turned to RigParams' sign, as WHENet's is
        streams: dict[str, list[float]] = {k: [] for k in ("asked", "dlib_in", "dlib_out", "net_in", "net_out")}
        for row in rows:
            s = row["series"]
            parts = {
                "asked": np.asarray(s["asked"][degrees], np.float64),
                "dlib_in": sign * np.asarray(s["driver"][angle], np.float64),
                "dlib_out": sign * np.asarray(s["output"][angle], np.float64),
                "net_in": np.asarray(s["driver"][degrees], np.float64),
                "net_out": np.asarray(s["output"][degrees], np.float64),
            }
            keep = np.logical_and.reduce([np.isfinite(v) for v in parts.values()])
            if keep.sum() < 10:
                continue
            for k, v in parts.items():
                streams[k] += list(v[keep] - np.median(v[keep]))

        def corr(a: str, b: str, streams: dict[str, list[float]] = streams) -> float | None:
            return _pearson(streams[a], streams[b])

        def truth(x: str, y: str, z: str) -> float | None:
            """x's correlation with the true angle, from its agreement with y and z."""
            xy, xz, yz = corr(x, y), corr(x, z), corr(y, z)
            if xy is None or xz is None or yz is None or yz <= 0 or xy * xz < 0:
                return None
            return float(np.sqrt(xy * xz / yz))

        true_in = {"dlib_in": truth("dlib_in", "asked", "net_in"), "net_in": truth("net_in", "asked", "dlib_in")}
        true_out = {"dlib_out": truth("dlib_out", "asked", "net_out"), "net_out": truth("net_out", "asked", "dlib_out")}
        result[f"{angle}_corrected_asked_driver"] = truth("asked", "dlib_in", "net_in")
        result[f"{angle}_corrected_asked_output"] = truth("asked", "dlib_out", "net_out")
        crossed = []
        for a, b in (("dlib_in", "net_out"), ("net_in", "dlib_out")):
            ab, ta, tb = corr(a, b), true_in[a], true_out[b]
            if ab is not None and ta and tb:
                crossed.append(ab / (ta * tb))
        result[f"{angle}_corrected"] = float(np.mean(crossed)) if crossed else None
        # The most each judge alone can read, whatever the character does: its own correlations with the
        # two true angles multiply into every end-to-end figure it gives (a character that followed the
        # performer exactly scores their product), and the first alone bounds it (a character read
        # without error).
        for judge, (j_in, j_out) in JUDGE_READINGS.items():
            ta, tb = true_in[j_in], true_out[j_out]
            result[f"{angle}_{judge}_reads_performer"] = ta
            result[f"{angle}_{judge}_reads_character"] = tb
            result[f"{angle}_{judge}_ceiling"] = ta * tb if ta is not None and tb is not None else None
    return result


def judge_video(
    path: Path, overrides: list[str], judge: Judge, max_frames: int | None, pose: PoseNet | None = None
) -> dict:
    from facecast.assets import bundled_characters_dir
    from facecast.characters.library import CharacterLibrary, CharactersConfig
    from facecast.config import load_config
    from facecast.effects.animate_mesh import AnimateMesh, AnimateMeshConfig
    from facecast.tracking.face_mesh import TrackingStage
    from facecast.types import FramePacket

    judge.reset()
    # Rendered at 1024x1024 (the config's default is 512): the character's face is then about 120 px
    # wide, enough for dlib's landmarks on the eyes (read on a 60 px face they were mostly noise).
    size = ["effect.animate.width=1024", "effect.animate.height=1024"]
    cfg = load_config(None, ["effect.animate.background=original", *size, *overrides])
    animate = cfg.effect.animate
    if not isinstance(animate, AnimateMeshConfig):
        raise SystemExit("the judge drives animate's mesh backend (effect.animate.backend: mesh)")
    library = CharacterLibrary(bundled_characters_dir(), CharactersConfig())
    library.load_all()
    effect = AnimateMesh(animate, library)
    effect.start()
    # The judge reads the character's face from a crop around it, enlarged so the face is about
    # 300 px wide (dlib's detector is tuned for faces of that size).
    rig = effect.rig_for(library.active)
    centre = rig.landmarks[:, :2].mean(0)
    side = 2.2 * float(np.ptp(rig.landmarks[:, :2], axis=0).max())
    x0, y0 = (np.maximum(centre - side / 2, 0)).astype(int)
    x1, y1 = int(min(x0 + side, rig.width)), int(min(y0 + side, rig.height))
    zoom = 660 / side
    tracking = TrackingStage(cfg.tracking)  # the live stage: tracking.max_fps applies as it does live
    tracking.start()
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    signals = (*SIGNALS, *POSE_SIGNALS) if pose is not None else SIGNALS
    driver: dict[str, list[float]] = {k: [] for k in signals}
    output: dict[str, list[float]] = {k: [] for k in signals}
    asked: dict[str, list[float]] = {k: [] for k in ASKED_SIGN if k in signals}
    frames = missed = 0
    try:
        while max_frames is None or frames < max_frames:
            ok, read = cap.read()
            if not ok:
                break
            frame = cast(Image, read)
            t_ns = int(frames / fps * 1e9)
            frames += 1
            packet = tracking.process(FramePacket(seq=frames, t_capture_ns=t_ns, image=frame))
            out = effect.apply(packet)
            if frames <= animate.calibration_frames:
                continue  # the neutral pose is being taken
            crop = cv2.resize(out[y0:y1, x0:x1, :3], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
            p_in, p_out = judge.points(frame, "driver"), judge.points(crop, "output")
            if p_in is None or p_out is None:
                missed += 1
                continue
            s_in = judge.signals(p_in)
            s_out = judge.signals(p_out)
            if pose is not None:
                s_in.update(pose.read(frame, p_in))
                s_out.update(pose.read(crop, p_out))
            for k in signals:
                driver[k].append(s_in[k])
                output[k].append(s_out[k])
            params = effect.last_params
            for k in asked:
                attribute, sign = ASKED_SIGN[k]
                asked[k].append(sign * getattr(params, attribute) if params is not None else float("nan"))
    finally:
        cap.release()
        tracking.close()
    series = {"driver": driver, "output": output, "asked": asked}
    result: dict[str, Any] = {"video": path.name, "frames": frames, "judged": len(driver["eyes"]), "missed": missed}
    result["series"] = series
    for k in signals:
        result[k] = _pearson(driver[k], output[k])
        result[f"{k}_driver_sd"] = float(np.nanstd(driver[k])) if driver[k] else None
    for split, (angle, reading) in ASKED_PAIRS.items():
        if angle in asked:
            result[split] = _pearson(asked[angle], series[reading][angle])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("videos", nargs="+", type=Path)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, as facecast run")
    ap.add_argument("--frames", type=int, default=None, help="at most this many frames of each video")
    ap.add_argument("--json", type=Path, default=None, help="write the per-video results here")
    ap.add_argument("--series", action="store_true", help="keep each frame's readings in the JSON")
    ap.add_argument(
        "--pose-model",
        type=Path,
        default=None,
        help="WHENet as ONNX (tools/whenet_to_onnx.py): also judge the head's angles in degrees",
    )
    args = ap.parse_args(argv)
    judge = Judge()
    pose = PoseNet(args.pose_model) if args.pose_model is not None else None
    signals = (*SIGNALS, *POSE_SIGNALS) if pose is not None else SIGNALS
    rows = []
    for path in args.videos:
        row = judge_video(path, args.set, judge, args.frames, pose)
        rows.append(row)
        keys = [*signals, *(k for k in ASKED_PAIRS if k in row)]
        cells = " ".join(f"{k}={row[k]:.3f}" if row[k] is not None else f"{k}=-" for k in keys)
        print(f"{row['video']:>12} frames={row['frames']:4d} judged={row['judged']:4d} {cells}", flush=True)
    summary: dict[str, float | None] = {}
    for k in signals:
        vals = [r[k] for r in rows if r[k] is not None]
        summary[k] = float(np.mean(vals)) if vals else None
    pool = pooled(rows)
    if pose is not None:
        pool.update(corrected_for_judges(rows))

    def line(values: dict[str, float | None]) -> str:
        return " ".join(f"{k}={v:.3f}" if v is not None else f"{k}=-" for k, v in values.items())

    print("mean over videos: " + line(summary))
    print(f"pooled ({sum(r['judged'] for r in rows)} frames): " + line(pool))
    if not args.series:
        for row in rows:
            row.pop("series")
    if args.json:
        report = {"videos": rows, "mean": summary, "pooled": pool, "overrides": args.set}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
