#!/usr/bin/env bash
# Puts the full Fashion-MNIST (60k train + 10k test, idx .gz) into
# .data/fashion-mnist/ from Debian's `dataset-fashion-mnist` package
# (apt-get download + dpkg -x, nothing installed). Used by the real-data
# training tests. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST="${FMNIST_DEST:-.data/fashion-mnist}"
FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
have() { for f in $FILES; do [ -f "$1/$f" ] || return 1; done; }
if have "$DEST"; then echo "fashion-mnist: $DEST already present" >&2; exit 0; fi
mkdir -p "$DEST"
SRC=/usr/share/datasets/fashion-mnist
if ! have "$SRC"; then
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && (apt-get download dataset-fashion-mnist >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get download dataset-fashion-mnist >/dev/null; }))
  dpkg -x "$tmp"/dataset-fashion-mnist_*.deb "$tmp/x"
  SRC="$tmp/x/usr/share/datasets/fashion-mnist"
fi
for f in $FILES; do cp "$SRC/$f" "$DEST/$f.part" && mv "$DEST/$f.part" "$DEST/$f"; done
# pad_value mean: the bundled models were trained padding 28x28 to 32x32
# after normalising (a torchvision-style model would say "black")
printf '{"name": "Fashion-MNIST", "mean": [0.2860], "std": [0.3530], "pad_value": "mean"}\n' > "$DEST/dataset.json"
echo "fashion-mnist: wrote $DEST" >&2
