"""The settings of an evolution run, checked by parameter name (evoproxy.params), and the named
presets a run starts from: "zoo" (a proxy that transfers across the shipped models), "paper"
(EMQ's own setting) and "strong" (a longer search on the paper's bench)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

from ..bench import Bench, load_bench, shipped_benches
from ..errors import EvoproxyError, ParameterError
from ..model import MODELS
from ..params import Interval, OneOf, Satisfies, check_parameters
from ..proxy import Genome, get_genome
from ..stats import QBITS, StatsSettings
from .fitness import AGGREGATES, CSPSettings

MAX_POPULATION, MAX_ISLANDS = 10_000, 256  # beyond these a run could not finish one iteration on one machine


@dataclass(frozen=True)
class EvolutionSettings:
    """Settings of a run; the defaults are the EMQ paper's (|P|=20, N=1000, r=0.25,
    p_c=p_m=0.5, branched space, 50 configurations per fitness, OSP, DPS and CSP on);
    `samples` = 0 judges on the whole search split instead. With several `benches` a candidate
    is judged on each (its model's statistics, its configurations) and its fitness is their
    mean or minimum (`aggregate`). The run's result is the best, on the search configurations
    the fitness never saw, of its `select_top` fittest distinct proxies (0: simply the fittest).
    `EvolutionSettings.preset(name, **overrides)` gives a named preset's settings."""

    benches: tuple[str, ...] = ("fmnist-resnet20-w234",)
    aggregate: str = "mean"
    space: str = "branched"
    population: int = 20
    iterations: int = 1000
    ratio: float = 0.25
    p_crossover: float = 0.5
    p_mutation: float = 0.5
    samples: int = 50
    seed: int = 0
    strategy: str = "evolution"  # or "random": random search with the same budget
    osp: bool = True
    dps: bool = True
    equivalence: bool = True
    csp: CSPSettings = field(default_factory=CSPSettings)
    offspring: int = 1  # offspring per island and iteration (judged together, in parallel with jobs > 1)
    # populations of |P| that evolve apart; each sends its best to the next every `migration` iterations
    islands: int = 1
    migration: int = 50
    patience: int = 0  # iterations without improvement before a restart (0: never restart)
    max_retries: int = 50
    select_top: int = 20
    init: tuple[str, ...] = ()  # genome JSON of proxies the initial population starts with
    parsimony: float = 0.0  # selection compares fitness − parsimony × complexity
    # the benches' output perturbations measured with every other layer at these bits (None: in float)
    perturb_around: int | None = None

    CONSTRAINTS = {
        "benches": Satisfies(lambda b: not isinstance(b, str) and len(b) > 0, "one or more bench names or files"),
        "aggregate": OneOf(tuple(AGGREGATES)),
        "population": Interval(2, MAX_POPULATION, integer=True),
        "iterations": Interval(0, None, integer=True),
        "ratio": Interval(0, 1, closed="right"),
        "p_crossover": Interval(0, 1),
        "p_mutation": Interval(0, 1),
        "samples": [OneOf((0,)), Interval(4, None, integer=True)],  # 0: the whole search split
        "seed": Interval(0, None, integer=True),
        "strategy": OneOf(("evolution", "random")),
        "offspring": Interval(1, MAX_POPULATION, integer=True),
        "islands": Interval(1, MAX_ISLANDS, integer=True),
        "migration": Interval(1, None, integer=True),
        "patience": Interval(0, None, integer=True),
        "max_retries": Interval(1, None, integer=True),
        "select_top": Interval(0, None, integer=True),
        "parsimony": Interval(0, math.inf, closed="left"),
        "perturb_around": [OneOf(QBITS), OneOf((None,))],
    }

    def __post_init__(self):
        check_parameters(self)

    @property
    def stats_settings(self) -> StatsSettings:
        """The settings of the statistics every bench of the run is judged on."""
        return StatsSettings(perturb_around=self.perturb_around)

    def to_dict(self) -> dict:
        """The settings as JSON-ready values (what run.db stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EvolutionSettings:
        """The settings `to_dict` gave, as stored in a run (older runs' shapes included)."""
        known = {f.name for f in fields(cls)} | {"bench"}
        unknown = set(data) - known
        if unknown:
            raise EvoproxyError(f"unknown run setting(s): {', '.join(sorted(unknown))}")
        data = dict(data)
        if "bench" in data:  # runs stored before several benches existed name one
            data["benches"] = [data.pop("bench")]
        try:
            data["init"] = tuple(data.get("init", ()))  # JSON stores tuples as lists
            data["benches"] = tuple(data.get("benches", cls.benches))
            if isinstance(data.get("csp"), dict):
                data["csp"] = CSPSettings(**data["csp"])
            settings = cls(**data)
            if not all(isinstance(name, str) for name in (settings.space, *settings.benches, *settings.init)):
                raise TypeError("space, benches and init must be text")
            for genome in settings.init:  # parsed wherever the run is read
                Genome.from_json(genome)
            return settings
        except (TypeError, ValueError, EvoproxyError) as exc:  # a damaged or foreign run: no flag to blame
            raise EvoproxyError(f"the stored run settings are not valid ({exc})") from None

    @classmethod
    def preset(cls, name: str, **overrides) -> EvolutionSettings:
        """The settings of preset `name` (see PRESETS), with `overrides` in place of its values
        and of the defaults. `benches` may name "zoo" (the main bench of every shipped classifier);
        `init` takes proxy references (fisher, hawq-v2, a genome file, a run folder: see
        `evoproxy.proxy.get_genome`) or Genomes."""
        if name not in PRESETS:
            raise ParameterError(cls.__name__, "preset", str(OneOf(tuple(sorted(PRESETS)))), name)
        values = {**PRESETS[name], **overrides}
        return cls(
            **{
                **values,
                "benches": expand_benches(values.get("benches", cls.benches)),
                "init": tuple(
                    (g if isinstance(g, Genome) else get_genome(g)).to_json() for g in values.get("init", ())
                ),
            }
        )


def transfer_benches(searched: Sequence[str], metric: str = "accuracy", bench_set: str = "zoo") -> list[str]:
    """For every model of `bench_set` (ModelSpec.bench_set: "zoo" or "wide") that none of the
    `searched` benches was made on, its main shipped bench of the same task (the one with the most
    configurations, the first by name among equals): the architectures a run never saw, on which its
    result's transfer is measured. The task is the searched benches' metric (with none searched:
    `metric`), so a search on classifiers is judged on classifiers and one on the language model on
    language models."""
    searched_benches = [load_bench(b) for b in searched]
    seen = {b.header["model"] for b in searched_benches}
    task = searched_benches[0].metric.name if searched_benches else metric
    main: dict[str, Bench] = {}
    for name in shipped_benches():
        bench = load_bench(name)
        model = bench.header["model"]
        if bench.metric.name != task or model in seen or MODELS[model].bench_set != bench_set:
            continue
        if model not in main or len(bench.entries) > len(main[model].entries):
            main[model] = bench
    return [bench.name for bench in main.values()]


BENCH_SETS = ("zoo", "wide")


def expand_benches(names: Sequence[str]) -> tuple[str, ...]:
    """Bench names or files with a bench set's name standing for its main benches: "zoo" for every
    shipped classifier of the zoo preset, "wide" for the wider zoo's (other recipes and layer kinds);
    each bench once, in the order first named."""
    if isinstance(names, str):  # one name, not its letters
        names = (names,)
    return tuple(
        dict.fromkeys(n for b in names for n in (transfer_benches([], bench_set=b) if b in BENCH_SETS else [b]))
    )


# Values of the named presets, the rest taken from EvolutionSettings' defaults. "zoo" searches for
# a proxy that transfers: bit-aware space, fitness on the main bench of every shipped classifier at once
# (the setting of benchmarks/transfer.py, which proves it on the model left out). "paper" is the EMQ
# paper's single-bench setting (EvolutionSettings' defaults); "strong" is the setting of the
# study (docs/results.md) that beats every handcrafted proxy on the default bench's held-out split.
_ONE_BENCH = {"benches": ("fmnist-resnet20-w234",), "space": "branched", "aggregate": "mean"}
PRESETS: dict[str, dict] = {
    "zoo": {
        "benches": ("zoo",),
        "space": "bitaware",
        "aggregate": "mean",
        "population": 20,
        "iterations": 500,
        "samples": 0,
        "islands": 2,
        "init": ("hawq-v2",),
    },
    "paper": {**_ONE_BENCH, "population": 20, "iterations": 1000, "samples": 50, "islands": 1, "init": ()},
    "strong": {**_ONE_BENCH, "population": 50, "iterations": 2000, "samples": 0, "islands": 4, "init": ("fisher",)},
}
