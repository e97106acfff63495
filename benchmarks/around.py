"""Do the tools' measured scores rank configurations better when each layer's output perturbation is
measured with every other layer at the bench's middle bit-width (`--perturb-around B`) than with every
other layer in float, as the tools measure them? For each shipped bench: mean ρ (all) over all its
configurations (no search is involved, so no configuration was seen by one) of kl, output-mse and
sqnr measured both ways, and the paired difference around − float with its 95 % bootstrap interval
over configurations. With --allocation, also the PTQ top-1 of each proxy's allocation, measured both
ways, on each classifier bench's model at three size budgets (benchmarks/transfer.py's: a quarter,
half and three quarters of the way from every free layer at the lowest bit choice to the highest).

Usage: python benchmarks/around.py [--benches a,b,...] [--proxies kl,output-mse,sqnr] [--around B]
       [--allocation] [--eval-size 2000]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import torch

from evoproxy.bench import bench_stats, load_bench, paired_bootstrap, rho_mean, shipped_benches
from evoproxy.errors import EvoproxyWarning
from evoproxy.proxy import get_proxy
from evoproxy.stats import StatsSettings
from transfer import allocation_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benches", default=",".join(shipped_benches()))
    parser.add_argument("--proxies", default="kl,output-mse,sqnr")
    parser.add_argument("--around", type=int, help="the other layers' bits (default: each bench's middle choice)")
    parser.add_argument("--allocation", action="store_true", help="also each allocation's PTQ top-1")
    parser.add_argument("--eval-size", type=int, default=2000, help="test images for the allocation accuracies")
    args = parser.parse_args()
    warnings.simplefilter("ignore", EvoproxyWarning)
    proxies = [get_proxy(p) for p in args.proxies.split(",")]
    print(
        f"{'bench':<34}{'B':>3}"
        + "".join(f"{p.name + ' float → around':>30}{'around − float [95 %]':>26}" for p in proxies)
    )
    gains = {p.name: [] for p in proxies}
    for name in args.benches.split(","):
        bench = load_bench(name)
        choices = sorted(bench.header["bit_choices"])
        around = args.around or choices[len(choices) // 2]
        bits, quality = bench.arrays(bench.entries)
        bits = torch.as_tensor(bits)
        got = {
            way: bench_stats(bench, settings=StatsSettings(hessian=False, perturb_around=b))[0]
            for way, b in (("float", None), ("around", around))
        }
        row = f"{name:<34}{around:>3}"
        for p in proxies:
            scores = {way: p.score(s, bits).detach().double().numpy() for way, s in got.items()}
            d, lo, hi = paired_bootstrap(scores["around"], scores["float"], quality)
            gains[p.name].append(d)
            rho = {way: 100 * rho_mean(s, quality) for way, s in scores.items()}
            row += f"{rho['float']:>20.2f} → {rho['around']:6.2f}{100 * d:>+12.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]"
        print(row, flush=True)
        if args.allocation and bench.metric.name == "accuracy":
            chosen = {f"{p.name} {way}": (p, s) for p in proxies for way, s in got.items()}
            print(allocation_line(chosen, bench, args.eval_size), flush=True)
    print(
        f"\nmean around − float over {len(gains[proxies[0].name])} benches: "
        + ", ".join(f"{n} {100 * np.mean(g):+.2f}" for n, g in gains.items())
    )


if __name__ == "__main__":
    main()
