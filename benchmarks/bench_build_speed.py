"""Seconds per measured configuration when building a benchmark of the default model
(one calibration pass and one evaluation pass each, quantized weights cached per layer and bits),
with 1 and 2 joblib workers; median of several builds. Then the evaluation pass alone (one
configuration, one thread) in batches of 1000 images, the size before EVAL_BATCH, and of
EVAL_BATCH. Needs Fashion-MNIST (Debian's dataset-fashion-mnist).

Usage: python benchmarks/bench_build_speed.py [--configs 8] [--eval-size 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evoproxy.bench import build_bench
from evoproxy.model import EVAL_BATCH, MODELS, accuracy, layer_registry, load_model, open_data
from evoproxy.quant import quantize_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=int, default=8)
    parser.add_argument("--eval-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, name = load_model("default")
    layers = layer_registry(model, MODELS[name].input_shape)
    calib, images, labels = open_data().ptq_data(args.eval_size)
    print(f"{name}: {args.configs} configurations per build, {args.eval_size} test images, "
          f"median of {args.repeats} builds")
    base = None
    for jobs in (1, 2):
        times = []
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                build_bench(Path(tmp) / "b.jsonl", model, name, layers, calib, images, labels, bit_choices=[2, 3, 4],
                            n_configs=args.configs, fixed={0: 8, len(layers) - 1: 8}, seed=r, jobs=jobs,
                            chunk=max(1, args.configs // jobs), progress=False)
                times.append((time.perf_counter() - start) / args.configs)
        t = statistics.median(times)
        base = base or t
        print(f"  {jobs} worker{'s' if jobs > 1 else ' '}: {t:.2f} s per configuration ({base / t:.2f}× one worker)")
    torch.set_num_threads(1)
    qmodel = quantize_model(model, layers, [8] + [2] * (len(layers) - 2) + [8], calib)
    seconds = {}
    for batch in (1000, EVAL_BATCH):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            accuracy(qmodel, images, labels, batch_size=batch)
            times.append(time.perf_counter() - start)
        seconds[batch] = statistics.median(times)
    print(f"  evaluation pass, one thread: {seconds[1000]:.2f} s in batches of 1000, {seconds[EVAL_BATCH]:.2f} s in "
          f"batches of {EVAL_BATCH} ({seconds[1000] / seconds[EVAL_BATCH]:.2f}×)")


if __name__ == "__main__":
    main()
