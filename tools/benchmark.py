#!/usr/bin/env python3
"""The benchmark, for people who look in tools/: the same as `facecast bench` (see docs/PERFORMANCE.md).

.venv/bin/python tools/benchmark.py --effect debug --frames 300 --json bench.json
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # works without `pip install -e .`

from facecast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
