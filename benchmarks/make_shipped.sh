#!/usr/bin/env bash
# Rebuilds the shipped models and benchmarks: `benchmarks/make_shipped.sh [STEP...]`, steps in
# the order given (default: all, in the order below). Needs Fashion-MNIST's training split
# (apt-get install dataset-fashion-mnist, or EVOPROXY_FMNIST_DIR). Made on a GPU with
# DEVICE=cuda; on 2 CPU cores the benches take more than a day. OUT (default evoproxy) receives
# assets/ and benches/. A build with more configurations than a file holds continues it in
# place, keeping its entries and their split. The shipped ResNet-20 comes from
# `evoproxy train --epochs 4` on the CPU, and is not retrained here; the wide step was made with
# DEVICE=cpu on 2 shared cores (66 min of training and 40 min of benches, one thread each).
set -euo pipefail
DEVICE=${DEVICE:-cuda}; OUT=${OUT:-evoproxy}; EVAL=${EVAL:-10000}
ev="python3 -m evoproxy.cli"
mkdir -p "$OUT/assets" "$OUT/benches" /tmp/evoproxy-train

train() {  # MODEL EPOCHS: train a registry model and put its checkpoint in $OUT/assets
  $ev train --model "$1" --epochs "$2" --device "$DEVICE" --out /tmp/evoproxy-train
  cp "/tmp/evoproxy-train/${1//-/_}.pt" "$OUT/assets/"
}
bench() {  # MODEL BITS CONFIGS NAME [FLAGS...]: build (or continue) $OUT/benches/NAME.jsonl
  local model=$1 bits=$2 configs=$3 name=$4; shift 4
  local weights=(); [ "$model" = default ] || weights=(--weights "$OUT/assets/${model//-/_}.pt")
  $ev bench build --device "$DEVICE" --eval-size "$EVAL" --model "$model" "${weights[@]}" --bits "$bits" \
      --configs "$configs" --name "$name" --out "$OUT/benches/$name.jsonl" "$@"
}
zoo() {  # SHORT EPOCHS: a zoo model (SHORT-fmnist), trained, with its 600-configuration W2/3/4 bench
  train "$1-fmnist" "$2"
  bench "$1-fmnist" 2,3,4 600 "fmnist-$1-w234" --no-bn-recal
}

step() {
  case $1 in
    resnet20)
      bench default 2,3,4 3000 fmnist-resnet20-w234 --no-bn-recal
      bench default 2,3,4 600 fmnist-resnet20-w234-bnrecal ;;
    mobilenetv2)  # 4 epochs; its benches hold 1800 and 600 configurations
      train mobilenetv2-fmnist 4
      bench mobilenetv2-fmnist 2,3,4 1800 fmnist-mobilenetv2-w234 --no-bn-recal
      bench mobilenetv2-fmnist 3,4,5 600 fmnist-mobilenetv2-w345 --no-bn-recal ;;
    vgg|shufflenet|squeezenet|mixer) zoo "$1" 8 ;;
    w345)  # the second, closer-to-deployment benches of two zoo models
      for short in vgg mixer; do bench "$short-fmnist" 3,4,5 600 "fmnist-$short-w345" --no-bn-recal; done ;;
    tinylm)  # the language model (AdamW steps, not epochs) on the shipped text, and its two perplexity benches
      $ev train --model tinylm-kjv --steps 700 --device "$DEVICE" --out /tmp/evoproxy-train
      cp /tmp/evoproxy-train/tinylm_kjv.pt "$OUT/assets/"
      EVAL=32 bench tinylm-kjv 2,3,4 600 kjv-tinylm-g128-w234 --group-size 128 --jobs 2
      EVAL=32 bench tinylm-kjv 2,3,4 600 kjv-tinylm-g32a-w234 --group-size 32 --asymmetric --jobs 2 ;;
    wide)  # the wider zoo (bench set "wide", issue 27): two new architectures by the zoo recipe, the six zoo
      # architectures by the adamw recipe (each model's registry entry names its recipe); made on 2 shared
      # CPU cores, hence few epochs and accuracy on the first 2000 test images
      train widehead-fmnist 2; train convnext-fmnist 3
      for short in vgg mixer squeezenet shufflenet resnet20 mobilenetv2; do train "$short-fmnist-adamw" 3; done
      EVAL=2000 bench widehead-fmnist 2,3,4 600 fmnist-widehead-w234 --no-bn-recal
      EVAL=2000 bench widehead-fmnist 2,3,4 600 fmnist-widehead-w234-bnrecal
      EVAL=2000 bench mixer-fmnist-adamw 2,3,4 600 fmnist-mixer-adamw-w234 --no-bn-recal
      EVAL=2000 bench convnext-fmnist 2,3,4 600 fmnist-convnext-w234 --no-bn-recal
      EVAL=2000 bench vgg-fmnist-adamw 2,3,4 600 fmnist-vgg-adamw-w234 --no-bn-recal
      for short in squeezenet shufflenet resnet20 mobilenetv2; do
        EVAL=2000 bench "$short-fmnist-adamw" 2,3,4 600 "fmnist-$short-adamw-w234" --no-bn-recal
      done ;;
    a32)  # float activations (issue 27's second quantizer setting): three models' benches with only weights quantized
      for model in default mobilenetv2-fmnist widehead-fmnist; do
        short=${model%-fmnist}; [ "$model" = default ] && short=resnet20
        EVAL=2000 bench "$model" 2,3,4 600 "fmnist-$short-w234-a32" --no-bn-recal --act-bits 32
      done ;;
    *) echo "unknown step $1: use resnet20 mobilenetv2 vgg shufflenet squeezenet mixer w345 tinylm wide a32" >&2; exit 2 ;;
  esac
}
for s in "${@:-resnet20 mobilenetv2 vgg shufflenet squeezenet mixer w345 tinylm wide a32}"; do
  for one in $s; do step "$one"; done
done
