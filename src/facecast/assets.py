"""Where the bundled assets (default character, synthetic driver face) live."""

from __future__ import annotations

import os
from pathlib import Path

# src/facecast/assets.py -> the checkout's assets/ folder. FACECAST_ASSETS overrides it.
ASSETS_DIR = Path(os.environ.get("FACECAST_ASSETS", Path(__file__).resolve().parents[2] / "assets"))
CHARACTERS_DIR = ASSETS_DIR / "characters"
DEFAULT_PORTRAIT = CHARACTERS_DIR / "astronaut.png"


def default_portrait() -> Path:
    if not DEFAULT_PORTRAIT.is_file():
        raise FileNotFoundError(
            f"the bundled portrait {DEFAULT_PORTRAIT} is missing: run facecast from its checkout "
            "or set FACECAST_ASSETS to the folder that holds characters/astronaut.png"
        )
    return DEFAULT_PORTRAIT
