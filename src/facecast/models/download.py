"""Resumable, verified, atomic downloads of model files."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from facecast.models.registry import ModelFile

CHUNK = 1 << 20
Progress = Callable[[int, int | None], None]  # (bytes so far, total bytes or None)


class DownloadError(RuntimeError):
    pass


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def status(file: ModelFile, root: Path, verify: bool = False) -> str:
    """'missing', 'present', 'verified', or what is wrong with the file."""
    path = root / file.path
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if file.size is not None and size != file.size:
        return f"wrong size ({size} bytes, expected {file.size})"
    if not verify:
        return "present"
    got = sha256_of(path)
    return "verified" if got == file.sha256 else f"checksum mismatch (sha256 {got})"


def download(file: ModelFile, root: Path, progress: Progress | None = None, timeout: float = 30.0) -> Path:
    """Fetch `file` into root/file.path. Resumes a previous partial download; the final name only
    ever holds a complete file whose sha256 matched."""
    dest = root / file.path
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and sha256_of(dest) == file.sha256:
        return dest
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(file.url, headers={"User-Agent": "facecast-model-downloader"})
    if start:
        request.add_header("Range", f"bytes={start}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:  # the partial file is already complete
            response = None
        else:
            raise DownloadError(f"{file.url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"{file.url}: {getattr(exc, 'reason', exc)}") from exc
    if response is not None:
        with response:
            if start and response.status != 206:
                start = 0  # the server ignored the range: start over
            length = response.headers.get("Content-Length")
            total = start + int(length) if length is not None else file.size
            done = start
            with part.open("ab" if start else "wb") as out:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    out.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)
                out.flush()
                os.fsync(out.fileno())
    size = part.stat().st_size
    if file.size is not None and size != file.size:
        if size > file.size:
            part.unlink()
        raise DownloadError(
            f"{dest.name}: got {size} bytes, expected {file.size}"
            + ("; run the command again to resume" if size < file.size else "; removed it")
        )
    got = sha256_of(part)
    if got != file.sha256:
        part.unlink()
        raise DownloadError(f"{dest.name}: checksum mismatch (sha256 {got}, expected {file.sha256}); removed it")
    os.replace(part, dest)  # atomic: same folder
    return dest
