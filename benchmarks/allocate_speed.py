"""Solve times of the bit allocators (median of several runs), against the paper's random-
sampling baseline measured in the same run.

    python benchmarks/allocate_speed.py [--repeats 7]

1. The default model (ResNet-20 registry; weights do not matter for costs) with random
   sensitivities, weight bits {2, 3, 4}, first and last layer at 8 bits, a size budget half-way
   between the smallest and the largest configuration: dp, ilp, sample.
2. A synthetic 100-layer model, 7 weight-bit choices (2..8), size and BOPs budgets: ilp, sample.
"""

from __future__ import annotations

import argparse
import statistics
from time import perf_counter

import numpy as np

from evoproxy.allocation import AllocationProblem, allocate, build_problem
from evoproxy.model import ALIASES, MODELS, LayerInfo, layer_registry


def default_problem(seed: int) -> AllocationProblem:
    spec = MODELS[ALIASES["default"]]
    layers = layer_registry(spec.build(), spec.input_shape)
    sens = np.random.default_rng(seed).random(len(layers))
    problem = build_problem(layers, sens, 1.0)
    return problem.with_budget(size_mb=_between(problem.min_size_bits, _max_size_bits(problem), 0.5) / 8e6)


def synthetic_problem(seed: int, n_layers: int = 100) -> AllocationProblem:
    """Random conv layers (16..512 channels, 1×1 or 3×3, 7..56 px outputs), weight bits 2..8."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(n_layers):
        cout, cin = (int(c) for c in rng.choice([16, 32, 64, 128, 256, 512], 2))
        k, side = int(rng.choice([1, 3])), int(rng.choice([7, 14, 28, 56]))
        weights = cout * cin * k * k
        layers.append(LayerInfo(i, f"layer{i}", "conv", (cout, cin, k, k), weights + cout, weights * side * side))
    problem = build_problem(layers, rng.random(n_layers), 1.0, w_bits=range(2, 9))
    max_bops = problem.fixed_bops + int(problem.bops[:, -1].sum())
    return problem.with_budget(
        size_mb=_between(problem.min_size_bits, _max_size_bits(problem), 0.5) / 8e6,
        bops=_between(problem.min_bops, max_bops, 0.35),
    )


def _max_size_bits(problem: AllocationProblem) -> int:
    return problem.fixed_size_bits + int(problem.size_bits[:, -1].sum())


def _between(lo: int, hi: int, fraction: float) -> int:
    return int(lo + fraction * (hi - lo))


def time_method(problem: AllocationProblem, method: str, repeats: int) -> tuple[float, object]:
    """Median wall seconds of `repeats` solves, and the last result."""
    times = []
    for _ in range(repeats):
        t0 = perf_counter()
        result = allocate(problem, method)
        times.append(perf_counter() - t0)
    return statistics.median(times), result


def report(title: str, problem: AllocationProblem, methods: list[str], repeats: int) -> None:
    print(
        f"\n{title}: {len(problem.layers)} layers ({len(problem.free)} free), "
        f"{len(problem.options)} options, size budget {problem.size_budget_mb:.4f} MB"
        + (f", BOPs budget {problem.bops_budget / 1e9:.3f} G" if problem.bops_budget else "")
    )
    timed = {m: time_method(problem, m, repeats) for m in methods}
    base_time, base = timed["sample"]
    print(
        f"{'method':<8}{'median ms':>11}{'× sample':>10}{'objective':>12}{'vs sample':>11}"
        f"{'size MB':>10}{'GBOPs':>9}  optimal"
    )
    for m, (t, r) in timed.items():
        print(
            f"{m:<8}{t * 1e3:>11.2f}{t / base_time:>10.2f}{r.objective:>12.4f}"
            f"{r.objective / base.objective - 1:>+10.2%}{r.size_mb:>10.4f}{r.bops / 1e9:>9.3f}  {r.optimal}"
        )
    print(f"(sample: {base.note})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per method; the median is printed")
    args = parser.parse_args()
    report("default model (resnet20-fmnist), size budget", default_problem(0), ["dp", "ilp", "sample"], args.repeats)
    report("synthetic model, size + BOPs budgets", synthetic_problem(0), ["ilp", "sample"], args.repeats)


if __name__ == "__main__":
    main()
