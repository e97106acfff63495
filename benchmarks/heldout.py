"""Evolved proxies against the handcrafted ones on the held-out split of a bench, over seeds.

One run per seed (runs go to a temporary folder); per seed, the chosen proxy's fitness, its ρ
on the validation configurations (the search split minus the fitness sample), its mean ρ on
the held-out split (EMQ protocol: 5 draws of 50 configurations) and on the whole shipped bench
of another model (transfer), then the mean ± std over seeds beside every handcrafted proxy and
the mean-bit-width baseline on the same configurations.

Usage: python benchmarks/heldout.py [--seeds 6] [--samples 50] [--population 20]
       [--iterations 1000] [--space branched] [--select-top 20] [--islands 1] [--bench NAME]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from evoproxy.evolution import Evolution, EvolutionConfig
from evoproxy.methods.handcrafted import HANDCRAFTED
from evoproxy.bench import load_bench
from evoproxy.rank import bench_stats, rank_proxy
from evoproxy.report import transfer_bench


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=6)
    parser.add_argument("--bench", default=EvolutionConfig.bench)
    parser.add_argument("--space", default=EvolutionConfig.space)
    parser.add_argument("--samples", type=int, default=EvolutionConfig.samples)
    parser.add_argument("--population", type=int, default=EvolutionConfig.population)
    parser.add_argument("--iterations", type=int, default=EvolutionConfig.iterations)
    parser.add_argument("--select-top", type=int, default=EvolutionConfig.select_top)
    parser.add_argument("--islands", type=int, default=EvolutionConfig.islands)
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="evoproxy-heldout-"))
    print(f"{args.bench}, {args.space} space, {args.islands} × |P|={args.population}, N={args.iterations}, "
          f"samples {args.samples or 'all'}, select-top {args.select_top}; held-out mean ρ in %")
    other = load_bench(transfer_bench(args.bench))
    other_stats, _, _ = bench_stats(other)
    print(f"{'seed':>4} {'fitness':>8} {'valid.':>7} {'held-out':>8} {'transfer':>8}  formula")
    held, moved = [], []
    for seed in range(args.seeds):
        config = EvolutionConfig(bench=args.bench, space=args.space, samples=args.samples,
                                 population=args.population, iterations=args.iterations,
                                 select_top=args.select_top, islands=args.islands, seed=seed)
        evo = Evolution(root / f"s{seed}", config, log=lambda m: None)
        best = evo.run()
        held.append(100 * rank_proxy(best.genome, evo.stats, evo.bench.split("held-out")).rho_mean)
        moved.append(100 * rank_proxy(best.genome, other_stats, other.split("all")).rho_mean)
        evo.close()
        print(f"{seed:>4} {best.fitness:8.4f} {best.validation:7.4f} {held[-1]:8.2f} {moved[-1]:8.2f}  "
              f"{best.genome.formula()}", flush=True)
    for label, bench, stats, split, ours in ((f"{args.bench}, held-out", evo.bench, evo.stats, "held-out", held),
                                             (f"{other.name} (transfer)", other, other_stats, "all", moved)):
        hand = {n: 100 * rank_proxy(make(), stats, bench.split(split)).rho_mean for n, make in HANDCRAFTED.items()}
        top = max((n for n in hand if n != "mean-bits"), key=hand.get)
        sd = statistics.stdev(ours) if len(ours) > 1 else 0.0
        print(f"\n{label}: evolved {statistics.mean(ours):.2f} ± {sd:.2f} (median {statistics.median(ours):.2f}); "
              f"above {top} ({hand[top]:.2f}) in {sum(h > hand[top] for h in ours)} of {len(ours)} seeds, "
              f"above the mean-bits baseline ({hand['mean-bits']:.2f}) in {sum(h > hand['mean-bits'] for h in ours)}")
        print("handcrafted: " + ", ".join(f"{n} {v:.2f}" for n, v in sorted(hand.items(), key=lambda p: -p[1])))
        if split == "held-out":
            noise_floor(HANDCRAFTED[top](), evo)


def noise_floor(proxy, evo: Evolution, draws: int = 20) -> None:
    """How much one fixed proxy's held-out figure moves with the choice of configurations: its
    mean ρ on random subsets of the search split as large as the held-out split."""
    search, n = evo.bench.split("search"), len(evo.bench.split("held-out"))
    rng = np.random.default_rng(0)
    rho = [100 * rank_proxy(proxy, evo.stats, [search[i] for i in rng.choice(len(search), n, replace=False)]).rho_mean
           for _ in range(draws)]
    print(f"{proxy.name} on {draws} random subsets of {n} search configurations: {statistics.mean(rho):.2f} ± "
          f"{statistics.stdev(rho):.2f} (from {min(rho):.2f} to {max(rho):.2f})")


if __name__ == "__main__":
    main()
