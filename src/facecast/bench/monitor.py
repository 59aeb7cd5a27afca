"""What the machine spends while a benchmark measures: process CPU and memory (psutil), GPU (pynvml).

A `ResourceMonitor` samples on its own thread between `start()` and `stop()`. Without an NVIDIA GPU,
driver or nvidia-ml-py the GPU part says why ("no GPU: ..."), it never raises. A `ThreadCpu` says
which threads spent the process's CPU time over the same window.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

SAMPLE_INTERVAL_S = 0.1
MB = 2**20


def _decode(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass
class _DeviceSamples:
    index: int
    name: str
    memory_total_mb: float
    util: list[float] = field(default_factory=list)
    memory_used_mb: list[float] = field(default_factory=list)
    temperature_c: list[float] = field(default_factory=list)


class GpuSampler:
    """Utilisation, memory and temperature of every NVIDIA GPU, through NVML."""

    def __init__(self) -> None:
        self.reason: str | None = None  # why there is no GPU figure; None when NVML is up
        self._nvml: Any = None
        self._handles: list[Any] = []
        self.devices: list[_DeviceSamples] = []

    def open(self) -> None:
        try:
            import pynvml
        except ImportError:
            self.reason = "nvidia-ml-py not installed (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            self.reason = f"no NVIDIA GPU or driver ({exc})"
            return
        self._nvml = pynvml
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                total = pynvml.nvmlDeviceGetMemoryInfo(handle).total / MB
                self._handles.append(handle)
                self.devices.append(_DeviceSamples(i, _decode(pynvml.nvmlDeviceGetName(handle)), round(total, 1)))
        except pynvml.NVMLError as exc:
            self.reason = f"NVML could not list the GPUs ({exc})"
            self.close()
            return
        if not self.devices:
            self.reason = "NVML reports no GPU"
            self.close()

    def sample(self) -> None:
        nvml = self._nvml
        if nvml is None:
            return
        for handle, dev in zip(self._handles, self.devices, strict=False):
            # A metric a device does not support (e.g. temperature on some vGPUs) is left out, not fatal.
            try:
                dev.util.append(float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu))
            except nvml.NVMLError:
                pass
            try:
                dev.memory_used_mb.append(nvml.nvmlDeviceGetMemoryInfo(handle).used / MB)
            except nvml.NVMLError:
                pass
            try:
                dev.temperature_c.append(float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)))
            except nvml.NVMLError:
                pass

    def close(self) -> None:
        if self._nvml is not None:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError:
                pass
            self._nvml = None

    def summary(self) -> dict[str, Any]:
        if self.reason is not None:
            return {"available": False, "reason": self.reason, "devices": []}

        def stat(values: list[float], how: str) -> float | None:
            if not values:
                return None
            return round(max(values) if how == "max" else sum(values) / len(values), 1)

        return {
            "available": True,
            "reason": None,
            "devices": [
                {
                    "index": d.index,
                    "name": d.name,
                    "util_percent": {"mean": stat(d.util, "mean"), "max": stat(d.util, "max")},
                    "memory_used_mb": {"max": stat(d.memory_used_mb, "max")},
                    "memory_total_mb": d.memory_total_mb,
                    "temperature_c": {"max": stat(d.temperature_c, "max")},
                    "samples": len(d.util),
                }
                for d in self.devices
            ],
        }


class ThreadCpu:
    """CPU time per thread between `start()` and `result()`, grouped by who runs it: facecast's own
    threads by their names (the stages, each output's sender, the bench's own loop: MainThread);
    native threads by the name their library gave them, its number taken off (MediaPipe's graph
    threads: "mediapipe"); unnamed native threads (video decoders', onnxruntime's and BLAS's
    workers) as "native". psutil reads every thread's times (Linux, Windows, macOS); the native
    threads' names come from /proc on Linux only, elsewhere they are all "native".

    A thread's time can only be read while it lives, and some end inside the window (a bounded
    bench's capture thread stops once it has read its last frame, before that frame is out): the
    `ResourceMonitor` that owns it calls `sample()` on every one of its samples, and a thread that
    has ended counts with its last sample (what it spent after that is the process's, not here)."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self._start: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._names: dict[int, str] = {}
        self._groups: dict[int, str] = {}
        self._process_name = ""  # what an unnamed thread is called: the process's own name
        if sys.platform.startswith("linux"):
            try:
                with open("/proc/self/comm", encoding="utf-8", errors="replace") as comm:
                    self._process_name = comm.read().strip()
            except OSError:
                pass

    def _times(self) -> dict[int, float]:
        try:
            return {t.id: t.user_time + t.system_time for t in self._proc.threads()}
        except (psutil.Error, OSError):  # a platform without per-thread times
            return {}

    def _group(self, tid: int) -> str:
        name = self._names.get(tid)
        if name is not None:
            return name
        if sys.platform.startswith("linux"):
            try:
                with open(f"/proc/self/task/{tid}/comm", encoding="utf-8", errors="replace") as comm:
                    native = comm.read().strip()
            except OSError:
                return "native"
            # An unnamed thread carries the process's own name ("python3.11"); a named one its
            # library's, often with a number ("mediapipe/4711").
            if native != self._process_name:
                return re.sub(r"[/:_-]?\d+$", "", native) or "native"
        return "native"

    def sample(self) -> None:
        times = self._times()
        self._names.update((t.native_id, t.name) for t in threading.enumerate() if t.native_id is not None)
        self._last.update(times)
        for tid in times:
            if tid not in self._groups:
                self._groups[tid] = self._group(tid)  # named while it lives: /proc forgets it after

    def start(self) -> None:
        self._groups.clear()
        self._last.clear()
        self._names.clear()  # a thread id of an earlier window may belong to another thread now
        self.sample()
        self._start = dict(self._last)

    def result(self) -> dict[str, float]:
        """Seconds of CPU per group from `start()` to the last sample, largest first."""
        groups: dict[str, float] = {}
        for tid, seconds in self._last.items():
            spent = seconds - self._start.get(tid, 0.0)
            if spent > 0:
                groups[self._groups[tid]] = groups.get(self._groups[tid], 0.0) + spent
        return dict(sorted(groups.items(), key=lambda item: -item[1]))


class ResourceMonitor:
    """Process CPU % (CPU time / wall time: 200 % = two cores busy), peak RSS, system CPU, GPU."""

    def __init__(self, interval_s: float = SAMPLE_INTERVAL_S, threads: ThreadCpu | None = None) -> None:
        self.interval_s = interval_s
        self.threads = threads  # sampled with the rest when given (see ThreadCpu)
        self._proc = psutil.Process()
        self._gpu = GpuSampler()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_peak = 0
        self._t0 = 0.0
        self._cpu0 = 0.0

    def _cpu_seconds(self) -> float:
        t = self._proc.cpu_times()
        return t.user + t.system

    def _sample(self) -> None:
        self._rss_peak = max(self._rss_peak, self._proc.memory_info().rss)
        self._gpu.sample()
        if self.threads is not None:
            self.threads.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> None:
        self._gpu.open()
        self._stop.clear()
        self._rss_peak = 0
        psutil.cpu_percent(None)  # starts the system-wide CPU measurement
        if self.threads is not None:
            self.threads.start()
        self._t0, self._cpu0 = time.perf_counter(), self._cpu_seconds()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="bench-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        wall = time.perf_counter() - self._t0
        cpu = self._cpu_seconds() - self._cpu0
        system_cpu = psutil.cpu_percent(None)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        self._gpu.close()
        cores = psutil.cpu_count() or 1
        process_pct = 100.0 * cpu / wall if wall > 0 else 0.0
        return {
            "process": {
                "cpu_percent": round(process_pct, 1),
                "cpu_percent_of_machine": round(process_pct / cores, 1),
                "rss_peak_mb": round(self._rss_peak / MB, 1),
            },
            # Everything running on the machine, facecast included: much more than the process
            # figure means something else was competing for the CPU during the measurement.
            "system_cpu_percent": round(system_cpu, 1),
            "gpu": self._gpu.summary(),
        }
