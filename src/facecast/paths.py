"""Per-user folders: model weights and added characters (data), engine caches (cache).

facecast writes only here (or where the config says), never into its installed package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def user_data_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "facecast"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "facecast"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "facecast"


def user_cache_dir() -> Path:
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "facecast" / "cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "facecast"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "facecast"


def user_characters_dir() -> Path:
    """Where characters added through the control API go; read together with the bundled ones."""
    return user_data_dir() / "characters"
