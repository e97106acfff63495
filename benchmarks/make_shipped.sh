#!/usr/bin/env bash
# Rebuilds the shipped second model and the shipped benchmarks. Needs Fashion-MNIST
# (apt-get install dataset-fashion-mnist, or EVOPROXY_FMNIST_DIR). Made on a GPU with DEVICE=cuda;
# on 2 CPU cores it takes more than a day. OUT (default evoproxy) receives assets/ and benches/. The shipped
# files hold 3000 (default bench), 1800 (MobileNetV2 W2/3/4) and 600 configurations; a build
# with more continues a file in place, keeping its entries and their split. On an H200 the two
# larger benches took 3 and 1.5 minutes.
set -euo pipefail
DEVICE=${DEVICE:-cuda}; OUT=${OUT:-evoproxy}; EVAL=${EVAL:-10000}; EPOCHS=${EPOCHS:-4}
ev="python3 -m evoproxy.cli"
mkdir -p "$OUT/assets" "$OUT/benches" /tmp/evoproxy-train
$ev train --model mobilenetv2-fmnist --epochs "$EPOCHS" --device "$DEVICE" --out /tmp/evoproxy-train
cp /tmp/evoproxy-train/mobilenetv2_fmnist.pt "$OUT/assets/"
build() { $ev bench build --device "$DEVICE" --eval-size "$EVAL" "$@"; }
build --model default --bits 2,3,4 --configs 3000 --no-bn-recal --name fmnist-resnet20-w234 \
      --out "$OUT/benches/fmnist-resnet20-w234.jsonl"
build --model default --bits 2,3,4 --configs 600 --name fmnist-resnet20-w234-bnrecal \
      --out "$OUT/benches/fmnist-resnet20-w234-bnrecal.jsonl"
for spec in 2,3,4:1800 3,4,5:600; do
  bits=${spec%:*}
  build --model mobilenetv2-fmnist --weights "$OUT/assets/mobilenetv2_fmnist.pt" --bits $bits --configs ${spec#*:} \
        --no-bn-recal --name fmnist-mobilenetv2-w${bits//,/} --out "$OUT/benches/fmnist-mobilenetv2-w${bits//,/}.jsonl"
done
