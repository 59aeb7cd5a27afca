"""The assets shipped inside the package (the default character, the synthetic driver's face).

They are package data, read through `importlib.resources`, so they are found wherever facecast is
installed (a checkout, a wheel in site-packages, a pipx venv) and never looked up relative to the
current folder. Nothing is ever written here: an installed package may be read-only and is
replaced on upgrade. Characters a user adds go to `facecast.paths.user_characters_dir()`.
"""

from __future__ import annotations

import shutil
import tempfile
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from facecast import __version__
from facecast.paths import user_cache_dir

PORTRAIT_NAME = "astronaut.png"


def _characters() -> Traversable:
    return resources.files(__name__) / "characters"


def bundled_characters_dir() -> Path:
    """The folder of the bundled characters, as a real path the character library can list.

    A normal install (wheel or checkout) keeps package data as plain files, so this is that folder.
    When the package is imported from an archive (a zip app), the files are copied once into the
    per-user cache, in a folder named after this version, and that copy is used.
    """
    folder = _characters()
    if isinstance(folder, Path):
        return folder
    target = user_cache_dir() / "bundled-assets" / __version__ / "characters"
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".characters-", dir=target.parent))
        for entry in folder.iterdir():
            if entry.is_file():
                with resources.as_file(entry) as path:
                    shutil.copyfile(path, staging / entry.name)
        try:
            staging.rename(target)  # atomic: a second process never sees half a folder
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process put it in place first
    return target


def default_portrait() -> Path:
    """The bundled portrait the synthetic driver moves and the default character shows."""
    path = bundled_characters_dir() / PORTRAIT_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"the bundled portrait {path} is missing: this facecast install is incomplete, reinstall it "
            "(pip install --force-reinstall facecast)"
        )
    return path


def __getattr__(name: str) -> Path:
    # Old names, kept for the code that imports them: resolved when first used, not at import.
    if name == "CHARACTERS_DIR":
        return bundled_characters_dir()
    if name == "DEFAULT_PORTRAIT":
        return default_portrait()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
