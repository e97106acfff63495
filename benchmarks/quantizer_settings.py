"""Does the quantizer setting a bench was measured under change which proxy ranks best? Issue 27's
second quantizer settings: activations in float against 8-bit, and BatchNorm re-estimated against
not. For each pair of shipped benches of one model that differ in that setting only: the
configurations both hold, the Spearman ρ between their two measured accuracies, and each proxy's
mean ρ over those configurations under either setting, with the paired difference of the best
two proxies under the second setting and its 95 % bootstrap interval over configurations.

Usage: python benchmarks/quantizer_settings.py [--proxies kl,output-mse,taylor,hawq-v2,fisher,evoproxy-zoo,mean-bits]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from scipy.stats import spearmanr

from evoproxy.bench import bench_stats, load_bench, paired_bootstrap, rho_mean
from evoproxy.proxy import get_proxy

# (first setting's bench, second setting's bench, what differs)
PAIRS = [
    ("fmnist-resnet20-w234", "fmnist-resnet20-w234-a32", "activations 8-bit → float"),
    ("fmnist-mobilenetv2-w234", "fmnist-mobilenetv2-w234-a32", "activations 8-bit → float"),
    ("fmnist-widehead-w234", "fmnist-widehead-w234-a32", "activations 8-bit → float"),
    ("fmnist-resnet20-w234", "fmnist-resnet20-w234-bnrecal", "BatchNorm kept → re-estimated"),
    ("fmnist-widehead-w234", "fmnist-widehead-w234-bnrecal", "BatchNorm kept → re-estimated"),
]


def shared(first, second) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The bit configurations both benches hold, and their two accuracies."""
    index = {tuple(e.bits): i for i, e in enumerate(first.entries)}
    _, acc_first = first.arrays(first.entries)
    bits, acc_second = second.arrays(second.entries)
    keep = [i for i, e in enumerate(second.entries) if tuple(e.bits) in index]
    rows = [index[tuple(second.entries[i].bits)] for i in keep]
    return bits[keep], acc_first[rows], acc_second[keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxies", default="kl,output-mse,taylor,hawq-v2,fisher,evoproxy-zoo,mean-bits")
    args = parser.parse_args()
    proxies = [get_proxy(p) for p in args.proxies.split(",")]
    for first_name, second_name, change in PAIRS:
        first, second = load_bench(first_name), load_bench(second_name)
        bits, acc_first, acc_second = shared(first, second)
        stats, _, _ = bench_stats(second)
        scores = {p.name: p.score(stats, torch.as_tensor(bits)).detach().double().numpy() for p in proxies}
        accuracy_rho = spearmanr(acc_first, acc_second).statistic
        shift = np.mean(acc_second - acc_first)
        print(
            f"\n{first_name} → {second_name} ({change}): {len(bits)} shared configurations, "
            f"accuracies' Spearman ρ {100 * accuracy_rho:.2f} %, mean difference {shift:+.2f} points"
        )
        rows = {name: (rho_mean(s, acc_first), rho_mean(s, acc_second)) for name, s in scores.items()}
        for name, (r1, r2) in sorted(rows.items(), key=lambda kv: -kv[1][1]):
            print(f"  {name:<14} mean ρ (all) {100 * r1:6.2f} → {100 * r2:6.2f}")
        best, runner = sorted(rows, key=lambda n: -rows[n][1])[:2]
        diff, low, high = paired_bootstrap(scores[best], scores[runner], acc_second)
        print(f"  {best} − {runner} under the second setting: {100 * diff:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]")


if __name__ == "__main__":
    main()
