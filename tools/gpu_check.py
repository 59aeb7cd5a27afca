#!/usr/bin/env python3
"""One prepared measurement of the neural engines on a GPU machine, engine-level (no camera, no MediaPipe).

    tools/gpu_check.sh [--frames N] [--json FILE] [--dry-run]

It builds the full-size replicas (or reuses the cached ones), then for each engine variant (the torch
engine on CUDA in FP16 with and without CUDA graphs and in FP32; onnxruntime's CUDA and TensorRT
providers where they are installed) loads the eight models and runs the per-frame model chains:

  animate/liveportrait  motion extractor -> motion maths -> stitching -> warping_spade, with the
                        character's appearance volume and keypoints resident on the device
  swap/inswapper        inswapper on the target crop, with the character's identity latent resident

Printed: per-model call ms (p50/p95), frame ms (p50/p95), fps, host<->device bytes per frame, each
model's largest difference to onnxruntime's CPU output, and the live chain's fps while a batch
thread shares the engines (stream priorities + the gate). Then the same as one JSON line, also
written to --json (default $OUT/gpu_check.json when $OUT is set).

--dry-run (or FACECAST_GPU_CHECK_DRY=1) runs the same code on the CPU with the small test fixtures and
a few frames, so the test suite keeps it working (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import platform
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from facecast.engines.base import Engine

REPO = Path(__file__).resolve().parents[1]
LIVEPORTRAIT = [
    "liveportrait/appearance_feature_extractor",
    "liveportrait/motion_extractor",
    "liveportrait/warping_spade",
    "liveportrait/stitching",
    "liveportrait/stitching_eye",
    "liveportrait/stitching_lip",
]
SWAP = ["w600k_r50", "inswapper_128"]


def preflight() -> None:
    """Say at once what is missing, in the words of the fix (the machine has no network)."""
    missing = []
    for module, wheel in (
        ("numpy", "numpy"),
        ("onnx", "onnx"),
        ("torch", "torch"),
        ("onnxruntime", "onnxruntime"),
        ("cv2", "opencv-python-headless"),
        ("pydantic", "pydantic (+ pydantic_core, annotated_types, typing_inspection, typing_extensions)"),
    ):
        if importlib.util.find_spec(module) is None:
            missing.append(wheel)
    if missing:
        sys.exit(
            f"gpu_check: missing Python packages: {', '.join(missing)}. Put their wheels in tools/wheels/ "
            "(tools/gpu_check.sh installs them) or install them."
        )


@dataclass
class Variant:
    name: str
    engine: str  # "torch" or "onnxruntime"
    config: dict[str, Any]
    note: str = ""


@dataclass
class Loaded:
    """The eight engines of one variant."""

    engines: dict[str, Any]
    load_s: float
    providers: dict[str, list[str]] = field(default_factory=dict)


def environment() -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "onnxruntime": ort.__version__,
        "ort_providers": ort.get_available_providers(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
        )
    try:
        import tensorrt

        env["tensorrt"] = tensorrt.__version__
    except ImportError:
        env["tensorrt"] = None
    return env


def variants(env: dict[str, Any], dry: bool) -> list[Variant]:
    if dry:  # the CPU: the torch engine through its knowing fallback, and onnxruntime's CPU provider
        return [
            Variant("torch-cpu", "torch", {"device": "torch", "allow_cpu_fallback": True}),
            Variant("ort-cpu", "onnxruntime", {"device": "cpu"}),
        ]
    out = [
        Variant("torch-fp16-graph", "torch", {"device": "torch", "cuda_graph": True}),
        Variant("torch-fp16", "torch", {"device": "torch"}),
        Variant("torch-fp32", "torch", {"device": "torch", "fp16": False}),
    ]
    if "CUDAExecutionProvider" in env["ort_providers"]:
        out.append(Variant("ort-cuda", "onnxruntime", {"device": "cuda"}))
    if "TensorrtExecutionProvider" in env["ort_providers"]:
        out.append(
            Variant(
                "ort-tensorrt",
                "onnxruntime",
                {"device": "tensorrt"},
                note="first load builds TensorRT engines (minutes)",
            )
        )
    return out


def models_folder(dry: bool, scratch: Path) -> tuple[Path, dict[str, Any]]:
    start = time.perf_counter()
    if dry:
        path = REPO / "tools" / "make_test_models.py"
        spec = importlib.util.spec_from_file_location("make_test_models", path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load {path} as a module")
        fixtures = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fixtures)
        folder = fixtures.make_models(scratch / "fixtures")
        kind = "test fixtures (small random graphs with the real contracts)"
    else:
        from facecast.models.replicas import ensure_replicas

        folder = ensure_replicas(log=lambda line: print(f"  {line}", flush=True))
        kind = "full-size replicas (real architectures, random weights)"
    return folder, {"dir": str(folder), "kind": kind, "ready_s": round(time.perf_counter() - start, 1)}


def load(variant: Variant, folder: Path) -> Loaded:
    from facecast.engines.contracts import CONTRACTS
    from facecast.engines.gate import PriorityGate
    from facecast.engines.onnxruntime import EngineConfig, OnnxEngine

    cfg = EngineConfig(**variant.config)
    engine_class: Callable[..., Engine]
    if variant.engine == "torch":
        from facecast.engines.torch_engine import TorchEngine

        engine_class = TorchEngine
    else:
        engine_class = OnnxEngine
    gate = PriorityGate()  # one per variant, shared by its engines, as the daemon's pool does
    start = time.perf_counter()
    engines = {}
    for key in LIVEPORTRAIT + SWAP:
        contract = CONTRACTS[key]
        engines[key] = engine_class(contract, folder / contract.file, cfg, gate)
        engines[key].warmup()
    return Loaded(engines, time.perf_counter() - start, {k: e.providers for k, e in engines.items()})


# -- the per-frame chains -------------------------------------------------------------------------


class AnimateChain:
    """LivePortrait's per-frame model calls, with its own motion maths (facecast.neural.liveportrait)."""

    name = "animate/liveportrait"
    keys = ("liveportrait/motion_extractor", "liveportrait/stitching", "liveportrait/warping_spade")

    def __init__(self, engines: dict[str, Any], frames: list[np.ndarray], character: np.ndarray) -> None:
        from facecast.neural import liveportrait as lp

        self.lp, self.engines, self.frames = lp, engines, frames
        # Once per character: the appearance volume and the source keypoints stay on the device.
        self.feature = engines["liveportrait/appearance_feature_extractor"].run(
            {"img": character}, keep_on_device=("output",)
        )["output"]
        self.source = lp.motion_from_outputs(engines["liveportrait/motion_extractor"].run({"img": character}))
        self.x_s = lp.keypoints(self.source)
        self.kp_source = engines["liveportrait/warping_spade"].upload(self.x_s[None].astype(np.float32))
        self.neutral = lp.motion_from_outputs(engines["liveportrait/motion_extractor"].run({"img": frames[0]}))
        self.index = 0

    def frame(self, priority: str = "live") -> np.ndarray:
        lp, e = self.lp, self.engines
        img = self.frames[self.index % len(self.frames)]
        self.index += 1
        driving = lp.motion_from_outputs(e["liveportrait/motion_extractor"].run({"img": img}, priority))
        x_d = lp.relative_keypoints(self.source, driving, self.neutral)
        feed = np.concatenate([self.x_s.reshape(-1), x_d.reshape(-1)])[None].astype(np.float32)
        delta = e["liveportrait/stitching"].run({"input": feed}, priority)["output"].reshape(-1)
        x_d = x_d + delta[:63].reshape(21, 3)
        x_d[:, :2] += delta[63:65]
        out = e["liveportrait/warping_spade"].run(
            {"feature_3d": self.feature, "kp_driving": x_d[None].astype(np.float32), "kp_source": self.kp_source},
            priority,
        )["out"]
        return lp.postprocess_image(out)


class SwapChain:
    """inswapper per frame, with the character's identity latent (ArcFace + emap) resident."""

    name = "swap/inswapper"
    keys = ("inswapper_128",)

    def __init__(
        self, engines: dict[str, Any], targets: list[np.ndarray], face112: np.ndarray, emap: np.ndarray
    ) -> None:
        from facecast.neural import faceswap as fs

        self.fs, self.engines, self.targets = fs, engines, targets
        embedding = engines["w600k_r50"].run({"input.1": face112})["683"]
        self.latent = engines["inswapper_128"].upload(fs.source_latent(embedding, emap))
        self.index = 0

    def frame(self, priority: str = "live") -> np.ndarray:
        target = self.targets[self.index % len(self.targets)]
        self.index += 1
        out = self.engines["inswapper_128"].run({"target": target, "source": self.latent}, priority)["output"]
        self.fs.output_is_valid(out)
        from facecast.neural.liveportrait import postprocess_image

        return postprocess_image(out)


def inputs(folder: Path) -> dict[str, Any]:
    """Deterministic crops: a smooth 'face' image moving a little from frame to frame."""
    from facecast.neural.faceswap import read_emap

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:256, 0:256] / 255.0
    base = np.stack([0.6 + 0.3 * np.sin(3 * xx), 0.5 + 0.2 * np.cos(4 * yy), 0.4 + 0.2 * xx * yy])
    frames = []
    for i in range(8):
        shifted = np.roll(base, shift=(i - 4) * 3, axis=2) + rng.normal(0, 0.02, base.shape)
        frames.append(np.clip(shifted, 0, 1)[None].astype(np.float32))
    targets = [f[:, :, ::2, ::2].copy() for f in frames]  # 128x128 in 0..1, as prepare_target gives
    face112 = ((base[:, 72:184, 72:184] * 2 - 1)[None]).astype(np.float32)
    return {
        "character": frames[0],
        "frames": frames[1:],
        "targets": targets,
        "face112": face112,
        "emap": read_emap(folder / "inswapper_128.onnx"),
    }


def _stats(samples: np.ndarray) -> dict[str, float]:
    if samples.size == 0:
        return {"p50": float("nan"), "p95": float("nan")}
    return {"p50": round(float(np.percentile(samples, 50)), 3), "p95": round(float(np.percentile(samples, 95)), 3)}


def live_frame(engines: dict[str, Any]):
    """What the effect stage wraps one live frame in (the gate then keeps batch calls out of the
    frame's gaps), where this facecast's gate has it."""
    gate = next(iter(engines.values())).gate
    return gate.live_frame() if hasattr(gate, "live_frame") else contextlib.nullcontext()


def measure(chain, engines: dict[str, Any], frames: int, warmup: int) -> dict[str, Any]:
    for _ in range(warmup):
        chain.frame()
    for engine in engines.values():
        engine.call_stats.reset()
        engine.transfers.reset()
    times = np.empty(frames)
    for i in range(frames):
        start = time.perf_counter()
        with live_frame(engines):
            chain.frame()
        times[i] = (time.perf_counter() - start) * 1e3
    h2d = sum(e.transfers.h2d_bytes for e in engines.values())
    d2h = sum(e.transfers.d2h_bytes for e in engines.values())
    return {
        "frame_ms": _stats(times),
        "fps": round(1000.0 / float(times.mean()), 1),
        "h2d_bytes_per_frame": int(h2d // frames),
        "d2h_bytes_per_frame": int(d2h // frames),
        "models": {key: _stats(engines[key].call_stats.samples()) for key in chain.keys},
    }


def contended(chain, engines: dict[str, Any], batch_engine, batch_feeds: dict[str, Any], frames: int) -> dict[str, Any]:
    """The live chain's fps while a batch thread keeps calling a shared engine at batch priority."""
    batch_engine.run(batch_feeds, priority="batch")  # its first batch call (a CUDA graph capture) before timing
    stop = threading.Event()
    done = [0]

    def batch_worker():
        while not stop.is_set():
            batch_engine.run(batch_feeds, priority="batch")
            done[0] += 1

    worker = threading.Thread(target=batch_worker, daemon=True)
    worker.start()
    try:
        start = time.perf_counter()
        for _ in range(frames):
            with live_frame(engines):
                chain.frame()
        elapsed = time.perf_counter() - start
    finally:
        stop.set()
        worker.join(timeout=60)
    return {
        "live_fps_with_batch": round(frames / elapsed, 1),
        "batch_calls": done[0],
        "batch_calls_per_s": round(done[0] / elapsed, 1),
    }


# -- equality with onnxruntime on the CPU --------------------------------------------------------


def reference_feeds(data: dict[str, Any], reference: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """One realistic feed per model (crops, keypoints from the motion model, the real appearance volume)."""
    from facecast.neural import liveportrait as lp

    feature = reference["liveportrait/appearance_feature_extractor"].run({"img": data["character"]})["output"]
    source = lp.motion_from_outputs(reference["liveportrait/motion_extractor"].run({"img": data["character"]}))
    x_s = lp.keypoints(source)
    x_d = x_s + np.random.default_rng(1).normal(0, 0.02, x_s.shape)
    latent = np.random.default_rng(2).standard_normal((1, 512)).astype(np.float32)
    return {
        "liveportrait/appearance_feature_extractor": {"img": data["character"]},
        "liveportrait/motion_extractor": {"img": data["frames"][0]},
        "liveportrait/warping_spade": {
            "feature_3d": feature,
            "kp_source": x_s[None].astype(np.float32),
            "kp_driving": x_d[None].astype(np.float32),
        },
        "liveportrait/stitching": {"input": np.concatenate([x_s.ravel(), x_d.ravel()])[None].astype(np.float32)},
        "liveportrait/stitching_eye": {
            "input": np.concatenate([x_s.ravel(), [0.3, 0.3, 0.25]])[None].astype(np.float32)
        },
        "liveportrait/stitching_lip": {"input": np.concatenate([x_s.ravel(), [0.1, 0.0]])[None].astype(np.float32)},
        "w600k_r50": {"input.1": data["face112"]},
        "inswapper_128": {"target": data["targets"][0], "source": latent / np.linalg.norm(latent)},
    }


def differences(engines: dict[str, Any], feeds: dict[str, dict], expected: dict[str, dict]) -> dict[str, float]:
    """Largest |difference| to onnxruntime's CPU output, relative to the output's largest value."""
    out = {}
    for key, feed in feeds.items():
        got = engines[key].run(feed)
        worst = 0.0
        for name, want in expected[key].items():
            worst = max(worst, float(np.abs(got[name] - want).max()) / (float(np.abs(want).max()) or 1.0))
        out[key] = float(f"{worst:.3g}")
    return out


# -- report ---------------------------------------------------------------------------------------


def table(report: dict[str, Any]) -> str:
    header = (
        f"{'variant':<18} {'chain / model':<42} {'p50 ms':>8} {'p95 ms':>8} {'fps':>7} {'h2d B/fr':>10} "
        f"{'d2h B/fr':>10} {'rel diff':>9}"
    )
    lines = [header]
    for name, v in report["variants"].items():
        if "error" in v:
            lines.append(f"{name:<18} ERROR: {v['error']}")
        for chain_name, c in v.get("chains", {}).items():
            lines.append(
                f"{name:<18} {chain_name + ' (frame)':<42} {c['frame_ms']['p50']:>8.2f} "
                f"{c['frame_ms']['p95']:>8.2f} {c['fps']:>7.1f} {c['h2d_bytes_per_frame']:>10} "
                f"{c['d2h_bytes_per_frame']:>10} {'':>9}"
            )
            for key, s in c["models"].items():
                diff = v.get("accuracy", {}).get(key, "")
                lines.append(
                    f"{'':<18} {'  ' + key:<42} {s['p50']:>8.2f} {s['p95']:>8.2f} {'':>7} {'':>10} {'':>10} {diff!s:>9}"
                )
        others = {
            k: d
            for k, d in v.get("accuracy", {}).items()
            if not any(k in c["models"] for c in v.get("chains", {}).values())
        }
        if others:
            once = ", ".join(f"{k.split('/')[-1]} {d}" for k, d in others.items())
            lines.append(f"{'':<18} rel diff, once-per-character models: {once}")
        if "contended" in v:
            c = v["contended"]
            lines.append(
                f"{'':<18} animate live fps beside a batch thread: {c['live_fps_with_batch']} "
                f"(batch warping calls/s: {c['batch_calls_per_s']})"
            )
        if "load_s" in v:
            lines.append(f"{'':<18} load+warmup {v['load_s']} s; providers: {v['providers']}")
    return "\n".join(lines)


def run_variant(
    variant: Variant,
    folder: Path,
    data: dict[str, Any],
    feeds: dict[str, dict],
    expected: dict[str, dict],
    frames: int,
    warmup: int,
    result: dict[str, Any],
    with_batch: bool,
) -> None:
    """Load one variant's engines and fill `result` step by step (what ran before a failure stays)."""
    loaded = load(variant, folder)
    engines = loaded.engines
    result.update(
        load_s=round(loaded.load_s, 1),
        providers=sorted({p for ps in loaded.providers.values() for p in ps[:1]}),
        precision={k: e.precision for k, e in engines.items()},
    )
    result["accuracy"] = differences(engines, feeds, expected)
    print(f"  largest relative difference to onnxruntime (CPU): {max(result['accuracy'].values())}", flush=True)
    animate = AnimateChain(engines, data["frames"], data["character"])
    swap = SwapChain(engines, data["targets"], data["face112"], data["emap"])
    result["chains"] = {}
    for chain in (animate, swap):
        result["chains"][chain.name] = measure(chain, engines, frames, warmup)
        print(f"  {chain.name}: {result['chains'][chain.name]['fps']} fps", flush=True)
    if with_batch:
        batch_feeds = {**feeds["liveportrait/warping_spade"], "feature_3d": animate.feature}
        result["contended"] = contended(
            animate, engines, engines["liveportrait/warping_spade"], batch_feeds, max(frames // 2, 2)
        )


def write(report: dict[str, Any], path: Path | None) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, default=str) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--dry-run",
        action="store_true",
        default=os.environ.get("FACECAST_GPU_CHECK_DRY") == "1",
        help="the CPU, the small fixtures, a few frames (what the test suite runs)",
    )
    parser.add_argument("--frames", type=int, default=None, help="timed frames per chain (default 300; dry 3)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed frames first (default 20; dry 1)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="skip the remaining variants after this long")
    parser.add_argument(
        "--json", type=Path, default=Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else None
    )
    args = parser.parse_args(argv)
    preflight()
    import torch

    dry = args.dry_run
    frames = args.frames or (3 if dry else 300)
    warmup = args.warmup if args.warmup is not None else (1 if dry else 20)
    torch.set_num_threads(2 if dry else min(8, os.cpu_count() or 1))
    began = time.perf_counter()
    env = environment()
    print(
        f"gpu_check: {'DRY RUN on the CPU' if dry else env.get('gpu', 'no GPU')}; torch {env['torch']} "
        f"(CUDA {env['cuda']}), onnxruntime {env['onnxruntime']} {env['ort_providers']}",
        flush=True,
    )
    if not dry and not env["cuda_available"]:
        print("gpu_check: PyTorch sees no CUDA device; use --dry-run for the CPU", file=sys.stderr)
        return 2
    report: dict[str, Any] = {"environment": env, "dry_run": dry, "frames": frames, "variants": {}}
    with tempfile.TemporaryDirectory(prefix="facecast-gpu-check-") as scratch:
        folder, report["models"] = models_folder(dry, Path(scratch))
        print(f"models: {report['models']['kind']} in {folder} ({report['models']['ready_s']} s)", flush=True)
        data = inputs(folder)
        reference = load(Variant("reference", "onnxruntime", {"device": "cpu"}), folder).engines
        feeds = reference_feeds(data, reference)
        expected = {key: reference[key].run(feed) for key, feed in feeds.items()}
        del reference
        first_torch = True
        for variant in variants(env, dry):
            if time.perf_counter() - began > args.budget_s:
                report["variants"][variant.name] = {"error": f"skipped: over the {args.budget_s:.0f} s budget"}
                continue
            print(f"variant {variant.name} {variant.note}".rstrip(), flush=True)
            result: dict[str, Any] = {}
            report["variants"][variant.name] = result
            try:
                run_variant(
                    variant,
                    folder,
                    data,
                    feeds,
                    expected,
                    frames,
                    warmup,
                    result,
                    with_batch=variant.engine == "torch" and first_torch,
                )
                first_torch = first_torch and variant.engine != "torch"
            except Exception as exc:  # one broken variant must not cost the others their figures
                traceback.print_exc()
                result["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                gc.collect()  # the variant's engines are gone: free their GPU memory for the next one
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            write(report, args.json)  # after every variant: a run cut short still leaves its figures
    report["elapsed_s"] = round(time.perf_counter() - began, 1)
    print()
    print(table(report))
    print(f"GPU_CHECK_JSON {json.dumps(report, default=str)}")
    write(report, args.json)
    torch_ok = any(not v.get("error") for name, v in report["variants"].items() if name.startswith("torch"))
    return 0 if torch_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
