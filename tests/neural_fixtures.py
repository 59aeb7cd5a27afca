"""Access to tools/make_test_models.py (small ONNX test fixtures with the real contracts)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("make_test_models", REPO / "tools" / "make_test_models.py")
make_test_models = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_test_models)  # type: ignore[union-attr]
make_models = make_test_models.make_models
