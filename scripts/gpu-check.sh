#!/usr/bin/env bash
# The GPU check, in one call of the device tool (a few minutes). Prepare here:
#   scripts/build-cuda.sh && scripts/fetch-onnxruntime.sh
#   [scripts/fetch-onnxruntime.sh --gpu]   # the CUDA EP, if it fits the carry
#   scripts/pack-gpu.sh                    # → .gpu/ (xz, fits 64 MiB)
# then on the GPU machine, carrying .gpu:
#   bash scripts/gpu-check.sh
# It prints the GPU, runs `compress` with training on CUDA (and validation on
# ORT's CUDA EP when a GPU build of ONNX Runtime is there), runs the same
# compress on the CPU with the same seed and compares the pruned structures,
# and prints training images/s and ORT latencies GPU vs CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
model=fixtures/resnet20_fmnist.legacy13.onnx
# unpack what scripts/pack-gpu.sh packed
if [ -f .gpu/sss-onnx.xz ]; then
    u=/tmp/sss-gpu; mkdir -p $u/ort $u/ort-gpu
    xz -dc .gpu/sss-onnx.xz > $u/sss-onnx && chmod +x $u/sss-onnx
    for d in ort ort-gpu; do for f in .gpu/$d/*.xz; do
        [ -f "$f" ] && xz -dc "$f" > "$u/$d/$(basename "${f%.xz}")"; done; done
    for d in ort ort-gpu; do l=$(ls $u/$d/libonnxruntime.so.* 2>/dev/null | head -1)
        [ -n "$l" ] && ln -sf "$l" $u/$d/libonnxruntime.so; done
    bin=$u/sss-onnx; cpu_ort=$u/ort/libonnxruntime.so; gpu_ort=$u/ort-gpu/libonnxruntime.so
else
    bin=${SSS_BIN:-target/cuda/release/sss-onnx}
    cpu_ort=$PWD/.ort/libonnxruntime.so; gpu_ort=$PWD/.ort-gpu/libonnxruntime.so
fi
log() { echo "== $*" | tee -a "$out/summary.txt"; }

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/gpu.txt"
# CUDA 13 libraries: the system's, else the ones Python packages carry
libs=$(python3 - <<'PY' 2>/dev/null
import glob, site, os
dirs = set()
for s in site.getsitepackages():
    for p in glob.glob(f"{s}/nvidia/**/lib*.so*", recursive=True):
        dirs.add(os.path.dirname(p))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
if ! ldd "$bin" | grep -q "not found"; then log "binary: every library found"; else
    log "binary: missing libraries"; ldd "$bin" | grep "not found"; exit 1; fi

ep=cpu
if [ -f "$gpu_ort" ]; then
    if ORT_DYLIB_PATH=$gpu_ort "$bin" validate "$model" "$model" --ep cuda >/dev/null 2>"$out/ep.err"; then
        ep=cuda; log "ONNX Runtime CUDA EP: available"
    else log "ONNX Runtime CUDA EP: failed to start: $(tail -1 "$out/ep.err")"; fi
else log "ONNX Runtime CUDA EP: no GPU build carried (.ort-gpu); validation on the CPU EP"; fi
ort_for() { if [ "$1" = cuda ]; then echo "$gpu_ort"; else echo "$cpu_ort"; fi; }

log "training images/s, ResNet-20 batch 128, 60 steps: CUDA, then CPU"
for d in cuda cpu; do
    ORT_DYLIB_PATH=$cpu_ort "$bin" train "$model" --data fixtures/fmnist --gate --steps 60 --log-every 20 \
        --device $d -o "$out/train-$d.onnx" 2>&1 | grep -E "^(device|step +60)" | tee -a "$out/summary.txt"
done
log "compress, training on CUDA, validation on the $ep EP"
ORT_DYLIB_PATH=$(ort_for $ep) "$bin" compress "$model" --device cuda --ep $ep --seed 0 \
    -o "$out/gpu.sss.onnx" --json > "$out/gpu.json" 2> "$out/gpu.err"
echo "exit $?" | tee -a "$out/summary.txt"; tail -4 "$out/gpu.err"
log "compress, training on the CPU (same seed)"
ORT_DYLIB_PATH=$(ort_for cpu) "$bin" compress "$model" --device cpu --seed 0 \
    -o "$out/cpu.sss.onnx" --json > "$out/cpu.json" 2> "$out/cpu.err"
echo "exit $?" | tee -a "$out/summary.txt"
python3 - "$out" <<'PY' | tee -a "$out/summary.txt"
import json, sys
o = sys.argv[1]
r = {k: json.load(open(f"{o}/{k}.json")) for k in ("gpu", "cpu")}
for k, v in r.items():
    p = v["pruning"]
    print(f"{k}: {v['training']['images_per_s']:.0f} img/s training, MACs -{100*v['macs_reduction']:.1f} %, "
          f"top-1 {v['original']['top1']:.4f} -> {v['pruned']['top1']:.4f}, exact {v['exactness']['outputs'][0]['max_abs']:.2e} "
          f"({v['exactness']['runtime']}), blocks removed {p['blocks_removed']}, channels removed {p['channels_removed']}")
zeros = {k: {g["name"]: [i for i, x in enumerate(g["values"]) if x == 0] for g in v["gates"]} for k, v in r.items()}
diff = [n for n in zeros["gpu"] if zeros["gpu"][n] != zeros["cpu"].get(n)]
print("structure identical" if not diff else f"structure differs in {len(diff)} gate tensors: {diff[:6]}"
      " (float sums in another order move near-tied Taylor scores)")
for k, v in r.items():
    for l in v["original"]["latency"] + v["pruned"]["latency"]:
        print(f"{k} run, {v['runtime']}: {l['model'].split('/')[-1]} batch {l['batch']}: p50 {l['p50_ms']:.3f} ms")
PY
log "ORT latency, original vs pruned, CPU EP$( [ $ep = cuda ] && echo ' and CUDA EP')"
for e in cpu $( [ $ep = cuda ] && echo cuda ); do
    ORT_DYLIB_PATH=$(ort_for $e) "$bin" bench "$model" "$out/gpu.sss.onnx" --ep $e --batch 1,32,256 --iters 50 2>&1 | tee -a "$out/summary.txt"
done
