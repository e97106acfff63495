"""Full fitness evaluations per second (screening, proxy evaluation and Spearman@topk on 50
configurations per bench) on the default bench, and on the main bench of every shipped model
at once (a multi-bench run's fitness), with 1 and 2 joblib workers.

A fixed, seeded set of random candidates of the branched space (`--space`: another, such as the
main command's bitaware, whose candidates read the quantization error Q) is judged `--repeats`
times per worker count (after one warm-up that starts the workers and loads the statistics into
them); the median rate is printed, for all candidates and for those whose inputs are among W, G, H, V (no
activations, the largest tensors). The statistics are computed once (cached) before timing.

Usage: python benchmarks/evolve_speed.py [--candidates 1000] [--repeats 3] [--space branched]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from evoproxy.bench import bench_stats, load_bench
from evoproxy.proxy import INPUT, load_space, sample_genome
from evoproxy.evolve import CSPSettings, transfer_benches
from evoproxy.evolve.fitness import search_partition
from evoproxy.evolve.workers import Evaluator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--space", default="branched", help="the search space the candidates are drawn from")
    args = parser.parse_args()
    space, rng = load_space(args.space), random.Random(0)
    everything = [sample_genome(space, rng) for _ in range(args.candidates)]
    no_act = [
        g
        for g in everything
        if all(g.graph.nodes[n]["name"] != "A" for n in g.graph if g.graph.nodes[n]["role"] == INPUT)
    ]
    print(
        f"{args.space} space, {len(everything)} candidates ({len(no_act)} without A), 50 configurations per bench "
        f"and fitness; median of {args.repeats} runs"
    )
    base = None
    for names in (["fmnist-resnet20-w234"], transfer_benches([])):
        benches = []
        for bench in map(load_bench, names):
            _, _, path = bench_stats(bench)
            benches.append((path, *search_partition(bench, 50, 0)[0]))
        print(f"{len(names)} bench{'es' if len(names) > 1 else ''}: {', '.join(names)}")
        for jobs in (1, 2):
            evaluate = Evaluator(benches, CSPSettings(), jobs=jobs)
            evaluate(everything[:20])  # warm-up: worker start and statistics loading are not timed
            for label, genomes in (("all inputs", everything), ("W/G/H/V only", no_act)):
                rates = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    evaluate(genomes)
                    rates.append(len(genomes) / (time.perf_counter() - start))
                rate = statistics.median(rates)
                base = base or rate  # the first figure: one bench, one worker, all inputs
                print(
                    f"  {jobs} worker{'s' if jobs > 1 else ' '}  {label:<13} {rate:7.0f} evaluations/s"
                    f"  ({rate / base:.2f}× one bench, one worker, all inputs)"
                )


if __name__ == "__main__":
    main()
