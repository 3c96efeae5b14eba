#!/usr/bin/env bash
# Packs what the GPU check needs beside the working tree into .gpu/, xz
# compressed so it fits the device tool's 64 MiB carry: the stripped `cuda`
# binary (80 MB → ~12 MB) and the ONNX Runtime CPU library (and the GPU one
# when .ort-gpu/ exists and fits). Then, in one device call:
#   carry [".gpu"], command: bash scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x target/cuda/release/sss-onnx ] || { echo "run scripts/build-cuda.sh first" >&2; exit 2; }
rm -rf .gpu && mkdir -p .gpu/ort .gpu/ort-gpu
strip -o .gpu/sss-onnx target/cuda/release/sss-onnx
xz -T0 -6 .gpu/sss-onnx
for f in .ort/libonnxruntime.so.* .ort/libonnxruntime_providers_shared.so; do
    xz -T0 -6 -c "$f" > ".gpu/ort/$(basename "$f").xz"
done
if [ -d .ort-gpu ]; then
    for f in .ort-gpu/libonnxruntime*.so*; do
        [ -L "$f" ] || xz -T0 -6 -c "$f" > ".gpu/ort-gpu/$(basename "$f").xz"
    done
fi
du -sh .gpu .gpu/* >&2
