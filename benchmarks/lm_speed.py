"""The shipped language model's targets on this machine: its statistics from scratch (no cache; the
`stats` command's defaults for token data: 8 windows of 256 tokens, Hutchinson and power iteration
as for images) in at most 2 minutes, and a bench configuration (groups of 128, weights only, 32 test
windows) measured in at most 2 s, one worker with every thread, as `bench build` measures them
(sorted configurations, a chunk at a time, shared leading layers computed once), against the same
configurations measured one at a time (quantize_model, then perplexity) in the same run; median of
`--repeats`.

Usage: python benchmarks/lm_speed.py [--window 16] [--repeats 3] [--skip-stats]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

from evoproxy.bench import build_order
from evoproxy.model import layer_registry, load_model, open_data
from evoproxy.quant import PtqEvaluator, QuantSettings, quantize_model
from evoproxy.stats import TEXT_STATS_BATCH, StatsSettings, load_or_compute_stats

EVAL_WINDOWS = 32  # as cli.args.TEXT_EVAL_SIZE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--window", type=int, default=16, help="configurations timed (default 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-stats", action="store_true", help="time only the bench configurations")
    args = parser.parse_args()
    model, name = load_model("tinylm-kjv")
    source = open_data("kjv")
    layers = layer_registry(model, source.input_shape, ("head",), source.input_dtype)
    if not args.skip_stats:
        x, y = source.calibration(TEXT_STATS_BATCH)
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            stats, _ = load_or_compute_stats(model, x, y, name, StatsSettings(group_size=128), cache)
            seconds = time.perf_counter() - start
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in stats.timings.items())
        print(f"statistics of {name} on {TEXT_STATS_BATCH} windows: {seconds:.1f} s ({parts}); target ≤ 120 s")
    settings = QuantSettings(32, False, group_size=128)
    calib, images, labels = source.ptq_data(EVAL_WINDOWS)
    order = build_order(len(layers), [2, 3, 4], 600, {}, seed=0)
    window = order[len(order) // 2 : len(order) // 2 + args.window]
    swept, plain = [], []
    for _ in range(args.repeats):
        evaluator = PtqEvaluator(model, layers, calib, images, labels, settings)
        start = time.perf_counter()
        found = evaluator.measure_many(window)
        swept.append((time.perf_counter() - start) / len(window))
        start = time.perf_counter()
        alone = [
            evaluator.metric.measure(quantize_model(model, layers, c, calib, settings, evaluator.cache), images, labels)
            for c in window
        ]
        plain.append((time.perf_counter() - start) / len(window))
        assert found == alone, "the sweep must give each configuration's own perplexity"
    s, p = statistics.median(swept), statistics.median(plain)
    print(
        f"bench configuration ({EVAL_WINDOWS} windows, groups of 128): {s:.2f} s swept, {p:.2f} s one at a time "
        f"({p / s:.2f}×), median of {args.repeats}; target ≤ 2 s"
    )


if __name__ == "__main__":
    main()
