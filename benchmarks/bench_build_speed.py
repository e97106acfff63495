"""Seconds per measured configuration when building a benchmark of the default model
(one calibration pass and one evaluation pass each, quantized weights cached per layer and bits),
with 1 and 2 joblib workers; median of several builds. Needs Fashion-MNIST (Debian's
dataset-fashion-mnist).

Usage: python benchmarks/bench_build_speed.py [--configs 8] [--eval-size 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from evoproxy.bench import build_bench
from evoproxy.model import MODELS, layer_registry, load_model, open_data


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


if __name__ == "__main__":
    main()
