"""The choice of a run's result: among its fittest distinct proxies, the best on the search
configurations its fitness never saw. Fitness on a small sample flatters the proxies that
overfit it; the validation ρ tracks the held-out split far better."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..proxy import prepare_inputs
from ..stats import ModelStats
from .fitness import BenchesTask, FitnessTask
from .operators import Individual, behaviour, merit
from .settings import EvolutionSettings
from .store import RunStore, row_parts


def fittest_distinct(rows, k: int, merit: Callable = lambda row: row["fitness"]) -> list:
    """The `k` candidates rows of highest `merit` (ties: the earlier) that rank the fitness
    sample differently from every fitter one: proxies of equal ρ@k parts count once."""
    picks, seen = [], set()
    for row in sorted(rows, key=lambda r: (-merit(r), r["id"])):
        key = behaviour(row_parts(row))
        if key not in seen:
            seen.add(key)
            picks.append(row)
            if len(picks) >= k:
                break
    return picks


def select_final(
    store: RunStore,
    settings: EvolutionSettings,
    stats: list[ModelStats],
    validation: list[tuple[np.ndarray, np.ndarray]],
    iteration: int,
    log: Callable[[str], None] | None = None,
) -> Individual:
    """The run's result after `iteration`: among the `select_top` fittest candidates in `store`
    with distinct behaviour, the best on the `validation` configurations (bits, accuracies per
    bench, judged on that bench's `stats`; ties: the fitter, then the earlier); the fittest
    where select_top is 0 or a bench has fewer than 4 validation configurations. Stored as
    `final` with the iteration it belongs to. `log` gets progress lines while the Q they read is computed."""
    parsimony = settings.parsimony

    def row_merit(row) -> float:  # the genome is parsed only where parsimony needs its complexity
        return merit(store.genome(row), row["fitness"], parsimony) if parsimony else row["fitness"]

    picks = []
    for row in fittest_distinct(store.candidates("status = 'ok'"), max(1, settings.select_top), row_merit):
        genome = store.genome(row)
        picks.append(Individual(genome, merit(genome, row["fitness"], parsimony), behaviour(row_parts(row))))
    if settings.select_top and all(len(acc) >= 4 for _, acc in validation):
        task = BenchesTask([FitnessTask(bits, acc) for bits, acc in validation], settings.aggregate)
        inputs = [prepare_inputs(s) for s in stats]
        if any("Q" in ind.genome.names for ind in picks):
            task.compute_quantization_errors(inputs, log)
        for ind in picks:
            outcome = task.judge(ind.genome, inputs, settings.csp)
            ind.validation = outcome.fitness if outcome.ok else float("-inf")
        best = max(
            enumerate(picks), key=lambda p: (merit(p[1].genome, p[1].validation, parsimony), p[1].fitness, -p[0])
        )[1]
    else:
        best = picks[0]
    store.put(
        final={
            "iteration": iteration,
            "hash": best.genome.wl_hash(),
            "fitness": best.fitness,
            "validation": best.validation if np.isfinite(best.validation) else None,
            "validation_configs": sum(len(acc) for _, acc in validation),
            "among": len(picks),
        }
    )
    return best
