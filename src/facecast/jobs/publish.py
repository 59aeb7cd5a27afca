"""Put a finished job's temporary file under its final name without ever replacing a file.

`os.replace` (what a recording or a render uses) silently overwrites whatever holds the name; a
job must not: the file may be another job's result, or something the user saved meanwhile. A hard
link is created only if the name is free, atomically, so the check and the publish cannot be
separated by another writer; the temporary name is then removed. Where the file system has no
hard links (FAT, exFAT, some network shares) the final name is created with O_EXCL and the
content copied in: still never a replacement, but the file is visible while it is copied.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


UMASK = umask()  # read once at import: os.umask is process-wide, changing it later would race


def publish_new(temp: Path, final: Path) -> os.stat_result:
    """Move `temp` to `final` only if `final` does not exist (FileExistsError otherwise, and `temp`
    is left as it was). Returns the published file's stat, to recognise it later."""
    os.chmod(temp, 0o666 & ~UMASK)  # mkstemp-style temporaries are 0600; a result is an ordinary file
    try:
        os.link(temp, final)  # FileExistsError when the name is taken: nothing changed
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        log.info("jobs: %s has no hard links; publishing %s by exclusive create and copy", final.parent, final.name)
        return _copy_exclusive(temp, final)
    published = os.stat(final)
    temp.unlink()
    return published


def _copy_exclusive(temp: Path, final: Path) -> os.stat_result:
    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as dst, temp.open("rb") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()
            os.fsync(dst.fileno())
    except BaseException:
        final.unlink(missing_ok=True)  # our own half copy: created by us with O_EXCL
        raise
    published = os.stat(final)
    temp.unlink()
    return published


def is_same_file(path: Path, published: os.stat_result) -> bool:
    """Is `path` still the file we published (not replaced by someone else since)?"""
    try:
        now = os.stat(path)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (published.st_dev, published.st_ino)
