#!/usr/bin/env python3
"""Write tiny random-weight diffusers pipelines, one folder per pipeline class facecast runs.

Built from configs (nothing is downloaded); they load and run like real pipeline folders, so the
`generate` and `replace` jobs can be tried end to end offline on a CPU. Their output is noise:
they are plumbing fixtures, never models (each folder's facecast_tiny.json says so).

    python tools/make_tiny_pipelines.py DIR [--only NAME ...] [--seed N]
    facecast jobs submit generate --model DIR/wan --prompt "a dancer" --width 16 --height 16 \
        --frames 9 --steps 2 -o recordings/tiny.mp4
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from facecast.jobs.tiny import TINY, build


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="folder to write one sub-folder per pipeline into")
    parser.add_argument("--only", nargs="+", choices=list(TINY), metavar="NAME", help=f"some of: {', '.join(TINY)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in args.only or TINY:
        dest = args.dir / name
        if dest.exists():
            print(f"{dest} exists: remove it first or choose another folder", file=sys.stderr)
            return 2
        build(name, dest, args.seed)
        print(f"{dest}  ({TINY[name][2]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
