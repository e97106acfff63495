"""Leave one architecture (or recipe) out: does an evolved proxy rank the configurations of a
model that its search never saw better than what a user already has?

For every architecture (fold), proxies are evolved on the main benches of the models of all the
other architectures at once (one run per seed; runs go to a temporary folder) and judged on every
configuration of each left-out model's main bench (with `--sets zoo,wide`, every checkpoint of an
architecture, whatever its recipe, is left out together). With `--by recipe` a fold is a training
recipe instead (model/recipes.py): every checkpoint trained by it is left out, whatever its
architecture, and the search sees only the other recipes' checkpoints. Judged by mean ρ over all
configurations (mean of ρ@20/50/100 %) and Spearman ρ with model size held fixed ("ρ | size"),
beside the mean-bit-width baseline, HAWQ-V2, Fisher, the tools' output-mse, KL and Taylor scores,
and the best handcrafted proxy of that fold (tools' scores included). The difference to the best
handcrafted proxy comes with a 95 % paired bootstrap interval (resampling the configurations;
the evolved figure is the mean over seeds on each resample). Then the user's question: the PTQ
accuracy of each proxy's knapsack allocation on the left-out model at three size budgets (a
quarter, half and three quarters of the way from every free layer at the lowest bit choice to
every one at the highest), seed 0's evolved proxy for the evolved column.

With `--perturb-around B` the searches read output perturbations measured with every other layer at
B bits (`evoproxy evolve --perturb-around`), and the tools' scores so measured ("kl@B", ...) join
the baselines beside the tools' own, measured with every other layer in float.

Usage: python benchmarks/transfer.py [--seeds 3] [--space bitaware] [--aggregate mean]
       [--iterations 1000] [--population 20] [--islands 1] [--samples 50] [--init hawq-v2] [--parsimony 0]
       [--folds resnet20,...] [--sets zoo] [--by architecture] [--eval-size 2000] [--no-allocation]
       [--perturb-around B]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evoproxy.allocation import allocate, proxy_problem
from evoproxy.bench import Bench, bench_model, bench_stats, best_handcrafted, load_bench, paired_bootstrap, rank_proxy
from evoproxy.proxy import HANDCRAFTED, get_genome
from evoproxy.quant import PtqEvaluator, QuantSettings, model_size_mb
from evoproxy.evolve import Evolution, EvolutionSettings, expand_benches
from evoproxy.model import MODELS
from evoproxy.stats import StatsSettings
from evoproxy.evolve.fitness import AGGREGATES

SHOWN = ("mean-bits", "hawq-v2", "fisher", "output-mse", "kl", "taylor")
AROUND = ("output-mse", "kl", "sqnr")  # the scores whose measurement --perturb-around changes


def allocation_accuracy(proxies: dict, bench: Bench, eval_size: int) -> tuple[list[float], dict[str, list[float]]]:
    """PTQ top-1 of the allocation of each proxy of `proxies` (label → (proxy, the statistics of the
    bench's model it reads)) on the bench's model at three size budgets."""
    header = bench.header
    model, layers, source = bench_model(bench)
    choices = header["bit_choices"]
    fixed = {
        i: (header["fixed"][l.name], header["act_bits"]) for i, l in enumerate(layers) if l.name in header["fixed"]
    }
    low = model_size_mb(layers, [fixed[i][0] if i in fixed else min(choices) for i in range(len(layers))])
    high = model_size_mb(layers, [fixed[i][0] if i in fixed else max(choices) for i in range(len(layers))])
    budgets = [low + f * (high - low) for f in (0.25, 0.5, 0.75)]
    evaluator = PtqEvaluator.on_data(model, layers, eval_size, QuantSettings(header["act_bits"], False), source)
    out = {}
    for label, (proxy, stats) in proxies.items():
        out[label] = []
        for budget in budgets:
            problem = proxy_problem(proxy, stats, budget, w_bits=choices, act_bits=header["act_bits"], fixed=fixed)
            out[label].append(evaluator.measure(allocate(problem).w_bits))
    return budgets, out


def allocation_line(proxies: dict, bench: Bench, eval_size: int) -> str:
    """`allocation_accuracy`'s figures as one indented line of the study's output."""
    budgets, acc = allocation_accuracy(proxies, bench, eval_size)
    return (
        f"  PTQ top-1 on the first {eval_size} test images at "
        + ", ".join(f"{b:.4f}" for b in budgets)
        + " MB: "
        + "; ".join(f"{n} " + "/".join(f"{a:.2f}" for a in v) for n, v in acc.items())
    )


def report(name: str, bench: Bench, stats, around, evolved: list, proxies: list, args) -> tuple:
    """Print a left-out bench's line (and its allocation accuracies); its row of the summary. `stats`
    are the model's statistics with the perturbations measured in float, `around` with them measured
    around --perturb-around bits (None without it), which the evolved proxies read."""
    entries = bench.split("all")
    truth = Bench.arrays(entries)[1]
    hand = {n: rank_proxy(make(), stats, entries, 0, 1) for n, make in HANDCRAFTED.items()}
    if around is not None:
        hand |= {f"{n}@{args.perturb_around}": rank_proxy(HANDCRAFTED[n](), around, entries, 0, 1) for n in AROUND}
    shown = [*SHOWN, *(f"{n}@{args.perturb_around}" for n in AROUND if around is not None)]
    best_hand = best_handcrafted(hand)
    ours = [100 * r.rho_all for r in evolved]
    usable = [r.scores for r in evolved if r.error is None]
    diff = paired_bootstrap(usable, hand[best_hand].scores, truth) if usable else (float("nan"),) * 3
    print(
        f"{name} ({len(entries)} configurations): evolved {statistics.mean(ours):.2f} ± "
        f"{statistics.stdev(ours) if len(ours) > 1 else 0:.2f} (ρ | size "
        f"{statistics.mean(100 * r.partial for r in evolved):.2f}); "
        + ", ".join(f"{n} {100 * hand[n].rho_all:.2f} (ρ | size {100 * hand[n].partial:.2f})" for n in shown)
        + f"; best handcrafted {best_hand} {100 * hand[best_hand].rho_all:.2f}; evolved − it "
        f"{100 * diff[0]:+.2f} [{100 * diff[1]:+.2f}, {100 * diff[2]:+.2f}]",
        flush=True,
    )
    if not args.no_allocation:
        chosen = {
            "evolved": (proxies[0], stats if around is None else around),
            **{n: (HANDCRAFTED[n](), stats) for n in SHOWN},
        }
        chosen |= {f"{n}@{args.perturb_around}": (HANDCRAFTED[n](), around) for n in AROUND if around is not None}
        print(allocation_line(chosen, bench, args.eval_size), flush=True)
    return name, statistics.mean(ours), {n: 100 * r.rho_all for n, r in hand.items()}, best_hand, diff


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--space", default="bitaware")
    parser.add_argument("--aggregate", default="mean", choices=sorted(AGGREGATES))
    parser.add_argument("--iterations", type=int, default=EvolutionSettings.iterations)
    parser.add_argument("--population", type=int, default=EvolutionSettings.population)
    parser.add_argument("--islands", type=int, default=EvolutionSettings.islands)
    parser.add_argument("--samples", type=int, default=EvolutionSettings.samples)
    parser.add_argument("--select-top", type=int, default=EvolutionSettings.select_top)
    parser.add_argument("--init", default="", help="proxies the population starts from, as evoproxy evolve --init")
    parser.add_argument("--parsimony", type=float, default=0.0, help="as evoproxy evolve --parsimony")
    parser.add_argument(
        "--by", default="architecture", choices=("architecture", "recipe"), help="what a fold leaves out"
    )
    parser.add_argument(
        "--folds", default="", help="left-out architectures or recipes, comma-separated (default: every one)"
    )
    parser.add_argument(
        "--sets", default="zoo", help="the bench sets whose main benches take part: zoo, wide, zoo,wide"
    )
    parser.add_argument("--eval-size", type=int, default=2000, help="test images for the allocation accuracies")
    parser.add_argument("--no-allocation", action="store_true", help="skip the allocation accuracies")
    parser.add_argument("--perturb-around", type=int, help="as evoproxy evolve --perturb-around")
    args = parser.parse_args()
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="evoproxy-transfer-"))
    mains = expand_benches(args.sets.split(","))
    fold_of = {b: getattr(MODELS[load_bench(b).header["model"]], args.by) for b in mains}
    folds = [a for a in dict.fromkeys(fold_of.values()) if not args.folds or a in args.folds.split(",")]
    init = tuple(get_genome(r).to_json() for r in args.init.split(",") if r)
    print(
        f"leave one {args.by} out of {args.sets}: {args.space} space, {args.aggregate} over the other "
        f"architectures' benches, {args.islands} × |P|={args.population}, N={args.iterations}, samples "
        f"{args.samples or 'all'}, {args.seeds} seeds{', init ' + args.init if args.init else ''}, "
        f"parsimony {args.parsimony}"
        + (f", perturbations around {args.perturb_around} bits" if args.perturb_around else "")
        + "; mean ρ over all configurations in %"
    )
    summary = []
    for fold in folds:
        held = {b: load_bench(b) for b in mains if fold_of[b] == fold}
        stats = {b: bench_stats(bench)[0] for b, bench in held.items()}
        settings = StatsSettings(perturb_around=args.perturb_around)
        around = {
            b: bench_stats(bench, settings=settings)[0] if args.perturb_around else None for b, bench in held.items()
        }
        evolved, proxies = {b: [] for b in held}, []
        for seed in range(args.seeds):
            config = EvolutionSettings(
                benches=tuple(b for b in mains if fold_of[b] != fold),
                aggregate=args.aggregate,
                space=args.space,
                population=args.population,
                iterations=args.iterations,
                islands=args.islands,
                samples=args.samples,
                select_top=args.select_top,
                init=init,
                parsimony=args.parsimony,
                perturb_around=args.perturb_around,
                seed=seed,
            )
            start = time.perf_counter()
            evo = Evolution(root / f"{fold}-s{seed}", config, log=lambda m: None)
            best = evo.run()
            evo.close()
            for b, bench in held.items():
                evolved[b].append(
                    rank_proxy(best.genome, stats[b] if around[b] is None else around[b], bench.split("all"), 0, 1)
                )
            proxies.append(best.genome)
            print(
                f"  {fold} left out, seed {seed}: {best.genome.formula()}  (fitness {best.fitness:.4f}, "
                f"{time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        summary += [report(b, bench, stats[b], around[b], evolved[b], proxies, args) for b, bench in held.items()]
    print("\nover the folds (mean ρ over all configurations of the left-out model, in %):")
    gaps = {name: [ours - hand[name] for _, ours, hand, _, _ in summary] for name in summary[0][2]}
    for name in sorted(gaps, key=lambda n: statistics.mean(gaps[n])):
        print(
            f"  evolved − {name:<9} {statistics.mean(gaps[name]):+6.2f} on average, evolved ahead in "
            f"{sum(g > 0 for g in gaps[name])} of {len(summary)} folds"
        )
    gaps = [ours - hand[best] for _, ours, hand, best, _ in summary]
    sure = sum(diff[1] > 0 for *_, diff in summary)
    print(
        f"  evolved − best handcrafted of each fold {statistics.mean(gaps):+6.2f} on average, ahead in "
        f"{sum(g > 0 for g in gaps)} of {len(gaps)} folds ({sure} with the bootstrap interval above 0)"
    )


if __name__ == "__main__":
    main()
