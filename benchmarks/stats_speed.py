"""Extraction time per statistic for the default model (median of several runs, seconds), and
the total without the Hessian (what proxies that do not read it, such as Fisher or SNIP, wait for).

Usage: python benchmarks/stats_speed.py [--repeats 3] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import statistics

from evoproxy.model import calibration_batch, load_model
from evoproxy.stats import StatsSettings, compute_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    model, name = load_model("default")
    x, y = calibration_batch(args.batch_size)
    runs = [compute_stats(model, x, y, name, StatsSettings(seed=i)) for i in range(args.repeats)]
    print(f"{name}, batch {args.batch_size}, default settings, median of {args.repeats} runs:")
    for key in runs[0].timings:
        print(f"  {key:<18} {statistics.median(r.timings[key] for r in runs):7.2f} s")
    print(f"  {'total':<18} {statistics.median(sum(r.timings.values()) for r in runs):7.2f} s")
    print(f"  Hutchinson samples used: {[r.hutchinson_samples_used for r in runs]}")
    lean = [compute_stats(model, x, y, name, StatsSettings(seed=i, hessian=False)) for i in range(args.repeats)]
    total = statistics.median(sum(r.timings.values()) for r in lean)
    print(
        f"  without the Hessian: {total:7.2f} s "
        f"({statistics.median(sum(r.timings.values()) for r in runs) / total:.0f}× less)"
    )


if __name__ == "__main__":
    main()
