"""Which proxy ranks and allocates a language model's bits best: the study of the language-model
page (docs/language-models.md), on a shipped perplexity bench.

1. Ranking, on the bench's held-out split (configurations no search saw): mean ρ over every
   configuration ("all") and ρ with model size held fixed, of every handcrafted proxy, the
   shipped `evoproxy-zoo` (evolved on the Fashion-MNIST CNNs: does it transfer?) and the proxies
   given with --evolved (evolved on this bench's search split); then each evolved proxy against
   mean-bits and the best handcrafted proxy, with the 95 % paired bootstrap interval.
2. Allocation: each proxy's allocation at each --budgets average bits (scales included) and
   uniform 2, 3 and 4 bits, measured on --windows test windows that the bench did not use
   (those after its first 32): perplexity, and the difference from uniform 3-bit and from the best
   handcrafted proxy's allocation with its 95 % bootstrap interval over the windows.

With --around B, both also judge the tools' measured scores (kl, output-mse) measured with every
other layer at B bits (`--perturb-around B`) rather than in float, named "kl@B" (as transfer.py names them).

Usage: python benchmarks/lm_study.py [--bench kjv-tinylm-g128-w234] [--evolved runs/NAME ...]
       [--budgets 2.5,3,3.5] [--windows 256] [--around B]
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import torch

from evoproxy.allocation import allocate, proxy_problem
from evoproxy.errors import EvoproxyWarning
from evoproxy.bench import bench_model, bench_stats, load_bench, paired_bootstrap, rank_proxy
from evoproxy.model import next_token_loss
from evoproxy.proxy import HANDCRAFTED, get_proxy
from evoproxy.quant import QuantSettings, average_bits, quantize_model, size_mb_at_average_bits
from evoproxy.stats import StatsSettings

BENCH_WINDOWS = 32  # the bench's evaluation windows: the study measures on the ones after them


@torch.no_grad()
def window_losses(model, tokens, targets, batch: int = 32) -> np.ndarray:
    """Mean next-token loss of each window (N,)."""
    out = []
    for i in range(0, len(tokens), batch):
        logits = model(tokens[i : i + batch])
        loss = next_token_loss(logits, targets[i : i + batch], reduction="none").view(len(logits), -1)
        out.append(loss.double().mean(1))
    return torch.cat(out).numpy()


def ppl_difference(a: np.ndarray, b: np.ndarray, draws: int = 1000) -> tuple[float, float, float]:
    """exp(mean a) − exp(mean b) (perplexities of per-window losses, equal windows), and its 95 %
    bootstrap interval over the windows (both sides on the same resample)."""
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(draws):
        idx = rng.integers(0, len(a), len(a))
        diffs.append(math.exp(a[idx].mean()) - math.exp(b[idx].mean()))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return math.exp(a.mean()) - math.exp(b.mean()), float(lo), float(hi)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default="kjv-tinylm-g128-w234")
    parser.add_argument("--evolved", nargs="*", default=[], help="run directories or genome files")
    parser.add_argument("--budgets", default="2.5,3,3.5", help="average bits per weight, scales included")
    parser.add_argument("--windows", type=int, default=256, help="test windows the allocations are measured on")
    parser.add_argument("--around", type=int, help="also kl and output-mse measured with the other layers at B bits")
    args = parser.parse_args()
    warnings.simplefilter("ignore", EvoproxyWarning)  # mean-bits's equal sensitivities: its allocation is meant so
    bench = load_bench(args.bench)
    stats, _, _ = bench_stats(bench)
    held = bench.split("held-out")
    names = [n for n in HANDCRAFTED if n != "emq-paper"] + ["evoproxy-zoo", *args.evolved]
    proxies = {n: (get_proxy(n), stats) for n in names}
    around = []
    if args.around is not None:
        local = bench_stats(bench, settings=StatsSettings(hessian=False, perturb_around=args.around))[0]
        around = [f"{n}@{args.around}" for n in ("kl", "output-mse")]
        proxies |= {a: (get_proxy(a.split("@")[0]), local) for a in around}
    ranked = {n: rank_proxy(p, s, held) for n, (p, s) in proxies.items()}
    print(f"{bench.name}, held-out split ({len(held)} configurations, never searched): mean ρ in %")
    print(f"{'proxy':<28}{'mean ρ (all)':>14}{'ρ | size':>10}")
    for n, r in ranked.items():
        print(f"{n:<28}{r.rho_all * 100 if r.error is None else float('nan'):>14.2f}{r.partial * 100:>10.2f}")
    usable = {n: r for n, r in ranked.items() if r.error is None and n in HANDCRAFTED and n != "mean-bits"}
    best = max(usable, key=lambda n: usable[n].rho_all)
    quality = np.array([e.quality for e in held])
    for n in [*args.evolved, *around]:
        for other in ("mean-bits", best):
            d, lo, hi = paired_bootstrap(ranked[n].scores, ranked[other].scores, quality)
            print(f"{n} − {other}: {d * 100:+.2f} points [{lo * 100:+.2f}, {hi * 100:+.2f}]")

    model, layers, source = bench_model(bench)
    fmt = bench.weight_format
    settings = QuantSettings(32, False, group_size=fmt.group_size, asymmetric=fmt.asymmetric)
    tokens, targets = source.evaluation(BENCH_WINDOWS + args.windows)
    tokens, targets = tokens[BENCH_WINDOWS:], targets[BENCH_WINDOWS:]
    calib = source.calibration()[0]
    choices = bench.header["bit_choices"]
    rows = [("full precision", None, None, window_losses(model, tokens, targets))]  # (label, proxy, budget, losses)
    for b in (2, 3, 4):
        qmodel = quantize_model(model, layers, [b] * len(layers), calib, settings)
        rows.append(
            (
                f"uniform {b}-bit ({average_bits(layers, b, fmt):.3f})",
                None,
                None,
                window_losses(qmodel, tokens, targets),
            )
        )
    for budget in (float(b) for b in args.budgets.split(",")):
        for n in dict.fromkeys([best, "mean-bits", "fisher", "hawq-v2", "evoproxy-zoo", *args.evolved, *around]):
            size = size_mb_at_average_bits(layers, budget, fmt=fmt)
            problem = proxy_problem(*proxies[n], size, w_bits=choices, act_bits=32, fixed={})
            bits = allocate(problem, "ilp").w_bits
            qmodel = quantize_model(model, layers, bits, calib, settings)
            label = f"{n} @ {budget:g} ({average_bits(layers, bits, fmt):.3f})"
            rows.append((label, n, budget, window_losses(qmodel, tokens, targets)))
    uniform3 = rows[2][3]
    best_at = {budget: v for _, n, budget, v in rows if n == best}
    print(
        f"\nperplexity on {len(tokens)} test windows of {source.spec} the bench did not use "
        f"({len(tokens) * tokens.shape[1]} tokens); in brackets: 95 % bootstrap interval over windows"
    )
    print(f"{'configuration (average bits)':<44}{'perplexity':>11}  {'− uniform 3-bit':>28}  {'− ' + best:>28}")
    for label, n, budget, v in rows:
        row = f"{label:<44}{math.exp(v.mean()):>11.3f}"
        for ref in (uniform3, best_at.get(budget)):
            if n is None or ref is None or ref is v:
                row += f"  {'':>28}"
                continue
            d, lo, hi = ppl_difference(v, ref)
            row += f"  {d:+9.3f} [{lo:+7.3f}, {hi:+7.3f}]"
        print(row)


if __name__ == "__main__":
    main()
