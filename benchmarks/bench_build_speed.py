"""Seconds per measured configuration when building a benchmark of the default model (BatchNorm
re-estimated, one activation-range pass and one evaluation pass each): a window of consecutive
configurations of a `--build`-configuration build, in the order the build measures them (sorted,
`--chunk` at a time, shared leading layers computed once), by one worker with two threads and by
two workers with one thread each (as `bench build --jobs 2`), against the same configurations
measured one at a time (quantize_model, then accuracy; two threads) in the same run; median of
`--repeats`. Needs Fashion-MNIST (Debian's dataset-fashion-mnist).

Usage: python benchmarks/bench_build_speed.py [--build 1000] [--window 32] [--chunk 16]
       [--eval-size 2000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from joblib import Parallel, delayed

from evoproxy.bench import build_order
from evoproxy.bench.build import _measure
from evoproxy.model import MODELS, accuracy, layer_registry, load_model, open_data
from evoproxy.quant import PtqEvaluator, QuantSettings, quantize_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=int, default=1000, help="configurations in the build (default 1000)")
    parser.add_argument("--window", type=int, default=32, help="configurations timed (default 32)")
    parser.add_argument("--chunk", type=int, default=16, help="configurations per sweep, as build_bench's chunk")
    parser.add_argument("--eval-size", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model, name = load_model("default")
    layers = layer_registry(model, MODELS[name].input_shape)
    calib, images, labels = open_data().ptq_data(args.eval_size)
    order = build_order(len(layers), [2, 3, 4], args.build, {0: 8, len(layers) - 1: 8}, seed=0)
    start = (len(order) - args.window) // 2  # a window from the middle of the build
    window = order[start : start + args.window]
    print(
        f"{name}: {args.window} of the {args.build} configurations of a build, {args.eval_size} test images, "
        f"{len(calib)} calibration images, median of {args.repeats}"
    )
    torch.set_num_threads(2)
    evaluator = PtqEvaluator(model, layers, calib, images, labels)
    cache = evaluator.cache  # both ways use the quantized weights that a build's evaluator keeps
    for bits in {b for c in window for b in c}:
        for layer in layers:
            cache.get(layer.index, bits)
    chunks = [window[i : i + args.chunk] for i in range(0, len(window), args.chunk)]
    workers = Parallel(n_jobs=2)
    workers(
        delayed(_measure)(model, layers, c[:1], calib[:8], images[:8], labels[:8], QuantSettings(), "cpu", 1)
        for c in chunks
    )  # start the two workers before timing them, as a build starts them once
    times: dict[str, list[float]] = {"one at a time": [], "swept, 1 worker": [], "swept, 2 workers": []}
    for _ in range(args.repeats):
        evaluator.measured.clear()
        began = time.perf_counter()
        swept = [a for c in chunks for a in evaluator.measure_many(c)]
        times["swept, 1 worker"].append((time.perf_counter() - began) / len(window))
        began = time.perf_counter()
        parallel = [
            a
            for accs in workers(
                delayed(_measure)(model, layers, c, calib, images, labels, QuantSettings(), "cpu", 1) for c in chunks
            )
            for a in accs
        ]
        times["swept, 2 workers"].append((time.perf_counter() - began) / len(window))
        began = time.perf_counter()
        alone = [accuracy(quantize_model(model, layers, c, calib, cache=cache), images, labels) for c in window]
        times["one at a time"].append((time.perf_counter() - began) / len(window))
        assert swept == parallel == alone, "the sweep and one-at-a-time measurement disagree"
    one = statistics.median(times["one at a time"])
    # Samples through each layer: BatchNorm pass and range pass over the calibration images, then the evaluation.
    per_config = [layer.macs * (2 * len(calib) + len(images)) for layer in layers]
    computed = sum(layer.macs * n for layer, n in zip(layers, evaluator.sweep.layer_inputs))
    print(
        f"  the same accuracies all three ways; multiply-accumulates per configuration: "
        f"{sum(per_config) / 1e9:.1f} G one at a time, {computed / (args.repeats * len(window)) / 1e9:.1f} G swept "
        f"({100 * computed / (args.repeats * len(window) * sum(per_config)):.0f} %)"
    )
    for way, seconds in times.items():
        t = statistics.median(seconds)
        print(f"  {way + ':':18} {t:.2f} s per configuration ({one / t:.2f}× one at a time)")


if __name__ == "__main__":
    main()
