"""`facecast models list | download NAME... | verify [NAME...] | optimize`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from facecast.models.download import DownloadError, download, status
from facecast.models.registry import MODEL_SETS, PLACED_BY_HAND, ModelFile, ModelSet, find


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, help="models folder (default: models.dir from the config)")
    sub = parser.add_subparsers(dest="models_command", required=True)
    sub.add_parser("list", help="every model file, what it is for, and whether it is here")
    dl = sub.add_parser("download", help="download model files (resumable, sha256-verified)")
    dl.add_argument("names", nargs="+", metavar="NAME", help="a set (liveportrait, inswapper) or a file")
    dl.add_argument("--accept-licence", action="store_true", help="accept the models' licence without asking")
    verify = sub.add_parser("verify", help="check the sha256 of the model files that are here")
    verify.add_argument("names", nargs="*", metavar="NAME", help="sets or files (default: all)")
    replicas = sub.add_parser(
        "replicas",
        help="write full-size replicas (real architectures, random weights) of every neural model, "
        "for tests and benchmarks; prints their size and cost next to the published figures",
    )
    replicas.add_argument("out_dir", type=Path, metavar="DIR", help="folder to write into (laid out as models.dir)")
    replicas.add_argument("--seed", type=int, default=0, help="random seed of the weights (default 0)")
    optimize = sub.add_parser(
        "optimize",
        help="write TensorRT-ready copies (NAME.trt.onnx) of the models that need a graph rewrite, "
        "checked against onnxruntime on the CPU",
    )
    optimize.add_argument(
        "--models-dir", type=Path, help="models folder (default: --dir, else models.dir from the config)"
    )


def _human(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.0f} MiB"


class _Bar:
    """One self-rewriting progress line on stderr."""

    def __init__(self, label: str) -> None:
        self.label, self.last = label, 0.0

    def __call__(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if now - self.last < 0.2 and done != total:
            return
        self.last = now
        if total:
            width = 30
            filled = int(width * done / total)
            bar = "#" * filled + "." * (width - filled)
            line = f"{self.label} [{bar}] {done / total:6.1%} {_human(done)}/{_human(total)}"
        else:
            line = f"{self.label} {_human(done)}"
        print("\r" + line, end="", file=sys.stderr, flush=True)


def _selected(names: list[str]) -> list[tuple[ModelSet, ModelFile]]:
    if not names:
        return [(s, f) for s in MODEL_SETS.values() for f in s.files]
    out = []
    for name in names:
        out += [pair for pair in find(name) if pair not in out]
    return out


def _accepts(sets: list[ModelSet], accept_flag: bool) -> bool:
    needing = [s for s in sets if s.non_commercial]
    if not needing or accept_flag:
        return True
    for s in needing:
        print(f"\nLicence for {s.name}:\n  {s.licence}\n", file=sys.stderr)
    if not sys.stdin.isatty():
        print("not downloading: accept the licence with --accept-licence", file=sys.stderr)
        return False
    answer = input("Type 'yes' to accept this licence and download: ").strip().lower()
    return answer == "yes"


def _optimize(root: Path) -> int:
    from facecast.engines.optimize import optimize_models

    failed = 0
    for r in optimize_models(root):
        took = f"{r.seconds:.1f} s"
        if r.status == "written":
            print(
                f"{r.file}: rewrote {len(r.rewritten)} 5-D GridSample ({', '.join(r.rewritten)}) -> {r.written}, "
                f"max abs diff {r.max_abs_diff:.2g} vs onnxruntime, {took}"
            )
        elif r.status == "missing":
            print(f"{r.file}: not here ({r.source}); nothing to optimize")
        elif r.status == "unchanged":
            print(f"{r.file}: nothing to rewrite ({r.detail}), {took}")
        else:
            failed += 1
            print(f"{r.file}: FAILED: {r.detail}, {took}")
    return 1 if failed else 0


def run_models(args: argparse.Namespace, models_dir: Path) -> int:
    root = args.dir or models_dir
    if args.models_command == "replicas":
        from facecast.models.replicas.command import run as write_replicas

        return write_replicas(args.out_dir, args.seed)
    if args.models_command == "optimize":
        return _optimize(args.models_dir or root)
    try:
        pairs = _selected(getattr(args, "names", []) or [])
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    if args.models_command == "list":
        print(f"models folder: {root}")
        for s in MODEL_SETS.values():
            tag = "  [NON-COMMERCIAL licence]" if s.non_commercial else ""
            print(f"\n{s.name}: {s.used_by}{tag}")
            for f in s.files:
                print(f"  {f.path:45s} {_human(f.size):>9s}  {status(f, root)}")
        print("\ndownload with: facecast models download liveportrait | inswapper")
        print("\nface enhancers (effect.swap.enhance.model): placed in the models folder by you, not downloaded")
        for m in PLACED_BY_HAND.values():
            here = "present" if (root / m.path).is_file() else "missing"
            print(f"  {m.path:45s} {here:>9s}  {m.licence}")
            print(f"  {'':45s} {'':>9s}  from: {m.source}")
        return 0
    if args.models_command == "verify":
        bad = 0
        for _, f in pairs:
            state = status(f, root, verify=True)
            if state not in ("verified", "missing"):
                bad += 1
            print(f"{f.path:45s} {state}")
        return 1 if bad else 0
    sets = list(dict.fromkeys(s for s, _ in pairs))
    if not _accepts(sets, args.accept_licence):
        return 1
    for s in sets:
        if not s.non_commercial:
            print(f"{s.name}: {s.licence}", file=sys.stderr)
    failed = 0
    for _, f in pairs:
        try:
            path = download(f, root, _Bar(Path(f.path).name))
            print(f"\r{f.path}: ok ({path})" + " " * 20, file=sys.stderr)
        except DownloadError as exc:
            failed += 1
            print(f"\r{f.path}: FAILED: {exc}", file=sys.stderr)
    return 1 if failed else 0
