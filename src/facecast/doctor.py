"""`facecast doctor`: what this machine offers facecast, and what is missing."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import sys
from collections.abc import Iterator


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def gpu_report() -> list[str]:
    try:
        import pynvml
    except ImportError:
        return ["GPU: nvidia-ml-py not installed (pip install nvidia-ml-py)"]
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [f"GPU: no NVIDIA GPU or driver ({exc})"]
    try:
        lines = [f"NVIDIA driver {pynvml.nvmlSystemGetDriverVersion()}"]
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            lines.append(f"GPU {i}: {pynvml.nvmlDeviceGetName(handle)}, {mem.total / 2**30:.1f} GiB")
        return lines
    finally:
        pynvml.nvmlShutdown()


def onnxruntime_report() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime: not installed (CPU: pip install onnxruntime; NVIDIA: see requirements-gpu.txt)"
    return f"onnxruntime {onnxruntime.__version__}: providers {', '.join(onnxruntime.get_available_providers())}"


def cameras_report(max_index: int = 4) -> list[str]:
    import cv2

    found = []
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    from facecast.capture.camera import quiet_opencv

    for index in range(max_index):
        with quiet_opencv():
            cap = cv2.VideoCapture(index)
        try:
            if cap.isOpened():
                ok, frame = cap.read()
                if ok and frame is not None:
                    h, w = frame.shape[:2]
                    found.append(f"camera {index}: opens, {w}x{h} at {cap.get(cv2.CAP_PROP_FPS):.0f} fps")
        finally:
            cap.release()
    return found or ["cameras: none opened (the synthetic driver will be used)"]


def outputs_report() -> Iterator[str]:
    from facecast.outputs.preview import display_available

    yield f"display: {'yes' if display_available() else 'no (the preview window will be skipped)'}"
    optional = [
        ("NDI", "NDIlib", "pip install ndi-python"),
        ("Spout", "SpoutGL", "Windows only: pip install SpoutGL"),
        ("virtual camera", "pyvirtualcam", "pip install pyvirtualcam"),
        ("hotkeys", "pynput", "pip install pynput (needs a display on Linux)"),
    ]
    for label, module, hint in optional:
        try:
            importlib.import_module(module)
            yield f"{label}: available ({module})"
        except Exception as exc:  # ImportError, or pynput's error without a display
            yield f"{label}: unavailable ({type(exc).__name__}: {exc}); {hint}"
    if sys.platform.startswith("linux"):
        yield v4l2loopback_report()


def v4l2loopback_report() -> str:
    """The virtual camera's Linux backend needs a v4l2loopback device: list them."""
    from pathlib import Path

    devices = []
    for entry in sorted(Path("/sys/devices/virtual/video4linux").glob("video*")):
        try:
            label = (entry / "name").read_text().strip()
        except OSError:
            label = "?"
        devices.append(f"/dev/{entry.name} ({label})")
    if devices:
        return f"v4l2loopback: {', '.join(devices)}"
    return ("v4l2loopback: no device (the virtual camera needs one: sudo apt install v4l2loopback-dkms && "
            "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=facecast)")


def report() -> Iterator[str]:
    import cv2

    yield f"facecast {_version('facecast') or 'from source'}"
    yield f"Python {sys.version.split()[0]} ({sys.executable})"
    yield f"OS: {platform.platform()}"
    yield f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"
    yield from gpu_report()
    yield onnxruntime_report()
    yield f"OpenCV {cv2.__version__}; mediapipe {_version('mediapipe') or 'missing'}; PyAV {_version('av') or 'missing'}"
    yield from cameras_report()
    yield from outputs_report()


def run_doctor() -> int:
    for line in report():
        print(line, flush=True)
    return 0
