"""Per-candidate proxy evaluation time per search space, on the default model's cached statistics.

For each space, a fixed seeded set of random candidates (OSP sampling, as the evolution draws
them) is evaluated `--repeats` times; each run gives the mean time per candidate, and the median
over runs is printed, for all candidates (invalid ones stop at their first failing operation)
and for the valid ones alone. The last two columns time drawing a candidate and its WL hash,
the other per-candidate costs of the evolution loop.

Usage: python benchmarks/proxy_eval_speed.py [--candidates 200] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from evoproxy.model import calibration_batch, load_model
from evoproxy.proxy import Genome, load_space, prepare_inputs, sample_genome
from evoproxy.stats import load_or_compute_stats


def _median_ms_per_candidate(fn, items, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        for item in items:
            fn(item)
        runs.append((time.perf_counter() - start) / len(items))
    return 1e3 * statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the evolution parallelises over candidates instead)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model, name = load_model("default")
    images, labels = calibration_batch(64)
    stats, _ = load_or_compute_stats(model, images, labels, name)
    inputs = prepare_inputs(stats)
    print(
        f"{name}: {len(stats.layers)} layers, {args.candidates} candidates per space, median of "
        f"{args.repeats} runs, {args.threads} torch thread(s); milliseconds per candidate"
    )
    print(f"{'space':<11} {'all':>7} {'valid':>7} {'valid %':>8} {'cand/s':>7} {'sample':>7} {'hash':>7}")
    for space_name in ("sequential", "branched", "dag"):
        space = load_space(space_name)
        rng = random.Random(args.seed)
        genomes = [sample_genome(space, rng) for _ in range(args.candidates)]
        valid = [g for g in genomes if g.evaluate(inputs).valid]
        all_ms = _median_ms_per_candidate(lambda g: g.evaluate(inputs), genomes, args.repeats)
        valid_ms = _median_ms_per_candidate(lambda g: g.evaluate(inputs), valid, args.repeats)
        sample_ms = _median_ms_per_candidate(lambda _: sample_genome(space, rng), genomes, args.repeats)
        # Genome rebuilt from its data each time, so that its cached hash is not reused.
        hash_ms = _median_ms_per_candidate(lambda g: Genome.from_dict(g.to_dict()).wl_hash(), genomes, args.repeats)
        hash_ms -= _median_ms_per_candidate(lambda g: Genome.from_dict(g.to_dict()), genomes, args.repeats)
        print(
            f"{space_name:<11} {all_ms:7.2f} {valid_ms:7.2f} {100 * len(valid) / len(genomes):8.1f} "
            f"{1e3 / all_ms:7.0f} {sample_ms:7.2f} {hash_ms:7.2f}"
        )


if __name__ == "__main__":
    main()
