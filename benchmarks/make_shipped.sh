#!/usr/bin/env bash
# Rebuilds the shipped second model and the shipped benchmarks. Needs Fashion-MNIST
# (apt-get install dataset-fashion-mnist, or EVOPROXY_FMNIST_DIR). Made on a GPU with DEVICE=cuda;
# on 2 CPU cores it takes hours. OUT (default evoproxy) receives assets/ and benches/.
set -euo pipefail
DEVICE=${DEVICE:-cuda}; OUT=${OUT:-evoproxy}; CONFIGS=${CONFIGS:-600}; EVAL=${EVAL:-10000}; EPOCHS=${EPOCHS:-4}
ev="python3 -m evoproxy.cli"
mkdir -p "$OUT/assets" "$OUT/benches" /tmp/evoproxy-train
$ev train --model mobilenetv2-fmnist --epochs "$EPOCHS" --device "$DEVICE" --out /tmp/evoproxy-train
cp /tmp/evoproxy-train/mobilenetv2_fmnist.pt "$OUT/assets/"
build() { $ev bench build --device "$DEVICE" --eval-size "$EVAL" "$@"; }
build --model default --bits 2,3,4 --configs "$CONFIGS" --no-bn-recal --name fmnist-resnet20-w234 \
      --out "$OUT/benches/fmnist-resnet20-w234.jsonl"
build --model default --bits 2,3,4 --configs "$CONFIGS" --name fmnist-resnet20-w234-bnrecal \
      --out "$OUT/benches/fmnist-resnet20-w234-bnrecal.jsonl"
for bits in 2,3,4 3,4,5; do
  build --model mobilenetv2-fmnist --weights "$OUT/assets/mobilenetv2_fmnist.pt" --bits $bits --configs "$CONFIGS" \
        --no-bn-recal --name fmnist-mobilenetv2-w${bits//,/} --out "$OUT/benches/fmnist-mobilenetv2-w${bits//,/}.jsonl"
done
