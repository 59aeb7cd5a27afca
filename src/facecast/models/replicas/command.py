"""`facecast models replicas DIR`: write every full-size replica and compare it with the published model."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from facecast.models.replicas import PARTS, ReplicaReport, cached_reports, ensure_replicas, part_files


def format_reports(reports: list[ReplicaReport]) -> str:
    lines = [f"{'file':<52} {'params M':>9} {'published':>9} {'diff':>7} {'GFLOPs':>8} {'published':>9}"]
    for r in reports:
        pub = f"{r.published_params / 1e6:.3f}" if r.published_params else "-"
        difference = r.params_difference()
        diff = "-" if difference is None else f"{difference:+.2%}"
        gpub = f"{r.published_gflops:.1f}" if r.published_gflops else "-"
        lines.append(f"{r.file:<52} {r.params / 1e6:>9.3f} {pub:>9} {diff:>7} {r.gflops:>8.1f} {gpub:>9}")
    notes = sorted({r.note for r in reports if r.note})
    notes.append(
        "diff: beyond the rounding of the published figure (the LivePortrait paper gives millions to 2 decimals);"
        " GFLOPs = 2 x multiply-accumulates of Conv/Gemm/MatMul per call"
    )
    lines += [f"  note: {n}" for n in notes]
    lines.append(
        "These are replicas: real architectures (inswapper: its contract, size and cost) with random weights."
        " Use them to test and benchmark (facecast bench --replicas); they animate nothing."
    )
    return "\n".join(lines)


def _place(source: Path, target: Path) -> None:
    """A hard link where the file system allows it (replicas are hundreds of MB), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.partial")
    tmp.unlink(missing_ok=True)
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    tmp.replace(target)


def run(out_dir: Path, seed: int, parts: tuple[str, ...] = PARTS) -> int:
    """Build the replicas once into the per-user cache (later runs and `bench --replicas` reuse them),
    then place them in out_dir."""
    start = time.perf_counter()
    try:
        cache = ensure_replicas(seed, parts, log=lambda line: print(line, file=sys.stderr))
    except RuntimeError as exc:  # torch or mimic-head missing: the message says what to install
        print(f"facecast models replicas: {exc}", file=sys.stderr)
        return 2
    for name in part_files(parts):
        _place(cache / name, Path(out_dir) / name)
    print(format_reports(cached_reports(cache, parts)))
    print(
        f"written to {out_dir} in {time.perf_counter() - start:.0f} s"
        f" (point models.dir there, or use facecast bench --replicas)"
    )
    return 0
