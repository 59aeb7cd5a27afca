#!/usr/bin/env bash
# One prepared measurement run on a borrowed GPU machine (see tools/gpu_check.py for what it measures):
#
#   tools/gpu_check.sh [--frames N] [--json FILE] [--budget-s S] [--dry-run]
#
# Expects the machine as it comes: Python 3.12 with PyTorch (CUDA), onnx, onnxruntime (the CPU build is
# enough), opencv-python-headless, numpy, PyYAML; no network. What it lacks travels as wheels in
# tools/wheels/ (never committed), installed here into a scratch folder when an import is missing:
#   mimic_head-0.1.5-py3-none-any.whl       LivePortrait's network code, builds the LivePortrait replicas
#   pydantic-2.*-py3-none-any.whl, pydantic_core-2.*-cp312-*manylinux*_x86_64.whl,
#   annotated_types-*.whl, typing_inspection-*.whl, typing_extensions-*.whl   facecast's config models
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
if ! "$py" -c "import mimic_head, pydantic" 2>/dev/null; then
  if compgen -G "$repo/tools/wheels/*.whl" >/dev/null; then
    site="${TMPDIR:-/tmp}/facecast-gpu-check-site"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
      "$repo"/tools/wheels/*.whl
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "gpu_check: mimic_head or pydantic is missing and tools/wheels/ holds no wheels (see the top of $0)" >&2
  fi
fi
export PYTHONPATH="$repo/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$py" "$repo/tools/gpu_check.py" "$@"
