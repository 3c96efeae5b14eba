#!/usr/bin/env bash
# The paper's training from scratch, shortened: a randomly initialised CIFAR
# ResNet-20 (BN kept) gated and trained on the full Fashion-MNIST with the
# paper's lr 0.1 and one γ, once per gate optimizer (APG, ISTA, L1-SGD), on
# the same seed. Writes .data/paper/<opt>_g<γ>.jsonl (the curve) and .log
# (final test accuracy); benches/paper_repro.py makes the table and plot.
#
#     bash benches/paper_repro.sh [epochs] [gamma] [seed] [optimizers]
#
# optimizers: a space-separated subset of "apg ista l1sgd" (all three by
# default), for a γ sweep per solver.
set -euo pipefail
cd "$(dirname "$0")/.."
EPOCHS=${1:-2}
GAMMA=${2:-0.02}
SEED=${3:-0}
OPTS=${4:-apg ista l1sgd}
OUT=.data/paper
mkdir -p "$OUT"
cargo build --release --quiet
for opt in $OPTS; do
  tag="${opt}_g${GAMMA}_e${EPOCHS}_s${SEED}"
  rm -f "$OUT/$tag.jsonl"
  target/release/sss-onnx train fixtures/resnet20_a.legacy17bn.onnx \
    --data .data/fashion-mnist --pad-value black --gate \
    --lr 0.1 --gamma "$GAMMA" --optimizer "$opt" --epochs "$EPOCHS" --seed "$SEED" \
    --bn-recalibration 0 --log-every 20 --metrics "$OUT/$tag.jsonl" \
    -o "$OUT/$tag.onnx" 2> "$OUT/$tag.log"
  grep "test accuracy" "$OUT/$tag.log"
done
