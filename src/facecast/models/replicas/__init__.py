"""Full-size replicas of the models the neural effects run: the real architectures (or, for
inswapper, whose architecture is not public, its contract, size and cost) with seeded random
weights, under the published file and tensor names.

They are test and benchmark material, never models: every file carries the `facecast.replica`
metadata mark, and the effects log a warning when they run on one. Built with PyTorch (the
`replicas` extra: torch, mimic-head for LivePortrait's own network code).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MARK_KEY = "facecast.replica"
# Bumped whenever a replica's architecture or export changes, so cached replicas are rebuilt.
REPLICA_VERSION = 4
DEFAULT_SEED = 0


@dataclass(frozen=True, slots=True)
class ReplicaReport:
    """One written replica and how it compares with the published model."""

    file: str  # path under the models folder, as models.dir expects it
    params: int
    gflops: float  # 2 x multiply-accumulates of one call, at the contract's shapes
    published_params: int | None
    published_gflops: float | None
    note: str = ""
    # The published parameter count is rounded to this many millions (the LivePortrait paper gives
    # 0.84 M: anything from 0.835 to 0.845 M is that figure); differences inside it are not differences.
    published_rounding: float = 0.0

    def params_difference(self) -> float | None:
        """Relative difference to the published count beyond its rounding (0.0 = matches it)."""
        if not self.published_params:
            return None
        beyond = max(0.0, abs(self.params - self.published_params) - self.published_rounding * 1e6 / 2)
        return beyond / self.published_params * (1 if self.params >= self.published_params else -1)


def mark_replica(model, description: str, seed: int) -> None:
    """Stamp an onnx.ModelProto as a replica (read back by `replica_note`)."""
    entry = model.metadata_props.add()
    entry.key = MARK_KEY
    entry.value = json.dumps(
        {
            "description": description,
            "seed": seed,
            "version": REPLICA_VERSION,
            "note": "random weights: test and benchmark material, not a model",
        }
    )


def replica_note(path: Path) -> str | None:
    """The replica mark of an ONNX file, or None for a real model (weights are not read)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None
    for prop in model.metadata_props:
        if prop.key == MARK_KEY:
            return prop.value
    return None


def replicas_cache_dir(seed: int = DEFAULT_SEED) -> Path:
    from facecast.paths import user_cache_dir

    root = Path(os.environ.get("FACECAST_REPLICAS_DIR") or user_cache_dir() / "replicas")
    return root / f"v{REPLICA_VERSION}-seed{seed}"


PARTS = ("liveportrait", "insightface")  # module names under facecast.models.replicas
_PART_FILES = {
    "liveportrait": [
        f"liveportrait_onnx/{n}.onnx"
        for n in (
            "appearance_feature_extractor",
            "motion_extractor",
            "warping_spade",
            "stitching",
            "stitching_eye",
            "stitching_lip",
        )
    ],
    "insightface": ["inswapper_128.onnx", "w600k_r50.onnx"],
}


def build_replicas(
    out_dir: Path, seed: int = DEFAULT_SEED, parts: tuple[str, ...] = PARTS, log=print
) -> list[ReplicaReport]:
    """Write every replica of `parts` into out_dir, laid out as models.dir expects."""
    import importlib

    reports: list[ReplicaReport] = []
    for part in parts:
        reports += importlib.import_module(f"facecast.models.replicas.{part}").build(Path(out_dir), seed, log=log)
    return reports


def ensure_replicas(seed: int = DEFAULT_SEED, parts: tuple[str, ...] = PARTS, log=print) -> Path:
    """The cached replicas folder, built once (a lock file keeps concurrent builders apart; a stamp per
    part marks a complete build, so an interrupted build is redone)."""
    import torch

    folder = replicas_cache_dir(seed) / f"torch{torch.__version__.split('+')[0]}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as lock:
        _lock(lock)
        for part in parts:
            stamp = folder / f".{part}.done"
            if stamp.exists() and all((folder / f).is_file() for f in _PART_FILES[part]):
                continue
            log(f"building full-size {part} replicas in {folder} (once)")
            reports = build_replicas(folder, seed, (part,), log=log)
            stamp.write_text(json.dumps([asdict(r) for r in reports]))
        _unlock(lock)
    return folder


def cached_reports(folder: Path, parts: tuple[str, ...] = PARTS) -> list[ReplicaReport]:
    """The reports written when the cached replicas in `folder` were built."""
    reports = []
    for part in parts:
        reports += [ReplicaReport(**r) for r in json.loads((folder / f".{part}.done").read_text())]
    return reports


def part_files(parts: tuple[str, ...] = PARTS) -> list[str]:
    return [f for part in parts for f in _PART_FILES[part]]


def _lock(file) -> None:
    if sys.platform == "win32":  # msvcrt locks a byte range instead
        import msvcrt

        msvcrt.locking(file.fileno(), msvcrt.LK_LOCK, 1)
    else:
        import fcntl

        fcntl.flock(file, fcntl.LOCK_EX)


def _unlock(file) -> None:
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(file.fileno(), msvcrt.LK_UNLCK, 1)
    else:
        import fcntl

        fcntl.flock(file, fcntl.LOCK_UN)
