#!/usr/bin/env bash
# Puts the ONNX Runtime C library (1.32.0, CPU) into .ort/ in the project.
# It comes from the PyPI wheel `onnxruntime==1.32.0`: pip downloads the wheel
# (no install) and one file is unzipped from it. Needs python3 with pip and
# unzip or python3's zipfile. Idempotent: does nothing when the file exists.
#   GPU build (CUDA execution provider, `--ep cuda`), into .ort-gpu/:
#   scripts/fetch-onnxruntime.sh --gpu     (then ORT_DYLIB_PATH=.ort-gpu/libonnxruntime.so)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--gpu" ]; then
  VERSION="${ORT_VERSION:-1.31.1}"
  PACKAGE=onnxruntime-gpu
  DEST="${ORT_DEST:-.ort-gpu}"
else
  VERSION="${ORT_VERSION:-1.32.0}"
  PACKAGE="${ORT_PACKAGE:-onnxruntime}"
  DEST="${ORT_DEST:-.ort}"
fi
LIB="libonnxruntime.so.${VERSION}"
if [ -f "$DEST/$LIB" ]; then
  echo "onnxruntime: $DEST/$LIB already present" >&2
  exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 \
  -d "$tmp" "${PACKAGE}==${VERSION}" >&2
wheel="$(ls "$tmp"/*.whl)"
mkdir -p "$DEST"
python3 - "$wheel" "$DEST" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if "/capi/libonnxruntime" in n and ".so" in n]
    if not names:
        sys.exit(f"no libonnxruntime in {wheel}")
    for n in names:
        out = os.path.join(dest, os.path.basename(n))
        with z.open(n) as src, open(out + ".part", "wb") as dst:
            dst.write(src.read())
        os.replace(out + ".part", out)
        print(f"onnxruntime: wrote {out}", file=sys.stderr)
PY
ln -sf "$LIB" "$DEST/libonnxruntime.so"
