#!/usr/bin/env bash
# One sitting against PyTorch: for each round and each case, our training
# step (`cargo bench --bench train_step`) and then PyTorch's
# (`benches/pytorch_train_step.py`) on the same model, batch and threads,
# back to back; prints images/s, peak RSS and our/PyTorch ratio per round
# and the median ratio per case. Machines here are shared and noisy: only
# medians of alternated rounds mean anything. Not run by CI.
#
#     bash benches/pytorch_sitting.sh [rounds] [cases...]
#
# cases: resnet18 (b32), resnet50 (b16), resnext50 (b8), mobilenet_v2 (b32),
# efficientnet_b0 (b32, its export made once in .data/), resnet20 (b128),
# vit_tiny (the fixture's VisionTransformer, b128);
# default all but resnext50. Needs .venv with torch and torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
shift || true
CASES=("$@")
[ ${#CASES[@]} -eq 0 ] && CASES=(resnet18 resnet50 resnet20)
for c in "${CASES[@]}"; do
  if [ "$c" = efficientnet_b0 ] && [ ! -f .data/efficientnet_b0_224.onnx ]; then
    .venv/bin/python benches/export_torchvision.py efficientnet_b0 .data/efficientnet_b0_224.onnx >&2
  fi
done
BIN=$(cargo bench --bench train_step --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))/\1/p' | tail -1)
args() {
  case $1 in
    resnet18) echo "resnet18 32 3|32 3 resnet18" ;;
    resnet50) echo "resnet50 16 3|16 3 resnet50" ;;
    resnext50) echo "resnext50 8 3|8 3 resnext50" ;;
    mobilenet_v2) echo "mobilenet_v2 32 3|32 3 mobilenet_v2" ;;
    efficientnet_b0) echo ".data/efficientnet_b0_224.onnx 32 3|32 3 efficientnet_b0" ;;
    resnet20) echo "fixtures/resnet20_a.legacy17bn.onnx 128 5|128 5 resnet20" ;;
    vit_tiny) echo "fixtures/vit_tiny.legacy17.onnx 128 10|128 10 vit_tiny" ;;
    *) echo "unknown case $1" >&2; exit 2 ;;
  esac
}
declare -A RATIOS
printf "%-9s %5s %12s %12s %7s %18s\n" case round "ours img/s" "torch img/s" ratio "RSS ours/torch MB"
for r in $(seq 1 "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    IFS='|' read -r ours theirs <<< "$(args "$c")"
    o=$($BIN $ours 2>&1)
    t=$(.venv/bin/python benches/pytorch_train_step.py $theirs 2>&1)
    oi=$(echo "$o" | sed -n 's/^step .*= *\([0-9.]*\) images\/s.*/\1/p')
    om=$(echo "$o" | sed -n 's/^peak RSS \([0-9]*\) MB.*/\1/p')
    ti=$(echo "$t" | sed -n 's/.*= *\([0-9.]*\) images\/s.*/\1/p')
    tm=$(echo "$t" | sed -n 's/.*peak RSS \([0-9]*\) MB.*/\1/p')
    ratio=$(python3 -c "print(f'{$oi / $ti:.2f}')")
    RATIOS[$c]="${RATIOS[$c]:-} $ratio"
    printf "%-9s %5s %12s %12s %7s %18s\n" "$c" "$r" "$oi" "$ti" "$ratio" "$om / $tm"
  done
done
for c in "${CASES[@]}"; do
  python3 -c "import statistics,sys; v=[float(x) for x in sys.argv[2:]]; print(f'{sys.argv[1]}: median {statistics.median(v):.2f}x over {len(v)} rounds ({\" \".join(sys.argv[2:])})')" "$c" ${RATIOS[$c]}
done
