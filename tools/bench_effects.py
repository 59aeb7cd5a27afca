#!/usr/bin/env python3
"""Per-frame cost of the CPU effects (animate/mesh at 512x512, swap/mesh on 1280x720 with one face).

    .venv/bin/python tools/bench_effects.py [--frames 300]

Tracking runs once up front on synthetic driver frames; only the effect's apply() is timed, so the
numbers are the effect's own share of the frame budget (median and p95, milliseconds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()

    from facecast.assets import CHARACTERS_DIR
    from facecast.capture.synthetic import SyntheticConfig, SyntheticReader
    from facecast.characters import CharacterLibrary
    from facecast.effects.animate_mesh import AnimateMesh, AnimateMeshConfig
    from facecast.effects.swap_mesh import SwapMesh, SwapMeshConfig
    from facecast.tracking.face_mesh import FaceTracker, TrackingConfig
    from facecast.types import FramePacket

    library = CharacterLibrary(CHARACTERS_DIR)
    library.load_all()
    for label, width, height, effect in (
        ("animate/mesh 512x512 (driver 640x480)", 640, 480, AnimateMesh(AnimateMeshConfig(), library)),
        ("swap/mesh 1280x720, 1 face", 1280, 720, SwapMesh(SwapMeshConfig(), library)),
    ):
        reader = SyntheticReader(SyntheticConfig(), width, height, 60.0)
        reader.open()
        tracker = FaceTracker(TrackingConfig())
        packets = []
        for i in range(min(args.frames, 120)):
            image = reader.render(i).image
            packets.append(
                FramePacket(seq=i, image=image, t_capture_ns=int(i / 60 * 1e9), faces=tracker.detect(image, i / 60))
            )
        tracker.close()
        effect.start()
        times = []
        for i in range(args.frames):
            p = packets[i % len(packets)]
            p.t_capture_ns = int(i / 60 * 1e9)
            t0 = time.perf_counter()
            effect.apply(p)
            times.append((time.perf_counter() - t0) * 1000)
        t = np.array(times[10:])
        print(f"{label}: median {np.median(t):.2f} ms, p95 {np.percentile(t, 95):.2f} ms per frame ({len(t)} frames)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
