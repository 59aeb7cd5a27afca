"""Per-user folders: model weights (data) and engine caches (cache)."""

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
