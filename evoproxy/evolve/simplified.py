"""The simplification of a run's result: the shortest proxy of equal fitness on the whole search
split of the run's benches, offered beside the result (simplified.json)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from ..bench import Bench, bench_stats, load_bench
from ..errors import EvoproxyError
from ..proxy import Genome, load_space, prepare_inputs, simplify
from ..stats import StatsSettings
from .fitness import BenchesTask, CSPSettings, FitnessTask
from .runs import run_summary
from .settings import EvolutionSettings


def search_fitness(
    benches: Sequence[str],
    aggregate: str = "mean",
    csp: CSPSettings = CSPSettings(),
    settings: StatsSettings = StatsSettings(),
) -> tuple[Callable[[Genome], float | None], int]:
    """The fitness of a genome (None where the CSP rejects it) on every configuration of the search
    split of `benches`, aggregated over them by `aggregate`, and how many configurations that is.
    The conflict rule is off: it screens candidates by their form, and a simplification judges values."""
    loaded = [load_bench(b) for b in benches]
    configs = [Bench.arrays(b.split("search")) for b in loaded]
    task = BenchesTask([FitnessTask(bits, acc) for bits, acc in configs], aggregate)
    inputs = [prepare_inputs(bench_stats(b, settings=settings)[0]) for b in loaded]
    csp = replace(csp, conflict=False)

    def fitness(genome: Genome) -> float | None:
        outcome = task.judge(genome, inputs, csp)
        return outcome.fitness if outcome.ok else None

    return fitness, sum(len(acc) for _, acc in configs)


def simplified_report(run_dir: str | Path, tolerance: float = 0.0, summary: dict | None = None) -> tuple[str, dict]:
    """The run's result simplified (see proxy.simplify: exact rewrites, then pruning while the fitness
    on the whole search split of the run's benches drops by at most `tolerance`): its text and data.
    The result stays the run's; a shorter simplification is offered as simplified.json in the run
    directory (any older one is removed). `summary`: the run's, when the caller has it."""
    run_dir = Path(run_dir)
    summary = summary or run_summary(run_dir)
    config = EvolutionSettings.from_dict(summary["config"])
    best = summary["genome"]
    try:
        space = load_space(config.space)
    except EvoproxyError:  # a space file moved since the run: simplify without its shape
        space = None
    fitness, n = search_fitness(config.benches, config.aggregate, config.csp, config.stats_settings)
    result = simplify(best, fitness, space, tolerance)
    path = run_dir / "simplified.json"
    data = {**result.to_dict(), "configurations": n}
    on = f"fitness on all {n} search configurations"
    before, after = (f"{f:.4f}" if f is not None else "rejected" for f in (result.fitness_before, result.fitness_after))
    if not result.shorter:
        path.unlink(missing_ok=True)
        return f"simplified: no shorter proxy of equal fitness ({on}: {before}, {result.evaluations} evaluations)", data
    Genome(result.genome.graph, result.genome.space, f"{run_dir.name}-simplified", config.perturb_around).save(path)
    where = (
        ""
        if result.space is None
        else (
            f"; in the {result.space} space"
            if result.in_space
            else f"; outside the {result.space} space ({result.outside})"
        )
    )
    lost = f", tolerance {tolerance:g}" if tolerance else ""
    lines = [
        f"simplified ({result.evaluations} evaluations{lost}; the run's result stays its best proxy):",
        f"  {result.genome.formula()}",
        f"  complexity {result.original.complexity} → {result.genome.complexity}, {on} {before} → {after}"
        f"{where}; saved as {path}",
    ]
    return "\n".join(lines), data
