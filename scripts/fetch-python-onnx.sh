#!/usr/bin/env bash
# Puts the `onnx` Python package (PyPI, pinned) into .pydeps/ for the tests
# that check written models with onnx's own checker and shape inference
# (tests/onnx_check.py; run with PYTHONPATH=.pydeps). Needs python3 with
# pip. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=.pydeps
if PYTHONPATH="$DEST" python3 -c "import onnx" 2>/dev/null; then
  echo "onnx: $DEST already present" >&2
  exit 0
fi
python3 -m pip install --quiet --disable-pip-version-check --target "$DEST" "onnx==1.23.2" >&2
echo "onnx: installed into $DEST" >&2
