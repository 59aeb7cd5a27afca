"""`facecast doctor`: what this machine offers facecast, what is wrong, and where to read about it.

Two halves. `survey()` looks at the machine once (packages, GPU, cameras, display, NDI, the job
queue, the daemon) and keeps what it saw in a `Machine`; the checks are plain functions of that
`Machine` and probe nothing themselves, so each rule can be read, and tested, on its own. Every
problem names the section of docs/TROUBLESHOOTING.md that explains it (a test holds the anchors
and the headings together).

doctor always exits 0: it reports, it does not judge a machine that only ever records, say, and
never needs a camera.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sqlite3
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from facecast.config import Config

GUIDE = "docs/TROUBLESHOOTING.md"


class Section:
    """Anchors of docs/TROUBLESHOOTING.md (GitHub's slugs of its headings)."""

    CONFIG = "a-config-error-stops-start-up"
    CAMERA_BUSY = "camera-in-use-by-another-program"
    CAMERA_MISSING = "no-camera-found"
    BLACK_OUTPUT = "black-or-empty-output-in-obs"
    NDI = "ndi-source-not-listed-in-obs"
    HOTKEYS = "hotkeys-do-nothing"
    PREVIEW = "the-preview-window-does-not-open"
    GPU = "the-gpu-is-not-used"
    TENSORRT = "tensorrt-missing-or-slow-to-start"
    MODELS = "models-missing"
    JOBS = "jobs-stuck-or-not-starting"
    CPU = "high-cpu-use"


ALL_SECTIONS = tuple(v for k, v in vars(Section).items() if k.isupper())


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing doctor saw that stops or weakens a feature, and where the fix is explained."""

    level: Literal["problem", "note"]  # problem: a configured feature will not work; note: worth knowing
    text: str
    section: str

    def render(self) -> str:
        return f"{self.level.upper():<8} {self.text}\n         read {GUIDE}#{self.section}"


# -- what doctor looks at ----------------------------------------------------------------------------

ORT_DISTRIBUTIONS = (
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
    "onnxruntime-training",
)


@dataclass(slots=True)
class CameraProbe:
    index: int
    node: str | None = None  # /dev/videoN on Linux
    label: str = ""  # the driver's name for it
    exists: bool = True  # False: no such device (Linux); elsewhere we cannot tell, so True
    readable: bool = True  # the user may open the device file
    frame: str | None = None  # "1280x720 at 30 fps" when it opened and gave a frame
    holders: list[str] = field(default_factory=list)  # "obs (pid 1234)": processes holding it open


@dataclass(slots=True)
class JobsSeen:
    path: Path
    counts: dict[str, int]
    stuck: list[tuple[str, str, str]]  # (id, kind, why its worker is gone)
    error: str | None = None


@dataclass(slots=True)
class Machine:
    """Everything the checks read, gathered once by `survey()` (or built by hand in tests)."""

    platform: str = sys.platform
    env: Mapping[str, str] = field(default_factory=dict)
    config: Config | None = None
    config_error: str | None = None
    gpus: list[str] = field(default_factory=list)  # NVIDIA GPUs NVML sees
    ort_dists: list[str] = field(default_factory=list)  # installed onnxruntime distributions
    providers: list[str] = field(default_factory=list)
    cuda_session: str | None = None  # None: not tried; else the first provider a tiny session really got
    tensorrt: str | None = None  # the importable TensorRT version
    torch: str | None = None  # the installed PyTorch version (not imported unless a GPU or engine.device needs it)
    torch_cuda: bool | None = None  # None: not asked
    cameras: list[CameraProbe] = field(default_factory=list)
    ndi_error: str | None = None
    loopback_devices: list[str] = field(default_factory=list)  # v4l2loopback nodes (Linux virtual camera)
    pynput_error: str | None = None
    jobs: JobsSeen | None = None
    daemon_url: str | None = None
    daemon_running: bool = False


# -- the checks ----------------------------------------------------------------------------------------


def check_config(m: Machine) -> Iterator[Finding]:
    if m.config_error is not None:
        first = m.config_error.splitlines()[0]
        yield Finding("problem", f"the config does not load, facecast will not start: {first}", Section.CONFIG)


def check_camera(m: Machine) -> Iterator[Finding]:
    cfg = m.config
    if cfg is None or cfg.capture.source not in ("auto", "camera"):
        return  # the configured source is not a camera
    index = cfg.capture.camera.index
    probe = next((c for c in m.cameras if c.index == index), None)
    if probe is not None and probe.frame is not None:
        return
    if probe is not None and probe.holders and all(h.startswith("facecast (") for h in probe.holders):
        return  # the running daemon reads it: as it should
    wanted = cfg.capture.source == "camera"
    fallback = "" if wanted else " (capture.source auto: the synthetic driver is used instead)"
    if probe is None or not probe.exists:
        others = [c for c in m.cameras if c.frame is not None]
        hint = f"; camera {others[0].index} works: set capture.camera.index: {others[0].index}" if others else ""
        yield Finding(
            "problem" if wanted else "note",
            f"no camera {index} on this machine{hint}{fallback}",
            Section.CAMERA_MISSING,
        )
    elif not probe.readable:
        yield Finding(
            "problem",
            f"camera {index} ({probe.node}) exists but you may not open it: add yourself to the "
            f"'video' group (sudo usermod -aG video $USER, then log in again){fallback}",
            Section.CAMERA_MISSING,
        )
    elif probe.holders:
        yield Finding(
            "problem",
            f"camera {index} ({probe.node}) is in use by {', '.join(probe.holders)}{fallback}",
            Section.CAMERA_BUSY,
        )
    elif m.platform.startswith("linux"):
        yield Finding(
            "problem",
            f"camera {index} ({probe.node}) exists but gives no frame: another user's program "
            f"may hold it, or it is not a capture device{fallback}",
            Section.CAMERA_BUSY,
        )
    else:
        yield Finding(
            "problem" if wanted else "note",
            f"camera {index} did not open: absent, in use by another program, or (macOS) the terminal "
            f"has no camera permission{fallback}",
            Section.CAMERA_MISSING,
        )


def check_display(m: Machine) -> Iterator[Finding]:
    """Global hotkeys (pynput) and the preview window (OpenCV's Qt, X11 only on Linux) need a display."""
    cfg = m.config
    if cfg is None or not m.platform.startswith("linux"):
        return
    x11 = bool(m.env.get("DISPLAY"))
    wayland = bool(m.env.get("WAYLAND_DISPLAY")) or m.env.get("XDG_SESSION_TYPE") == "wayland"
    if cfg.hotkeys.enabled:
        if not x11 and wayland:
            yield Finding(
                "problem",
                "Wayland session without XWayland (DISPLAY is not set): global hotkeys cannot listen",
                Section.HOTKEYS,
            )
        elif not x11:
            yield Finding("problem", "no display (DISPLAY is not set): global hotkeys are off", Section.HOTKEYS)
        elif m.pynput_error is not None:
            yield Finding(
                "problem", f"pynput cannot reach the display {m.env.get('DISPLAY')}: {m.pynput_error}", Section.HOTKEYS
            )
        elif wayland:
            yield Finding(
                "note",
                "Wayland session: hotkeys fire only while an X11 (XWayland) window such as OBS has the focus",
                Section.HOTKEYS,
            )
    previews = [name for name, o in cfg.outputs.items() if o.type == "preview" and o.enabled]
    if previews and not x11:
        if wayland:
            yield Finding(
                "problem",
                f"output {previews[0]}: the preview window needs X11 (XWayland) and DISPLAY is "
                "not set: OpenCV's window cannot open under Wayland alone",
                Section.PREVIEW,
            )
        else:
            yield Finding("note", f"no display: output {previews[0]} (the preview window) is skipped", Section.PREVIEW)


def check_outputs(m: Machine) -> Iterator[Finding]:
    """OBS sees facecast only through a sender output; two of them cannot start on some systems."""
    cfg = m.config
    if cfg is None:
        return
    senders = [
        (name, o.type) for name, o in cfg.outputs.items() if o.enabled and o.type in ("ndi", "spout", "virtualcam")
    ]
    if not senders:
        yield Finding(
            "note",
            "no output for OBS is enabled (ndi, spout, virtualcam): OBS sees nothing from facecast",
            Section.BLACK_OUTPUT,
        )
    for name, kind in senders:
        if kind == "spout" and m.platform != "win32":
            yield Finding(
                "problem",
                f"output {name} is a Spout sender, which is Windows-only: facecast will not "
                "start with it here; use ndi or virtualcam",
                Section.BLACK_OUTPUT,
            )
        if kind == "virtualcam" and m.platform.startswith("linux") and not m.loopback_devices:
            yield Finding(
                "problem",
                f"output {name} (virtual camera) needs a v4l2loopback device and there is none: "
                "facecast will not start with it",
                Section.BLACK_OUTPUT,
            )


def check_ndi(m: Machine) -> Iterator[Finding]:
    if m.ndi_error is None:
        return
    cfg = m.config
    enabled = [n for n, o in cfg.outputs.items() if o.type == "ndi" and o.enabled] if cfg is not None else []
    where = f"output {enabled[0]} is enabled but " if enabled else ""
    yield Finding("problem" if enabled else "note", f"{where}NDI cannot send from here: {m.ndi_error}", Section.NDI)


def check_onnxruntime(m: Machine) -> Iterator[Finding]:
    if len(m.ort_dists) > 1:
        yield Finding(
            "problem",
            f"{' and '.join(m.ort_dists)} are installed together: they overwrite each other's "
            "files; uninstall all of them and install one",
            Section.GPU,
        )
    cfg = m.config
    neural = cfg is not None and (
        cfg.effect.animate.backend == "liveportrait" or cfg.effect.swap.backend == "inswapper"
    )
    device = cfg.engine.device if cfg is not None else "auto"
    needs_gpu = device in ("cuda", "tensorrt") or (neural and device == "auto")
    if neural and not m.ort_dists and cfg is not None and cfg.engine.device != "torch":
        yield Finding(
            "problem",
            "a neural backend is configured but onnxruntime is not installed: install facecast "
            "with the cpu extra, or gpu on an NVIDIA machine",
            Section.GPU,
        )
    if m.gpus and m.providers and "CUDAExecutionProvider" not in m.providers:
        yield Finding(
            "problem" if needs_gpu else "note",
            f"{m.gpus[0]} is here but onnxruntime offers only {', '.join(m.providers)}: the neural "
            "effects run on the CPU (the gpu extra instead of cpu: make gpu)",
            Section.GPU,
        )
    if m.cuda_session is not None and m.cuda_session != "CUDAExecutionProvider":
        what = (
            "no NVIDIA GPU is visible"
            if not m.gpus
            else "its CUDA or cuDNN libraries did not load, or the driver is too old"
        )
        yield Finding(
            "problem" if needs_gpu else "note",
            f"onnxruntime offers CUDAExecutionProvider but a session on it ran on {m.cuda_session}: {what}",
            Section.GPU,
        )
    if m.gpus and "TensorrtExecutionProvider" in m.providers and m.tensorrt is None:
        yield Finding(
            "problem" if device == "tensorrt" else "note",
            "onnxruntime offers TensorRT but the TensorRT libraries are not installed (tensorrt, in the gpu "
            "extra): sessions use CUDA instead",
            Section.TENSORRT,
        )


def check_torch(m: Machine) -> Iterator[Finding]:
    cfg = m.config
    if cfg is None:
        return
    wants_torch = cfg.engine.device == "torch"
    if wants_torch and m.torch is None:
        yield Finding("problem", "engine.device is torch but PyTorch is not installed", Section.GPU)
        return
    if m.torch_cuda is False and (wants_torch or m.gpus):
        if wants_torch and not cfg.engine.allow_cpu_fallback:
            level: Literal["problem", "note"] = "problem"
        else:
            level = "problem" if m.gpus and cfg.jobs.generate_device == "cuda" else "note"
        where = f" on a machine with {m.gpus[0]}" if m.gpus else ""
        yield Finding(
            level,
            f"PyTorch {m.torch} has no CUDA device (torch.cuda.is_available() is False){where}: "
            "engine.device: torch and generate jobs run on the CPU",
            Section.GPU,
        )


def check_models(m: Machine) -> Iterator[Finding]:
    cfg = m.config
    if cfg is None:
        return
    from facecast.models.registry import MODEL_SETS

    folder = cfg.models.resolved_dir()
    for key, name in (
        ("effect.animate.backend", cfg.effect.animate.backend),
        ("effect.swap.backend", cfg.effect.swap.backend),
    ):
        if name not in MODEL_SETS:
            continue
        files = MODEL_SETS[name].files
        missing = [f.path for f in files if not (folder / f.path).is_file()]
        if missing:
            yield Finding(
                "problem",
                f"{key} is {name} but {len(missing)} of its {len(files)} files are missing in "
                f"{folder} (first: {missing[0]}): run facecast models download {name}",
                Section.MODELS,
            )


def check_jobs(m: Machine) -> Iterator[Finding]:
    jobs = m.jobs
    if jobs is None:
        return
    if jobs.error is not None:
        yield Finding("problem", f"the job queue {jobs.path} cannot be read: {jobs.error}", Section.JOBS)
        return
    for job_id, kind, why in jobs.stuck:
        yield Finding(
            "problem",
            f"job {job_id} ({kind}) is marked running but {why}: it runs again when the "
            "daemon starts with jobs.enabled, or with facecast jobs run",
            Section.JOBS,
        )
    queued = jobs.counts.get("queued", 0)
    worker = m.daemon_running and m.config is not None and m.config.jobs.enabled
    if queued and not worker:
        why = "the daemon is not running" if not m.daemon_running else "the daemon runs with jobs.enabled: false"
        yield Finding(
            "note",
            f"{queued} queued job{'s wait' if queued != 1 else ' waits'}: {why}; start it, or run facecast jobs run",
            Section.JOBS,
        )


CHECKS: tuple[Callable[[Machine], Iterator[Finding]], ...] = (
    check_config,
    check_camera,
    check_display,
    check_outputs,
    check_ndi,
    check_onnxruntime,
    check_torch,
    check_models,
    check_jobs,
)


def diagnose(m: Machine) -> list[Finding]:
    return [finding for check in CHECKS for finding in check(m)]


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# -- looking at the machine ------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def nvidia_gpus() -> tuple[list[str], list[str]]:
    """(GPU descriptions, report lines) from NVML."""
    try:
        import pynvml
    except ImportError:
        return [], ["GPU: nvidia-ml-py not installed (pip install nvidia-ml-py)"]
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return [], [f"GPU: no NVIDIA GPU or driver ({exc})"]
    try:
        lines = [f"NVIDIA driver {pynvml.nvmlSystemGetDriverVersion()}"]
        gpus = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            gpus.append(f"GPU {i} ({name})")
            lines.append(f"GPU {i}: {name}, {mem.total / 2**30:.1f} GiB")
        return gpus, lines
    finally:
        pynvml.nvmlShutdown()


def gpu_report() -> list[str]:
    return nvidia_gpus()[1]


def onnxruntime_report() -> str:
    try:
        import onnxruntime
    except ImportError:
        return "onnxruntime: not installed (the neural effects need the cpu or the gpu extra: docs/INSTALL.md)"
    return f"onnxruntime {onnxruntime.__version__}: providers {', '.join(onnxruntime.get_available_providers())}"


def cuda_session_provider() -> str:
    """Run a one-node model on the CUDA provider: onnxruntime lists CUDA whenever onnxruntime-gpu is
    installed, but falls back to the CPU (with a log line, no exception) when CUDA/cuDNN do not load."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.log_severity_level = 4  # the fallback is reported by doctor itself
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # onnxruntime's own "not available" warning
            session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CUDAExecutionProvider", "CPUExecutionProvider"]
            )
        session.run(None, {"x": np.zeros(1, np.float32)})
    except Exception as exc:  # a broken install raises instead of falling back
        return f"an error ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return session.get_providers()[0]


def processes_holding(path: str) -> list[str]:
    """'name (pid N)' of every process (that we may inspect) with `path` open; Linux /proc only."""
    target = os.path.realpath(path)
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:
            continue  # another user's process, or gone
        for fd in fds:
            try:
                if os.readlink(fd) == target:
                    name = (proc / "comm").read_text().strip()
                    if b"facecast" in (proc / "cmdline").read_bytes():
                        name = "facecast"  # a python process: say which
                    found.append(f"{name} (pid {proc.name})")
                    break
            except OSError:
                continue
    return found


def _linux_video_nodes() -> list[tuple[int, str, str]]:
    """(number, /dev/videoN, label) of the capture nodes: not the metadata nodes a UVC camera also
    registers (their sysfs index is not 0), not v4l2loopback devices (virtual: they are outputs)."""
    nodes = []
    for entry in sorted(Path("/sys/class/video4linux").glob("video*")):
        try:
            number = int(entry.name.removeprefix("video"))
            if (entry / "index").is_file() and (entry / "index").read_text().strip() != "0":
                continue
            if "/virtual/" in os.path.realpath(entry):
                continue
            label = (entry / "name").read_text().strip()
        except (OSError, ValueError):
            continue
        nodes.append((number, f"/dev/{entry.name}", label))
    return nodes


def _open_camera(index: int) -> str | None:
    import cv2

    from facecast.capture.camera import quiet_opencv

    with quiet_opencv():
        cap = cv2.VideoCapture(index)
    try:
        if cap.isOpened():
            ok, frame = cap.read()
            if ok and frame is not None:
                h, w = frame.shape[:2]
                return f"{w}x{h} at {cap.get(cv2.CAP_PROP_FPS):.0f} fps"
        return None
    finally:
        cap.release()


def probe_cameras(platform_name: str, wanted: int | None, max_index: int = 4) -> list[CameraProbe]:
    if platform_name.startswith("linux"):
        probes = []
        nodes = _linux_video_nodes()
        for number, node, label in nodes:
            probe = CameraProbe(number, node, label, readable=os.access(node, os.R_OK | os.W_OK))
            if probe.readable:
                probe.frame = _open_camera(number)
            if probe.frame is None:
                probe.holders = processes_holding(node)
            probes.append(probe)
        if wanted is not None and wanted not in [p.index for p in probes]:
            probes.append(CameraProbe(wanted, f"/dev/video{wanted}", exists=Path(f"/dev/video{wanted}").exists()))
        return probes
    indices = sorted({*range(max_index), *([wanted] if wanted is not None else [])})
    return [CameraProbe(i, frame=_open_camera(i)) for i in indices]


def cameras_report(probes: list[CameraProbe]) -> list[str]:
    lines = []
    for p in probes:
        name = f"camera {p.index}" + (
            f" ({p.node}, {p.label})" if p.node and p.label else f" ({p.node})" if p.node else ""
        )
        if p.frame is not None:
            lines.append(f"{name}: opens, {p.frame}")
        elif p.node and not p.exists:
            continue
        elif p.node:
            state = (
                "no permission"
                if not p.readable
                else f"in use by {', '.join(p.holders)}"
                if p.holders
                else "gives no frame"
            )
            lines.append(f"{name}: {state}")
    return lines or ["cameras: none opened (the synthetic driver will be used)"]


def ndi_problem() -> str | None:
    """Import NDIlib and start its runtime, as the NDI output does; None when it works."""
    try:
        import NDIlib as ndi
    except ImportError as exc:
        return f"the ndi-python package is missing (it brings the NDI runtime): pip install ndi-python ({exc})"
    except Exception as exc:  # its bundled library failed to load
        return f"the NDI runtime does not load ({type(exc).__name__}: {exc})"
    if not ndi.initialize():
        return "the NDI runtime did not start" + ("" if ndi.is_supported_CPU() else ": this CPU lacks SSE4.2")
    ndi.destroy()
    return None


def outputs_report() -> tuple[list[str], str | None]:
    """(report lines, pynput's error or None)."""
    from facecast.outputs.preview import display_available

    lines = [f"display: {'yes' if display_available() else 'no (the preview window will be skipped)'}"]
    pynput_error = None
    optional = [
        ("NDI", "NDIlib", "pip install ndi-python"),
        ("Spout", "SpoutGL", "Windows only: pip install SpoutGL"),
        ("virtual camera", "pyvirtualcam", "pip install pyvirtualcam"),
        ("hotkeys", "pynput", "pip install pynput (needs a display on Linux)"),
    ]
    for label, module, hint in optional:
        try:
            importlib.import_module(module)
            lines.append(f"{label}: available ({module})")
        except Exception as exc:  # ImportError, or pynput's error without a display
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            lines.append(f"{label}: unavailable ({type(exc).__name__}: {text}); {hint}")
            if module == "pynput":
                pynput_error = f"{type(exc).__name__}: {text}"
    return lines, pynput_error


def loopback_devices() -> list[str]:
    """The v4l2loopback devices the virtual camera's Linux backend can write to."""
    devices = []
    for entry in sorted(Path("/sys/devices/virtual/video4linux").glob("video*")):
        try:
            label = (entry / "name").read_text().strip()
        except OSError:
            label = "?"
        devices.append(f"/dev/{entry.name} ({label})")
    return devices


def v4l2loopback_report(devices: list[str]) -> str:
    if devices:
        return f"v4l2loopback: {', '.join(devices)}"
    return (
        "v4l2loopback: no device (the virtual camera needs one: sudo apt install v4l2loopback-dkms && "
        "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=facecast)"
    )


def read_jobs(path: Path, now: float | None = None) -> JobsSeen | None:
    """The queue's counts and its stuck jobs: 'running' although the worker that claimed them is
    gone (its lease ran out, or its process on this computer has ended). Read-only: the file is
    opened without creating it or its schema."""
    if not path.is_file():
        return None
    now = time.time() if now is None else now
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            counts = dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
            running = db.execute(
                "SELECT id, kind, lease_until, lease_owner FROM jobs WHERE status = 'running' ORDER BY created"
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        return JobsSeen(path, {}, [], error=str(exc))
    stuck = []
    for job_id, kind, until, owner in running:
        if until is not None and until < now:
            stuck.append((job_id, kind, f"its worker stopped renewing its lease {_ago(now - until)} ago"))
        elif not _worker_alive(owner):
            stuck.append((job_id, kind, f"the process that ran it ({owner}) has ended"))
    return JobsSeen(path, counts, stuck)


def _worker_alive(owner: str | None) -> bool:
    """A lease owner is 'host:pid:start time' (facecast.jobs.runner.owner_id); only a process on this
    computer can be looked up, one elsewhere counts as alive until its lease runs out."""
    import socket

    import psutil

    host, _, rest = (owner or "").partition(":")
    if host != socket.gethostname():
        return True
    pid, _, started = rest.partition(":")
    try:
        return int(psutil.Process(int(pid)).create_time()) == int(started)
    except (ValueError, psutil.Error):
        return False


def daemon_answers(url: str) -> bool:
    import httpx

    try:
        reply = httpx.get(f"{url}/state", timeout=0.5, trust_env=False)
    except httpx.HTTPError:
        return False
    return reply.status_code in (200, 401, 403)  # with a token we are refused, but it is there


def load_doctor_config(
    path: Path | None, overrides: list[str] | tuple[str, ...] = ()
) -> tuple[Config | None, str | None]:
    from facecast.config import ConfigError, default_config_path, load_config

    try:
        return load_config(path if path is not None else default_config_path(), overrides), None
    except ConfigError as exc:
        return None, str(exc)


def survey(config_path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> tuple[Machine, list[str]]:
    """Look at this machine: (what the checks read, the report lines)."""
    import cv2

    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    m = Machine(platform=sys.platform, env=dict(os.environ))
    m.config, m.config_error = load_doctor_config(config_path, overrides)
    lines = [
        f"facecast {_version('facecast') or 'from source'}",
        f"Python {sys.version.split()[0]} ({sys.executable})",
        f"OS: {platform.platform()}",
        f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
    ]
    if m.config_error is None:
        from facecast.config import default_config_path

        shown = config_path or default_config_path()
        lines.append(f"config: {shown or 'built-in defaults (no config.yaml here)'}")
    m.gpus, gpu_lines = nvidia_gpus()
    lines += gpu_lines
    m.ort_dists = [d for d in ORT_DISTRIBUTIONS if _version(d)]
    lines.append(onnxruntime_report() + (f" [{', '.join(m.ort_dists)}]" if len(m.ort_dists) > 1 else ""))
    try:
        import onnxruntime

        m.providers = list(onnxruntime.get_available_providers())
    except ImportError:
        m.providers = []
    if "CUDAExecutionProvider" in m.providers:
        m.cuda_session = cuda_session_provider()
        lines.append(f"onnxruntime CUDA session: runs on {m.cuda_session}")
    if m.gpus:
        from facecast.engines.onnxruntime import _trt_version

        version = _trt_version()
        m.tensorrt = None if version == "none" else version
        lines.append(f"TensorRT: {m.tensorrt or 'not installed'}")
    m.torch = _version("torch")
    if m.torch is not None and (m.gpus or (m.config is not None and m.config.engine.device == "torch")):
        import torch  # seconds: only where the answer matters

        m.torch_cuda = bool(torch.cuda.is_available())
        lines.append(f"PyTorch {m.torch}: CUDA {'available' if m.torch_cuda else 'not available'}")
    lines.append(
        f"OpenCV {cv2.__version__}; mediapipe {_version('mediapipe') or 'missing'}; PyAV {_version('av') or 'missing'}"
    )
    wanted = m.config.capture.camera.index if m.config is not None else None
    m.cameras = probe_cameras(m.platform, wanted)
    lines += cameras_report(m.cameras)
    output_lines, m.pynput_error = outputs_report()
    lines += output_lines
    if m.platform.startswith("linux"):
        m.loopback_devices = loopback_devices()
        lines.append(v4l2loopback_report(m.loopback_devices))
    m.ndi_error = ndi_problem()
    if m.config is not None:
        from facecast.control.client import base_url

        m.jobs = read_jobs(m.config.jobs.db_path())
        if m.jobs is not None and m.jobs.error is None:
            counts = ", ".join(f"{n} {s}" for s, n in sorted(m.jobs.counts.items())) or "empty"
            lines.append(f"jobs: {m.jobs.path}: {counts}")
        m.daemon_url = base_url(m.config.control)
        m.daemon_running = m.config.control.enabled and daemon_answers(m.daemon_url)
        lines.append(
            f"daemon: running at {m.daemon_url}"
            if m.daemon_running
            else f"daemon: not running (nothing answers at {m.daemon_url})"
        )
    return m, lines


def report(config_path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Iterator[str]:
    machine, lines = survey(config_path, overrides)
    yield from lines
    findings = diagnose(machine)
    problems = sum(f.level == "problem" for f in findings)
    notes = len(findings) - problems
    yield ""
    if not findings:
        yield "No problems found."
        return
    yield f"{problems} problem{'s' if problems != 1 else ''}, {notes} note{'s' if notes != 1 else ''}:"
    for finding in sorted(findings, key=lambda f: f.level != "problem"):
        yield finding.render()


def run_doctor(config_path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> int:
    for line in report(config_path, overrides):
        print(line, flush=True)
    return 0
