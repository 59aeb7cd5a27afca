#!/usr/bin/env python3
"""Say whether each image can be a facecast character, and why not.

    tools/test_character.py PATH...      (same as: facecast character check PATH...)

Exit status 0 when every image is usable, 1 when one or more are refused.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("GLOG_minloglevel", "2")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    from facecast.cli import main as facecast

    return facecast(["character", "check", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
