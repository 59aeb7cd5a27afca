"""onnxruntime sessions on TensorRT (FP16, engine cache), CUDA or CPU, and the one call that runs them."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from facecast.configbase import StrictModel
from facecast.engines.base import CallStats, TransferStats
from facecast.engines.contracts import ModelContract, Precision, check_contract
from facecast.engines.gate import Priority, PriorityGate
from facecast.models.replicas import MARK_KEY as REPLICA_MARK
from facecast.paths import user_cache_dir

log = logging.getLogger(__name__)

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
Device = Literal["auto", "tensorrt", "cuda", "torch", "cpu"]


class EngineConfig(StrictModel):
    device: Device = Field(
        "auto",
        description="auto = the fastest onnxruntime provider installed; tensorrt/cuda = required, error if missing; "
        "torch = the same ONNX files as PyTorch modules on CUDA (FP16, CUDA graphs), error if PyTorch has no CUDA",
    )
    fp16: bool = Field(True, description="TensorRT and torch in FP16 (the motion extractor always stays FP32)")
    allow_cpu_fallback: bool = Field(False, description="run on the CPU when device asks for a GPU that is not there")
    device_id: int = Field(0, ge=0, description="GPU number")
    cache_dir: Path | None = Field(None, description="TensorRT engine cache; null = the per-user cache folder")
    cuda_graph: bool = Field(False, description="replay CUDA graphs (fixed shapes; saves launch overhead)")
    warmup: bool = Field(True, description="run each model once at load so the first live frame does not stall")
    cpu_threads: int = Field(
        0, ge=0, description="onnxruntime CPU threads per model; 0 = the thread plan's share (threads.total - 1)"
    )


class EngineError(RuntimeError):
    """An engine cannot be created as configured; the message says what to do."""


def available_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise EngineError(
            'the neural effects need onnxruntime: pip install "facecast[cpu]" '
            '(NVIDIA GPU: "facecast[gpu]", or make gpu)'
        ) from exc

    return list(ort.get_available_providers())


def _trt_version() -> str:
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except Exception:
        return "none"


def _gpu_name(device_id: int) -> str:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(device_id))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return f"gpu{device_id}"


def model_digest(path: Path, cache: Path) -> str:
    """sha256 of a model file, remembered by (size, mtime) so big models are hashed once."""
    stat = path.stat()
    index_file = cache / "digests.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    if key not in index:
        digest = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        index[key] = digest.hexdigest()
        cache.mkdir(parents=True, exist_ok=True)
        index_file.write_text(json.dumps(index))
    return index[key]


def engine_cache_dir(cfg: EngineConfig, path: Path, precision: Precision) -> Path:
    """TensorRT engines are valid for one model, onnxruntime, TensorRT, GPU and precision only."""
    import onnxruntime as ort

    root = cfg.cache_dir or (user_cache_dir() / "trt-engines")
    gpu = "".join(c if c.isalnum() else "-" for c in _gpu_name(cfg.device_id))
    key = f"{path.stem}-{model_digest(path, root)[:16]}-ort{ort.__version__}-trt{_trt_version()}-{gpu}-{precision}"
    return root / key


def provider_chain(cfg: EngineConfig, path: Path, precision: Precision) -> list[Any]:
    available = available_providers()
    wanted = {"auto": [TRT, CUDA, CPU], "tensorrt": [TRT, CUDA, CPU], "cuda": [CUDA, CPU], "cpu": [CPU]}[cfg.device]
    if cfg.device in ("tensorrt", "cuda"):
        needed = TRT if cfg.device == "tensorrt" else CUDA
        if needed not in available and not cfg.allow_cpu_fallback:
            raise EngineError(
                f"engine.device is {cfg.device!r} but onnxruntime offers only {', '.join(available)}. "
                'Install the GPU build (docs/GPU.md: make gpu, or pip install "facecast[gpu]"), '
                "or set engine.device: cpu, "
                "or engine.allow_cpu_fallback: true to run on the CPU knowingly."
            )
    chain: list[Any] = []
    for name in wanted:
        if name not in available:
            continue
        if name == TRT:
            cache = engine_cache_dir(cfg, path, precision)
            cache.mkdir(parents=True, exist_ok=True)
            chain.append(
                (
                    TRT,
                    {
                        "device_id": cfg.device_id,
                        "trt_fp16_enable": cfg.fp16 and precision == "fp16",
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache),
                        "trt_timing_cache_enable": True,
                        "trt_timing_cache_path": str(cache.parent),
                        "trt_builder_optimization_level": 3,
                        "trt_cuda_graph_enable": cfg.cuda_graph,
                    },
                )
            )
        elif name == CUDA:
            chain.append((CUDA, {"device_id": cfg.device_id, "enable_cuda_graph": "0"}))
        else:
            chain.append(CPU)
    return chain


def _load_gpu_libraries(chain: list[Any]) -> None:
    """CUDA, cuDNN and TensorRT come as pip wheels (facecast[gpu]) that are not on the library path:
    load them before a GPU session is made, so the providers find them."""
    names = {p[0] if isinstance(p, tuple) else p for p in chain}
    if not names & {TRT, CUDA}:
        return
    import onnxruntime as ort

    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    if TRT in names:
        try:
            import tensorrt  # noqa: F401  (loads libnvinfer for the TensorRT provider)
        except ImportError:
            log.warning("the tensorrt package is not installed: the TensorRT provider may not find its libraries")


def _tensorrt_file(path: Path) -> Path:
    """The file the TensorRT provider builds: the rewritten copy from `facecast models optimize` when
    there is one. Without it, a model with nodes TensorRT cannot build (LivePortrait's 5-D GridSample)
    is split by onnxruntime into several engines with CUDA islands between them: say so."""
    from facecast.engines.optimize import TARGETS, trt_ready_path

    ready = trt_ready_path(path)
    if ready != path:
        log.info("%s: TensorRT builds the rewritten copy %s (one engine, no plugin)", path.name, ready.name)
    elif any(path.as_posix().endswith(t.file) for t in TARGETS):
        log.warning(
            "%s has 5-D GridSample nodes TensorRT cannot build: onnxruntime will split it into several "
            "TensorRT engines with CUDA islands between them (slower). Run: facecast models optimize",
            path.name,
        )
    return ready


_NP_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,  # CodeFormer's fidelity weight `w`
    "tensor(int64)": np.int64,
}


class OnnxEngine:
    """One loaded model. Thread-safe: the live path and the batch thread share it."""

    def __init__(
        self,
        contract: ModelContract,
        path: Path,
        cfg: EngineConfig,
        gate: PriorityGate,
        precision: Precision | None = None,
    ) -> None:
        import onnxruntime as ort

        self.contract = contract
        self.path = path
        self.precision: Precision = precision or ("fp32" if not cfg.fp16 else contract.precision)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if cfg.cpu_threads:
            options.intra_op_num_threads = cfg.cpu_threads
            options.inter_op_num_threads = 1
            # Idle onnxruntime workers spin by default, burning the cores OBS and the game need.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chain = provider_chain(cfg, path, self.precision)
        _load_gpu_libraries(chain)
        self.loaded_path = path
        if any(p[0] == TRT for p in chain if isinstance(p, tuple)):
            self.loaded_path = _tensorrt_file(path)
        try:
            self.session = ort.InferenceSession(str(self.loaded_path), sess_options=options, providers=chain)
        except Exception as exc:
            raise EngineError(f"{contract.file}: onnxruntime cannot load it ({exc})") from exc
        check_contract(contract, self.session.get_inputs(), self.session.get_outputs())
        self.providers = self.session.get_providers()
        if cfg.device in ("tensorrt", "cuda") and self.providers[0] == CPU and not cfg.allow_cpu_fallback:
            raise EngineError(f"{contract.file}: asked for {cfg.device} but the session runs on the CPU")
        self.on_gpu = self.providers[0] in (TRT, CUDA)
        if self.providers[0] != TRT:
            self.precision = "fp32"  # CUDA and CPU sessions run the FP32 graph as it is
        self.device_id = cfg.device_id
        self.gate = gate
        self._input_types = {a.name: _NP_TYPES.get(a.type, np.float32) for a in self.session.get_inputs()}
        self._output_names = [o.name for o in contract.outputs]
        self.call_stats = CallStats()
        self.transfers = TransferStats()
        # A full-size replica (random weights, `facecast models replicas`) says so in its metadata.
        self.replica: str | None = self.session.get_modelmeta().custom_metadata_map.get(REPLICA_MARK)
        log.info("engine %s: %s (%s)", contract.key, ", ".join(self.providers), self.precision)

    def upload(self, array: np.ndarray) -> Any:
        """A copy of `array` that stays where the model runs (an OrtValue on the GPU; the array itself
        on the CPU): bind it to every call instead of sending it again (per-character tensors)."""
        import onnxruntime as ort

        array = np.ascontiguousarray(array, dtype=np.float32)
        if not self.on_gpu:
            return array
        self.transfers.add(h2d=array.nbytes)
        return ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id)

    def run(
        self, feeds: dict[str, Any], priority: Priority = "live", keep_on_device: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        """Run the model. Inputs may be numpy arrays or values already on the device (`upload`, or an
        output kept there); outputs named in `keep_on_device` stay on the device (feed them to the next
        model without a round trip through the CPU)."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        h2d = d2h = 0
        for name, value in feeds.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                array = np.ascontiguousarray(value, dtype=self._input_types.get(name, np.float32))
                if self.on_gpu:
                    h2d += array.nbytes
                    binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", self.device_id))
                else:
                    binding.bind_cpu_input(name, array)
        for name in self._output_names:
            if self.on_gpu:
                binding.bind_output(name, "cuda", self.device_id)
            else:
                binding.bind_output(name)
        with self.gate.enter(priority):
            start = time.perf_counter()
            self.session.run_with_iobinding(binding)  # the only line that runs a model
            if not self.on_gpu:  # on the GPU the time is taken when the outputs are read back below
                self.call_stats.add((time.perf_counter() - start) * 1e3)
        values = binding.get_outputs()
        result: dict[str, Any] = {}
        for name, value in zip(self._output_names, values, strict=False):
            if name in keep_on_device and self.on_gpu:
                result[name] = value
            else:
                array = value.numpy()
                if self.on_gpu:
                    d2h += array.nbytes
                result[name] = array.astype(np.float32, copy=False)
        if self.on_gpu:
            self.call_stats.add((time.perf_counter() - start) * 1e3)
        self.transfers.add(h2d, d2h)
        return result

    def warmup(self) -> None:
        feeds = {s.name: np.zeros([d or 1 for d in s.shape], np.float32) for s in self.contract.inputs}
        self.run(feeds)


def default_device_note(providers: list[str]) -> str | None:
    """A plain warning when `auto` ends up on the CPU although this is a GPU-capable platform."""
    if providers and providers[0] == CPU and sys.platform != "darwin":
        return (
            "neural effects run on the CPU (onnxruntime offers no CUDA/TensorRT provider here); "
            "expect a few fps. NVIDIA users: see docs/GPU.md"
        )
    return None
