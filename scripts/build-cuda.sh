#!/usr/bin/env bash
# Builds the `cuda` binary (candle training on CUDA) on a machine with no
# CUDA installed, e.g. this project's CPU build machine, for a GPU machine
# that has the NVIDIA driver and the CUDA 13 libraries but no network:
#   - nvcc, headers and libcudart come from NVIDIA's PyPI wheels (pinned to
#     the CUDA release the target driver supports: candle's kernels are PTX
#     that the driver compiles, and a driver rejects newer PTX);
#   - the driver and the libraries candle links (cuda, nvrtc, curand,
#     cublas, cublasLt) are linked against generated stubs: empty functions
#     under the real names and sonames, so the binary loads the real ones
#     on the GPU machine (as NVIDIA's own lib64/stubs do).
# Output: target/cuda/release/sss-onnx. Nothing is installed outside .cuda/.
#
#   scripts/build-cuda.sh                  # CUDA 13.0, compute capability 90 (H100/H200)
#   CUDA_VER=12.8 CUDA_COMPUTE_CAP=80 scripts/build-cuda.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_VER=${CUDA_VER:-13.0}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
major=${CUDA_VER%%.*}
root=$PWD/.cuda
tk=$root/nvidia/cu$major
if [ "$major" = 12 ]; then sfx=-cu12; else sfx=; fi

if [ ! -x "$tk/bin/nvcc" ]; then
    echo "fetching the CUDA $CUDA_VER compiler from PyPI into .cuda/" >&2
    mkdir -p "$root/wheels"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
        -d "$root/wheels" \
        "nvidia-cuda-nvcc$sfx==$CUDA_VER.*" "nvidia-cuda-runtime$sfx==$CUDA_VER.*" \
        "nvidia-cuda-crt$sfx==$CUDA_VER.*" "nvidia-cuda-cccl$sfx==$CUDA_VER.*" \
        "nvidia-nvvm$sfx==$CUDA_VER.*"
    for w in "$root"/wheels/*.whl; do python3 -m zipfile -e "$w" "$root"; done
    chmod +x "$tk"/bin/* "$tk"/nvvm/bin/*
fi
"$tk/bin/nvcc" --version | tail -1 >&2

# link stubs, named after the functions cudarc declares
stubs=$tk/lib/stubs
if [ ! -f "$stubs/libcuda.so" ]; then
    mkdir -p "$stubs"
    src=$(cargo metadata --format-version 1 --features cuda |
        python3 -c 'import json,sys; m=json.load(sys.stdin); print([p for p in m["packages"] if p["name"]=="cudarc"][0]["manifest_path"].rsplit("/",1)[0])')
    python3 - "$src/src" "$stubs" "$major" <<'PY'
import re, subprocess, sys
src, out, major = sys.argv[1:]
# library (as cudarc's build links it), cudarc's binding module, soname
libs = [("cuda", "driver", "libcuda.so.1"), ("nvrtc", "nvrtc", f"libnvrtc.so.{major}"),
        ("curand", "curand", "libcurand.so.10"), ("cublas", "cublas", f"libcublas.so.{major}"),
        ("cublasLt", "cublaslt", f"libcublasLt.so.{major}")]
for lib, module, soname in libs:
    text = open(f"{src}/{module}/sys/mod.rs").read()
    names = sorted(set(re.findall(r'extern "C" \{\s*(?:pub )?fn (\w+)\(', text)))
    c = f"{out}/{lib}.c"
    open(c, "w").write("".join(f"void {n}(void) {{}}\n" for n in names))
    subprocess.run(["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname}", "-o", f"{out}/lib{lib}.so", c], check=True)
    print(f"stub lib{lib}.so ({soname}): {len(names)} functions", file=sys.stderr)
PY
fi
ln -sf "libcudart.so.$major" "$tk/lib/libcudart.so"

export CUDA_HOME=$tk PATH=$tk/bin:$PATH
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$stubs -L native=$tk/lib"
cargo build --release --features cuda --target-dir target/cuda
echo "built target/cuda/release/sss-onnx (CUDA $CUDA_VER, sm_$CUDA_COMPUTE_CAP); it needs on the GPU machine:" >&2
readelf -d target/cuda/release/sss-onnx | grep NEEDED >&2
