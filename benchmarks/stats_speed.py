"""Extraction time per statistic for the default model (median of several runs, seconds), and
the total without the Hessian (what proxies that do not read it, such as Fisher or SNIP, wait for).
With --tools, instead: the measured output perturbations (what the tools' scores output-mse, sqnr,
kl and taylor read) of every shipped model on its default statistics batch, beside the rest of the
statistics without the Hessian. With --resnet18 PIXELS, instead: each statistic of a randomly
initialised ResNet-18 (benchmarks/real_models.py, 1000 classes) on random images of that size, and
the peak memory of the process.

Usage: python benchmarks/stats_speed.py [--repeats 3] [--batch-size 64]
       [--tools | --resnet18 PIXELS [--hessian-seconds S]]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import warnings

import torch

from evoproxy.errors import EvoproxyWarning
from evoproxy.model import MODELS, calibration_batch, default_data, load_model, open_data
from evoproxy.stats import STATS_BATCH, TEXT_STATS_BATCH, StatsSettings, compute_stats


def tools_cost(repeats: int) -> None:
    """Seconds of the output perturbations per shipped model (median of `repeats`), beside the same
    measurements by full forward passes (what they cost before each pass reused the float values of
    everything the layer does not feed; the values are the same)."""
    from evoproxy.quant.sweep import Untraceable
    from evoproxy.stats import perturbation

    def untraceable(model):
        raise Untraceable("full passes")

    warnings.simplefilter("ignore", EvoproxyWarning)  # the language model's undefined SynFlow, once per run
    print(f"output perturbations (every layer at 2..8 bits, one thread), median of {repeats} runs:")
    for name in MODELS:
        model, _ = load_model(name)
        source = open_data(default_data(name))
        x, y = source.calibration(TEXT_STATS_BATCH if source.is_text else STATS_BATCH)
        lean = [StatsSettings(seed=i, hessian=False) for i in range(repeats)]
        runs = [compute_stats(model, x, y, name, s) for s in lean]
        traced, perturbation.trace = perturbation.trace, untraceable
        try:
            full = [compute_stats(model, x, y, name, s).timings["output perturbations"] for s in lean]
        finally:
            perturbation.trace = traced
        measured = statistics.median(r.timings["output perturbations"] for r in runs)
        rest = statistics.median(sum(r.timings.values()) for r in runs) - measured
        print(
            f"  {name:<20} {len(runs[0].layers):3d} layers, batch {len(x):3d}: {measured:6.2f} s, by full passes "
            f"{statistics.median(full):6.2f} s ({statistics.median(full) / measured:.2f}×; the rest without the "
            f"Hessian {rest:5.2f} s)"
        )


def resnet18_cost(pixels: int, batch: int, repeats: int, hessian_seconds: float | None) -> None:
    """Seconds per statistic of ResNet-18 at `pixels`² on a random batch (median of `repeats`),
    the Hessian bounded to `hessian_seconds` if given."""
    from real_models import resnet18

    model = resnet18().eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, pixels, pixels, generator=g), torch.randint(0, 1000, (batch,), generator=g)
    settings = [StatsSettings(seed=i, hessian_seconds=hessian_seconds) for i in range(repeats)]
    runs = [compute_stats(model, x, y, "resnet18", s) for s in settings]
    bound = "default settings" if hessian_seconds is None else f"the Hessian bounded to {hessian_seconds:g} s"
    print(f"ResNet-18 at {pixels}×{pixels}, batch {batch}, {bound}, median of {repeats} runs:")
    for key in runs[0].timings:
        print(f"  {key:<22} {statistics.median(r.timings[key] for r in runs):7.2f} s")
    print(f"  {'total':<22} {statistics.median(sum(r.timings.values()) for r in runs):7.2f} s")
    print(f"  Hutchinson samples used: {[r.hutchinson_samples_used for r in runs]}")
    print(f"  peak memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tools", action="store_true", help="the output perturbations of every shipped model")
    parser.add_argument("--resnet18", type=int, metavar="PIXELS", help="ResNet-18 on random images of this size")
    parser.add_argument("--hessian-seconds", type=float, help="with --resnet18: the Hessian's time bound")
    args = parser.parse_args()
    if args.tools:
        return tools_cost(args.repeats)
    if args.resnet18:
        return resnet18_cost(args.resnet18, args.batch_size, args.repeats, args.hessian_seconds)
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
