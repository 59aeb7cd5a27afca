"""The `jobs:` config section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from facecast.configbase import StrictModel
from facecast.paths import user_data_dir


class RayConfig(StrictModel):
    """Where and how jobs run with `jobs.executor: ray` (executors/ray.py, docs/SCALING.md)."""

    address: str = Field(
        "127.0.0.1:6379",
        pattern=r"^(auto|ray://[^\s/:]+:[0-9]+|[^\s/:]+:[0-9]+)$",
        description="the cluster's head: HOST:PORT (GCS, e.g. 127.0.0.1:6379), ray://HOST:10001 (Ray client) or auto",
    )
    max_parallel: int = Field(2, ge=1, le=256, description="jobs running on the cluster at once")
    cpus_per_job: float = Field(1.0, gt=0, description="CPUs a job that runs on the CPU requests")
    gpus_per_job: float = Field(1.0, gt=0, le=8, description="GPUs a job that runs on a GPU requests")
    resources: dict[str, float] = Field(
        default_factory=dict,
        description="extra Ray resources each job requests, e.g. {facecast: 1} to keep jobs on nodes started "
        "with --resources='{\"facecast\": 1}'",
    )
    shared_dir: Path | None = Field(
        None,
        description="a folder mounted at the same path on every node: inputs inside it are read there, not sent",
    )
    max_attempts: int = Field(3, ge=1, description="a job whose Ray worker died this many times fails")
    connect_timeout_s: float = Field(30.0, gt=0, description="how long connecting to the cluster may take")
    reconnect_s: float = Field(15.0, ge=1, description="after losing the cluster, try again this often")


class JobsConfig(StrictModel):
    enabled: bool = Field(True, description="run queued jobs in the daemon's batch thread")
    db: Path | None = Field(None, description="the job queue's SQLite file; null = per-user data folder")
    output_dirs: list[Path] = Field(
        default_factory=lambda: [Path("recordings")],
        description="job outputs must be inside one of these folders",
    )
    input_dirs: list[Path] = Field(
        default_factory=lambda: [Path("~")],
        description="files a job reads (images, videos) must be inside one of these folders; ~ = your home folder",
    )
    lease_s: float = Field(30.0, ge=2, description="a job whose worker is silent this long is run again")
    min_live_ratio: float = Field(
        0.9, gt=0, le=1, description="keep the live fps at this share of its rate without the job"
    )
    max_live_latency_ratio: float = Field(
        1.5,
        gt=1,
        le=10,
        description="batch work backs off when the live latency p50 passes this multiple of its value without jobs",
    )
    generate_model: Path | None = Field(None, description="default diffusers image-to-video pipeline folder")
    generate_model_dirs: list[Path] = Field(
        default_factory=list,
        description="folders besides models.dir whose pipelines a generate job may name with --model",
    )
    generate_device: Literal["auto", "cuda", "cpu"] = Field("auto", description="where diffusion runs")
    lora_dirs: list[Path] = Field(
        default_factory=list,
        description="folders of LoRA .safetensors files for generate --lora NAME; empty = loras inside models.dir",
    )
    executor: Literal["local", "ray"] = Field(
        "local", description="local = the daemon's batch thread; ray = a Ray cluster (jobs.ray, docs/SCALING.md)"
    )
    ray: RayConfig = Field(default_factory=RayConfig)

    def db_path(self) -> Path:
        return self.db if self.db is not None else user_data_dir() / "jobs.sqlite"
