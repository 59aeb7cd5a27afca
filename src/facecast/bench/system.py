"""The machine a benchmark ran on: CPU, memory, GPU, onnxruntime providers, library versions."""

from __future__ import annotations

import gc
import os
import platform
import sys
from typing import Any

import psutil

from facecast.doctor import _version

LIBRARIES = (
    "numpy",
    "opencv-contrib-python",
    "mediapipe",
    "av",
    "onnxruntime",
    "onnxruntime-gpu",
    "pydantic",
    "nvidia-ml-py",
    "psutil",
)


def cpu_model() -> str:
    """The CPU's marketing name where the OS tells it (Linux: /proc/cpuinfo), else the architecture."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (a container or taskset can allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def gpu_info() -> dict[str, Any]:
    try:
        import pynvml
    except ImportError:
        return {"available": False, "reason": "nvidia-ml-py not installed", "driver": None, "devices": []}
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return {"available": False, "reason": f"no NVIDIA GPU or driver ({exc})", "driver": None, "devices": []}
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        devices = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            devices.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "memory_total_mb": round(pynvml.nvmlDeviceGetMemoryInfo(handle).total / 2**20, 1),
                }
            )
        return {
            "available": bool(devices),
            "reason": None if devices else "NVML reports no GPU",
            "driver": driver.decode() if isinstance(driver, bytes) else driver,
            "devices": devices,
        }
    except pynvml.NVMLError as exc:
        return {"available": False, "reason": f"NVML error ({exc})", "driver": None, "devices": []}
    finally:
        pynvml.nvmlShutdown()


def onnxruntime_info() -> dict[str, Any]:
    try:
        import onnxruntime
    except ImportError:
        return {"version": None, "available_providers": [], "providers_in_use": []}
    return {
        "version": onnxruntime.__version__,
        "available_providers": list(onnxruntime.get_available_providers()),
        "providers_in_use": [],  # filled in by each run, while its effect is loaded
    }


def providers_in_use() -> list[str]:
    """Execution providers of the onnxruntime sessions alive in this process right now.

    Asks the sessions themselves (`InferenceSession.get_providers()`), so it is true for any effect
    without the effect having to report it: a session that asked for CUDA and got only the CPU
    shows up as CPU. Empty when no effect has loaded an ONNX model.
    """
    ort = sys.modules.get("onnxruntime")
    if ort is None:
        return []
    found: list[str] = []
    for obj in gc.get_objects():
        if isinstance(obj, ort.InferenceSession):
            for provider in obj.get_providers():
                if provider not in found:
                    found.append(provider)
    return found


def system_info() -> dict[str, Any]:
    from facecast import __version__

    return {
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "cpu": {
            "model": cpu_model(),
            "logical_cores": psutil.cpu_count(),
            "physical_cores": psutil.cpu_count(logical=False),
            "usable_cores": usable_cores(),
        },
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": gpu_info(),
        "onnxruntime": onnxruntime_info(),
        "versions": {"facecast": __version__, **{lib: _version(lib) for lib in LIBRARIES if _version(lib)}},
    }
