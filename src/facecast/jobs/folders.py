"""Paths a client gives (job inputs, model folders) must lie inside folders the config allows.

The control API answers every program and every web page on this computer, so a job must not
become a way to read an arbitrary file, or to learn whether one exists: a path is resolved
(symbolic links followed, `..` removed) and compared with the allowed folders before anything
looks at the file, and a path outside them gets the same answer as a missing one.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from facecast.jobs.runner import JobRejected


class AllowedFolders:
    """One kind of client path (job inputs, diffusion model folders) and the folders it may be in."""

    def __init__(self, roots: Iterable[Path], config_keys: str) -> None:
        self.roots = list(dict.fromkeys(Path(r).expanduser().resolve() for r in roots))
        self.config_keys = config_keys  # named in the refusal, so the user knows what to change

    def where(self) -> str:
        return f"{', '.join(map(str, self.roots)) or 'no folder is allowed'}; {self.config_keys}"

    def inside(self, path: str | Path) -> Path | None:
        """The resolved path if it lies inside an allowed folder, else None (nothing is opened)."""
        try:
            resolved = Path(path).expanduser().resolve()
        except (OSError, ValueError, RuntimeError):  # NUL bytes, symlink loops, names too long...
            return None
        return resolved if any(resolved.is_relative_to(root) for root in self.roots) else None

    def file(self, path: str | Path, what: str) -> Path:
        """An existing regular file inside the folders, or JobRejected with one message for
        missing, not a file and outside alike."""
        resolved = self.inside(path) if str(path).strip() else None
        if resolved is None or not _is(resolved, Path.is_file):
            raise JobRejected(f"{what} {path}: no such file in the allowed folders ({self.where()})")
        return resolved

    def folder(self, path: str | Path, what: str) -> Path:
        """An existing folder inside the allowed folders (same single message otherwise)."""
        resolved = self.inside(path) if str(path).strip() else None
        if resolved is None or not _is(resolved, Path.is_dir):
            raise JobRejected(f"{what} {path}: no such folder in the allowed folders ({self.where()})")
        return resolved


def _is(path: Path, test) -> bool:
    try:
        return test(path)
    except OSError:  # a folder we may not enter: as good as missing
        return False
