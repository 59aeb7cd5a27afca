"""The `jobs:` config section."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from facecast.configbase import StrictModel
from facecast.paths import user_data_dir


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

    def db_path(self) -> Path:
        return self.db if self.db is not None else user_data_dir() / "jobs.sqlite"
