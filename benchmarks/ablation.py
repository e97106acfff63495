"""Ablations of the evolution on the default bench, each over a few seeds (EMQ Fig. 4, Table 8):

1. random search vs evolution without DPS vs evolution with DPS (same iteration budget);
2. sequential vs branched vs DAG search spaces;
3. the share of candidates that compatibility screening filtered, by rule.

Prints, per setting, the best fitness reached on the search sample (the search's power) and the
mean ρ on the held-out split of the run's result, chosen on the validation configurations
(mean ± std over seeds), by the EMQ protocol (5 draws of 50 configurations) and over all of the
split's configurations at once. Runs go to a temporary folder.

Usage: python benchmarks/ablation.py [--seeds 3] [--iterations 500]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections import Counter
from pathlib import Path

from evoproxy.bench import rank_proxy
from evoproxy.evolve import Evolution, EvolutionSettings, run_summary

SETTINGS = {
    "random search": dict(strategy="random"),
    "evolution, no DPS": dict(dps=False),
    "evolution + DPS (EMQ)": dict(),
    "sequential space": dict(space="sequential"),
    "branched space": dict(space="branched"),
    "DAG space": dict(space="dag"),
}


def sd(xs: list[float]) -> float:
    """Sample standard deviation; 0 for a single value."""
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=500)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="evoproxy-ablation-"))
    print(f"default bench, {args.iterations} iterations, seeds 0..{args.seeds - 1}; mean ± std over seeds")
    print(
        f"{'setting':<24} {'best fitness':>16} {'held-out 5×50':>16} {'held-out all':>16}  candidates filtered by CSP"
    )
    for label, overrides in SETTINGS.items():
        fits, held, held_all, status, duplicates = [], [], [], Counter(), 0
        for seed in range(args.seeds):
            run_dir = root / f"{label.replace(' ', '_')}-{seed}"
            evo = Evolution(
                run_dir, EvolutionSettings(iterations=args.iterations, seed=seed, **overrides), log=lambda m: None
            )
            best = evo.run()
            ranked = rank_proxy(best.genome, evo.stats[0], evo.benches[0].split("held-out"))
            held.append(ranked.rho_mean)
            held_all.append(ranked.rho_all)
            evo.close()
            summary = run_summary(run_dir)
            fits.append(max(h[1] for h in summary["history"]))
            status.update(summary["status"])
            duplicates += sum(h[5] for h in summary["history"])
        judged = sum(status.values()) + duplicates
        shares = {"duplicate": duplicates, **{k: v for k, v in status.items() if k != "ok"}}
        filt = ", ".join(f"{k} {100 * v / judged:.1f}%" for k, v in sorted(shares.items()))
        print(
            f"{label:<24}", *(f"{statistics.mean(xs):8.4f} ± {sd(xs):.4f}" for xs in (fits, held, held_all)), f" {filt}"
        )


if __name__ == "__main__":
    main()
