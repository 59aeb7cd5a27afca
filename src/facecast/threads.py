"""How many threads each native thread pool may run, decided once at start-up from `threads.total`.

Every native library facecast uses starts a pool of about one thread per core by default, and most of
them keep their workers spinning for a while after each task, waiting for the next one. On a
streamer's machine, where OBS's encoder and a game want the same cores, that spinning is CPU taken
for nothing. Measured on the 2-core development machine, 720p60 `animate` (mesh), per frame:
OpenBLAS's worker spun 5.5 ms of CPU (a third of a core) around a 0.2 ms matrix product, and
OpenCV's worker 1.8 ms more.

The pipeline already runs its stages in parallel, one thread each (capture, tracking, effect,
output). Their per-frame calls are a few milliseconds long, too short for a pool to win back what
waking and spinning its workers costs, so the plan gives each pool what its stage needs:

- OpenCV (`cv2.setNumThreads`), process-wide, every stage's cv2 calls (colour conversion, remap,
  blending): 1 thread, so they run in the calling stage's own thread.
- numpy's BLAS (threadpoolctl), process-wide, the mesh effects' spline product: 1 thread.
- onnxruntime intra-op, per session, the effect stage's neural models: total - 1 threads, no spinning.
- torch intra-op, the torch engine's CPU work: total - 1 threads.
- MediaPipe, the tracking stage's face mesh graph: not sized here. Its model runs on one XNNPACK
  thread (MediaPipe's desktop default) and its graph keeps two threads of its own that wait rather
  than spin (`num_threads` in the graph config changes neither: checked).

`total` counts the stage threads too: capture, tracking and output together keep about one core
busy, so the neural models get the rest. Video encoders (outputs) size their own threads; the
capture's decoder has its own key (`capture.file.decoder_threads`, `capture.url.decoder_threads`:
one thread up to 1080p60, see capture/decoder.py).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import asdict, dataclass
from typing import Literal

from pydantic import Field, field_validator

from facecast.configbase import StrictModel

log = logging.getLogger(__name__)


class ThreadsConfig(StrictModel):
    total: int | Literal["auto"] = Field(
        "auto",
        description="cores facecast's threads may keep busy together (the stage threads included); "
        "auto = the cores this process may run on",
    )

    @field_validator("total", mode="before")
    @classmethod
    def _auto_or_cores(cls, value: object) -> object:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("allowed: auto or a number of cores, at least 1")


@dataclass(frozen=True, slots=True)
class ThreadPlan:
    """Threads per pool (see the module docstring for who uses each)."""

    total: int
    opencv: int
    blas: int
    onnxruntime: int
    torch: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"threads: total {self.total}; OpenCV {self.opencv}, BLAS {self.blas},"
            f" onnxruntime {self.onnxruntime} per model, torch {self.torch}"
        )


def usable_cores() -> int:
    """Cores this process may run on (a container or taskset can allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def plan_threads(cfg: ThreadsConfig, usable: int | None = None) -> ThreadPlan:
    total = (usable or usable_cores()) if cfg.total == "auto" else cfg.total
    models = max(1, total - 1)  # capture, tracking and output keep about one core busy
    return ThreadPlan(total=total, opencv=1, blas=1, onnxruntime=models, torch=models)


def apply_threads(plan: ThreadPlan) -> ThreadPlan:
    """Size the process-wide pools (OpenCV, BLAS, torch when it is loaded). onnxruntime sessions and
    the MediaPipe graph take theirs when they are created. Call once, before the stages start."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(plan.opencv)
    threadpool_limits(limits=plan.blas, user_api="blas")  # kept: the limiter is never restored
    torch = sys.modules.get("torch")  # importing torch here would cost seconds on the CPU path
    if torch is not None:
        torch.set_num_threads(plan.torch)
    log.info("%s", plan.describe())
    return plan


def pools_now() -> dict[str, int | None]:
    """The process-wide pools as they are sized right now (asked of the libraries themselves, so a
    benchmark reports what really ran, whatever was planned). torch: None when it is not loaded."""
    import cv2
    from threadpoolctl import threadpool_info

    blas = [lib["num_threads"] for lib in threadpool_info() if lib.get("user_api") == "blas"]
    torch = sys.modules.get("torch")
    return {
        "opencv": cv2.getNumThreads(),
        "blas": max(blas) if blas else None,
        "torch": torch.get_num_threads() if torch is not None else None,
    }


__all__ = ["ThreadPlan", "ThreadsConfig", "apply_threads", "plan_threads", "pools_now", "usable_cores"]
