"""The EMQ evolution loop (Algorithm 1) on a DEAP toolbox, persisted in a RunStore.

Each iteration: tournament selection (draw r×|P| individuals, the best two are the parents),
crossover with probability p_c and mutation with p_m; diversity-prompting selection (DPS): a
fresh OSP sample competes with the offspring and the better one is kept; compatibility
screening (CSP): a candidate whose canonical WL hash was seen before in the run is never
evaluated again, and the early-rejection rules of fitness.py run before or instead of the full
evaluation; when no candidate passes, the step is redone (at most `max_retries` times). The
offspring joins the population and the worst individual leaves. With several islands, each
runs this step on its own population and sends its best to the next island every `migration`
iterations. At the end, the result is chosen among the fittest on the search configurations
the fitness never saw (`_select_final`).

Every candidate is written to SQLite as soon as it is judged, and the population and the RNG
state after every iteration, so `resume` continues exactly where a killed run stopped: the
candidates of the unfinished iteration are replayed from the database, never evaluated twice.
With one worker and a fixed seed, a resumed run ends with the same result as an
uninterrupted one.
"""

from __future__ import annotations

import ctypes
import os
import random
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from deap import base
from joblib import Parallel, delayed, parallel_config

from ..bench import Bench, bench_stats, load_bench
from ..errors import EvoproxyError
from ..proxy import Genome, crossover, load_space, mutate, prepare_inputs, sample_genome, space_violation
from ..stats import load_stats_file
from .fitness import AGGREGATES, BenchesTask, CSPSettings, FitnessTask, Outcome
from .store import RunStore


MAX_POPULATION, MAX_ISLANDS = 10_000, 256  # beyond these a run could not finish one iteration on one machine
MAX_TIMEOUT_S = 86_400.0  # a candidate's time limit: a day (the timer cannot take infinity)


@dataclass(frozen=True)
class EvolutionSettings:
    """Settings of a run; the defaults are the EMQ paper's (|P|=20, N=1000, r=0.25,
    p_c=p_m=0.5, branched space, 50 configurations per fitness, OSP, DPS and CSP on);
    `samples` = 0 judges on the whole search split instead. With several `benches` a candidate
    is judged on each (its model's statistics, its configurations) and its fitness is their
    mean or minimum (`aggregate`). The run's result is the best, on the search configurations
    the fitness never saw, of its `select_top` fittest distinct proxies (0: simply the fittest)."""

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
    islands: int = (
        1  # populations of |P| that evolve apart; each sends its best to the next every `migration` iterations
    )
    migration: int = 50
    patience: int = 0  # iterations without improvement before a restart (0: never restart)
    max_retries: int = 50
    select_top: int = 20
    init: tuple[str, ...] = ()  # genome JSON of proxies the initial population starts with
    parsimony: float = 0.0  # selection compares fitness − parsimony × complexity

    def __post_init__(self):
        if not self.benches:
            raise EvoproxyError("--benches names no bench")
        if self.aggregate not in AGGREGATES:
            raise EvoproxyError(f"--aggregate must be one of {', '.join(AGGREGATES)}")
        if not 2 <= self.population <= MAX_POPULATION:
            raise EvoproxyError(f"--population must be between 2 and {MAX_POPULATION}")
        if self.islands > MAX_ISLANDS:
            raise EvoproxyError(f"--islands must be at most {MAX_ISLANDS}")
        if self.seed < 0:
            raise EvoproxyError("--seed must be at least 0")
        if not 0 < self.csp.timeout_s <= MAX_TIMEOUT_S:
            raise EvoproxyError(f"--candidate-timeout must be more than 0 and at most {MAX_TIMEOUT_S:.0f} seconds")
        if self.patience < 0:
            raise EvoproxyError("--patience must be at least 0")
        if not 0 < self.ratio <= 1 or not 0 <= self.p_crossover <= 1 or not 0 <= self.p_mutation <= 1:
            raise EvoproxyError("--ratio must be in (0, 1] and --p-crossover, --p-mutation in [0, 1]")
        if self.samples != 0 and self.samples < 4:
            raise EvoproxyError("--samples must be 0 (the whole search split) or at least 4 configurations")
        if self.strategy not in ("evolution", "random"):
            raise EvoproxyError("--strategy must be evolution or random")
        if self.offspring < 1 or self.islands < 1 or self.migration < 1:
            raise EvoproxyError("--offspring, --islands and --migration must be at least 1")
        if self.offspring > MAX_POPULATION:
            raise EvoproxyError(f"--offspring must be at most {MAX_POPULATION}")
        if self.iterations < 0 or self.select_top < 0:
            raise EvoproxyError("--iterations and --select-top must be at least 0")
        if not 0 <= self.parsimony < float("inf"):
            raise EvoproxyError("--parsimony must be a finite number of at least 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EvolutionSettings":
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
            return cls(**data)
        except (TypeError, ValueError) as exc:  # settings of the wrong type: a damaged or foreign run
            raise EvoproxyError(f"the stored run settings are not valid ({exc})") from None


# Worker-side state: prepared inputs and fitness task per run's benches, built once per process.
_WORKER: dict[tuple, tuple] = {}

Benches = list[tuple[str, np.ndarray, np.ndarray]]  # per bench: statistics file, bits (N, L), accuracies (N,)


def _context(benches: Benches, aggregate: str):
    key = (tuple((path, bits.tobytes(), acc.tobytes()) for path, bits, acc in benches), aggregate)
    if key not in _WORKER:
        _WORKER.clear()
        _WORKER[key] = (
            [prepare_inputs(load_stats_file(path)) for path, _, _ in benches],
            BenchesTask([FitnessTask(bits, acc) for _, bits, acc in benches], aggregate),
        )
    return _WORKER[key]


def _die_with(parent: int) -> None:
    """Have the system kill this worker process when `parent` (the run's process, which started
    it) ends, however it ends: a run killed with kill -9 would otherwise leave its loky workers
    running until their idle timeout (5 minutes). Linux only (prctl PR_SET_PDEATHSIG); nothing
    in the parent itself, or where the worker is not the parent's child."""
    global _DIES_WITH_PARENT
    if _DIES_WITH_PARENT or sys.platform != "linux" or os.getpid() == parent or os.getppid() != parent:
        return
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    _DIES_WITH_PARENT = True
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(1)


_DIES_WITH_PARENT = False


def judge_batch(
    benches: Benches, aggregate: str, genome_jsons: list[str], csp: CSPSettings, parent: int | None = None
) -> list[Outcome]:
    """Judge serialized genomes on each bench's statistics file and configurations (what a worker
    process runs; `parent`: the pid of the run's process, for a local worker to die with it).
    Small tensors: one thread per process is faster than torch's intra-op threads."""
    if parent is not None:
        _die_with(parent)
    torch.set_num_threads(1)
    inputs, task = _context(benches, aggregate)
    return [task.judge(Genome.from_json(g), inputs, csp) for g in genome_jsons]


class Evaluator:
    """Judges candidates in this process (jobs=1) or in joblib workers (local processes, or a
    Dask cluster through joblib's dask backend), on `benches` (statistics file, bits,
    accuracies per bench) with their fitnesses aggregated by `aggregate`."""

    def __init__(
        self, benches: Benches, csp: CSPSettings, aggregate: str = "mean", jobs: int = 1, backend: str | None = None
    ):
        self.args = ([(str(path), bits, acc) for path, bits, acc in benches], aggregate)
        self.csp, self.jobs, self.backend = csp, jobs, backend

    def __call__(self, genomes: list[Genome]) -> list[Outcome]:
        payload = [g.to_json() for g in genomes]
        if self.jobs == 1 and self.backend is None:
            return judge_batch(*self.args, payload, self.csp)
        n = max(1, min(len(payload), abs(self.jobs) if self.jobs > 0 else 2))
        chunks = [payload[i::n] for i in range(n)]
        parent = os.getpid() if self.backend in (None, "loky") else None  # a Dask worker is no child of ours
        with parallel_config(backend=self.backend or "loky", n_jobs=self.jobs):
            parts = Parallel()(delayed(judge_batch)(*self.args, c, self.csp, parent) for c in chunks)
        out: list[Outcome | None] = [None] * len(payload)
        for i, part in enumerate(parts):
            out[i::n] = part
        return out


def search_partition(
    bench: Bench, n: int, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The configurations of a run as (bits (n, L), accuracies (n,)) pairs: the fitness sample,
    n drawn from the bench's search split with the run's seed (n = 0: the whole split), and the
    validation configurations, the rest of the search split."""
    entries = bench.split("search")
    if n == 0:
        bits, acc = Bench.arrays(entries)
        return (bits, acc), (bits[:0], acc[:0])
    if len(entries) < n:
        raise EvoproxyError(
            f"the search split of {bench.name} has {len(entries)} configurations; lower --samples below that"
        )
    chosen = set(np.random.default_rng(seed).choice(len(entries), n, replace=False).tolist())
    return (
        Bench.arrays([e for i, e in enumerate(entries) if i in chosen]),
        Bench.arrays([e for i, e in enumerate(entries) if i not in chosen]),
    )


@dataclass
class Individual:
    genome: Genome
    fitness: float
    behaviour: tuple[float, ...]  # its ρ@k parts: equal parts mean the same ranking of the sample
    validation: float = float("nan")  # mean ρ@k on the validation configurations, where judged there
    island: int = 0


_PART_COLUMNS = (("rho@20%", "rho20"), ("rho@50%", "rho50"), ("rho@100%", "rho100"))


def behaviour(parts: dict[str, float]) -> tuple[float, ...]:
    """The ρ@k parts of a judged candidate, as a comparable key."""
    return tuple(round(parts[key], 12) for key, _ in _PART_COLUMNS)


def _parts_of(row) -> dict[str, float]:
    """The ρ@k parts stored in a candidates row (none for a rejected candidate)."""
    return {key: row[col] for key, col in _PART_COLUMNS if row[col] is not None}


def fittest_distinct(rows, k: int, merit=lambda row: row["fitness"]) -> list:
    """The `k` candidates rows of highest `merit` (ties: the earlier) that rank the fitness
    sample differently from every fitter one: proxies of equal ρ@k parts count once."""
    picks, seen = [], set()
    for row in sorted(rows, key=lambda r: (-merit(r), r["id"])):
        key = behaviour(_parts_of(row))
        if key not in seen:
            seen.add(key)
            picks.append(row)
            if len(picks) >= k:
                break
    return picks


def migrate(population: list[Individual], islands: int) -> list[Individual]:
    """Ring migration: a copy of each island's fittest replaces the weakest of the next island,
    unless that island already ranks the sample the same way. Emigrants are chosen before any
    island changes, so the order of the islands does not matter."""
    members = [[ind for ind in population if ind.island == i] for i in range(islands)]
    emigrants = [max(m, key=lambda ind: ind.fitness) for m in members]
    for i, emigrant in enumerate(emigrants):
        host = members[(i + 1) % islands]
        if emigrant.behaviour in {ind.behaviour for ind in host}:
            continue
        weakest = min(range(len(host)), key=lambda j: host[j].fitness)
        host[weakest] = Individual(emigrant.genome, emigrant.fitness, emigrant.behaviour, island=(i + 1) % islands)
    return [ind for m in members for ind in m]


class Evolution:
    """One run: `Evolution(run_dir, config).run()` starts or continues it; `resume(run_dir)`
    reopens a run with its stored settings."""

    def __init__(
        self,
        run_dir: str | Path,
        config: EvolutionSettings | None = None,
        jobs: int = 1,
        backend: str | None = None,
        log=print,
        device: str = "cpu",
    ):
        self.dir = Path(run_dir)
        self.log, self.device = log, device  # the device computes uncached statistics; a cache hit is the same
        db = self.dir / "run.db"
        if not db.is_file():  # a new run: check its settings before anything is written
            if config is None:
                raise EvoproxyError(f"{self.dir} holds no run to resume (no run.db)")
            paths = self._prepare(config)
            self.store = RunStore(db, new={"config": config.to_dict()})
        else:
            self.store = RunStore(db, write=True)
            try:
                stored = EvolutionSettings.from_dict(self.store.get("config"))
                if config is not None and config != stored:
                    raise EvoproxyError(
                        f"{self.dir} holds a run with other settings; continue it with "
                        f"`evoproxy evolve --resume {self.dir}`, or choose another --name"
                    )
                paths = self._prepare(stored)
            except BaseException:
                self.store.close()
                raise
        c = self.config
        self.evaluate = Evaluator(
            [(p, *f) for p, f in zip(paths, self.fitness_configs)], c.csp, c.aggregate, jobs, backend
        )
        self.rng = random.Random(c.seed)
        self.toolbox = self._toolbox()

    def _prepare(self, c: EvolutionSettings) -> list[Path]:
        """Load what the run's settings name (space, given proxies, benches, their statistics,
        fitness and validation configurations), failing with a clear error on a bad one; returns
        the statistics files that workers load, one per bench."""
        self.config = c
        self.space = load_space(c.space)
        self.given = [Genome.from_json(g) for g in c.init]
        for g in self.given:
            if why := space_violation(g, self.space):
                raise EvoproxyError(
                    f"--init {g.name or g.formula()} does not lie in the {self.space.name} space: {why}"
                )
        self.benches = [load_bench(b) for b in c.benches]
        got = [bench_stats(b, log=lambda m: self.log(f"[stats] {m}"), device=self.device) for b in self.benches]
        self.stats = [stats for stats, _, _ in got]
        partitions = [search_partition(b, c.samples, c.seed) for b in self.benches]
        self.fitness_configs = [fit for fit, _ in partitions]
        self.validation = [val for _, val in partitions]
        return [path for _, _, path in got]

    # -- the DEAP toolbox: one small registered function per step, swappable one at a time ----

    def _toolbox(self) -> base.Toolbox:
        c, tb = self.config, base.Toolbox()
        tb.register("sample", sample_genome, self.space, self.rng, c.osp)
        tb.register("mate", crossover, space=self.space, rng=self.rng)
        tb.register("mutate", mutate, space=self.space, rng=self.rng, osp=c.osp)
        tb.register("select", self._tournament)
        return tb

    def _merit(self, genome: Genome, fitness: float) -> float:
        """What selection compares: `fitness` less the parsimony penalty; the fitness itself where
        parsimony is 0."""
        return fitness - self.config.parsimony * genome.complexity if self.config.parsimony else fitness

    def _tournament(self, population: list[Individual]) -> tuple[Genome, Genome]:
        """Draw r×|P| individuals; the two fittest are the parents, in random order."""
        k = max(2, round(self.config.ratio * len(population)))
        drawn = self.rng.sample(population, min(k, len(population)))
        top = sorted(drawn, key=lambda ind: -ind.fitness)[:2]
        self.rng.shuffle(top)
        return top[0].genome, top[-1].genome

    def _propose(self, population: list[Individual]) -> list[tuple[Genome, str]]:
        """Candidates for one offspring slot: the varied child and, with DPS, a fresh sample."""
        c, tb = self.config, self.toolbox
        if c.strategy == "random":
            return [(tb.sample(), "random")]
        a, b = tb.select(population)
        child = tb.mate(a, b)[0] if self.rng.random() < c.p_crossover else a
        if self.rng.random() < c.p_mutation:
            child = tb.mutate(child)
        return [(child, "offspring")] + ([(tb.sample(), "random")] if c.dps else [])

    # -- judging with equivalence checking, replay and persistence ------------------------------

    def _judge(self, proposals: list[tuple[Genome, str]], iteration: int, counts: Counter) -> list[Outcome | None]:
        """Outcomes of proposed candidates; None for a repeat of a candidate already seen."""
        fresh, slots = [], []
        outcomes: list[Outcome | None] = [None] * len(proposals)
        for i, (g, origin) in enumerate(proposals):
            h = g.wl_hash()
            if h in self.replay:
                outcomes[i] = self.replay.pop(h)
                self.seen.add(h)
                counts["replayed"] += 1
            elif self.config.equivalence and h in self.seen:
                counts["duplicates"] += 1
            else:
                self.seen.add(h)
                fresh.append(g)
                slots.append(i)
        for i, outcome in zip(slots, self.evaluate(fresh) if fresh else []):
            g, origin = proposals[i]
            self.store.add_candidate(g.wl_hash(), g.to_json(), g.formula(), outcome, iteration, origin)
            outcomes[i] = outcome
            counts["evaluated"] += 1
            if not outcome.ok:
                counts[outcome.rule] += 1
        return outcomes

    def _initial(
        self, iteration: int, counts: Counter, keep: list[Individual] = (), given: list[Genome] = ()
    ) -> list[Individual]:
        """The `given` proxies (dealt round the islands) and the individuals in `keep`, then fresh
        OSP samples that fill every island up to |P|."""
        c = self.config
        population = list(keep)
        proposals = [(g, "given") for g in given]
        for k, ((g, _), o) in enumerate(zip(proposals, self._judge(proposals, iteration, counts))):
            if o is None or not o.ok:
                self.log(
                    f"the given proxy {g.formula()} is left out: "
                    f"{'a repeat' if o is None else f'{o.rule} ({o.reason})'}"
                )
            elif sum(p.island == k % c.islands for p in population) < c.population:
                population.append(Individual(g, self._merit(g, o.fitness), behaviour(o.parts), island=k % c.islands))
        for _ in range(c.max_retries * c.population * c.islands):
            open_slots = [
                i for i in range(c.islands) for _ in range(c.population - sum(p.island == i for p in population))
            ]
            if not open_slots:
                break
            proposals = [(self.toolbox.sample(), "init") for _ in open_slots]
            judged = [
                (g, o)
                for (g, _), o in zip(proposals, self._judge(proposals, iteration, counts))
                if o is not None and o.ok
            ]
            for island, (g, o) in zip(open_slots, judged):
                population.append(Individual(g, self._merit(g, o.fitness), behaviour(o.parts), island=island))
        if any(sum(p.island == i for p in population) < c.population for i in range(c.islands)):
            raise EvoproxyError(f"could not find {c.population * c.islands} valid proxies in {self.space.name}")
        return population

    # -- the loop ---------------------------------------------------------------------------------

    def _load_state(self) -> tuple[int, list[Individual], dict]:
        state = self.store.get("state")
        rows = self.store.candidates()
        done = state["iteration"] if state else -1
        self.seen = {r["hash"] for r in rows if r["iteration"] <= done}
        self.replay = {
            r["hash"]: Outcome(
                r["fitness"] if r["fitness"] is not None else float("nan"),
                _parts_of(r),
                None if r["status"] == "ok" else r["status"],
                r["reason"],
                r["seconds"],
            )
            for r in rows
            if r["iteration"] == done + 1
        }
        if not state:
            return 0, [], {"elapsed": 0.0, "stale": 0, "restarts": 0}
        self.rng.setstate(_tuples(state["rng"]))
        by_hash = {r["hash"]: r for r in rows}
        islands = state.get("islands") or [0] * len(state["population"])  # runs of one island stored none
        population = []
        for h, i in zip(state["population"], islands):
            genome = Genome.from_json(by_hash[h]["genome"])
            population.append(
                Individual(
                    genome, self._merit(genome, by_hash[h]["fitness"]), behaviour(_parts_of(by_hash[h])), island=i
                )
            )
        return done + 1, population, state["extra"]

    def _save_state(self, iteration: int, population: list[Individual], extra: dict) -> None:
        self.store.put(
            state={
                "iteration": iteration,
                "rng": self.rng.getstate(),
                "population": [ind.genome.wl_hash() for ind in population],
                "islands": [ind.island for ind in population],
                "extra": extra,
            }
        )

    def _budget(self, hours: float | None, iterations: int | None) -> tuple[int, bool]:
        """The last iteration to run, and whether only the time budget ends the run (--hours alone)."""
        total = self.config.iterations if iterations is None else iterations
        return total, hours is not None and iterations is None and self.config.iterations == 0

    @property
    def iteration(self) -> int:
        """The iteration the run does next (0: a new run, which starts with its population)."""
        state = self.store.get("state")
        return state["iteration"] + 1 if state else 0

    def finished(self, hours: float | None = None, iterations: int | None = None) -> bool:
        """Whether `run(hours, iterations)` has nothing left to do: every iteration of the budget
        is done and the result chosen after the last."""
        total, endless = self._budget(hours, iterations)
        final = self.store.get("final")
        return (
            not endless
            and 0 < self.iteration > total
            and final is not None
            and final["iteration"] == self.iteration - 1
        )

    def run(self, hours: float | None = None, iterations: int | None = None, log_every: int = 25) -> Individual:
        """Run (or continue) until `iterations` (default: the config's) or `hours` of wall time
        have passed in total. Returns the best individual and writes best.json, best.py."""
        c = self.config
        total, endless = self._budget(hours, iterations)
        it, population, extra = self._load_state()
        start = time.monotonic() - extra["elapsed"]

        def more() -> bool:  # the initial population is always completed, whatever the budget
            if not population:
                return True
            if hours is not None and time.monotonic() - start > hours * 3600:
                return False
            return endless or it <= total

        window = Counter()  # what happened since the last progress line
        try:
            while more():
                t0, counts = time.monotonic(), Counter()
                if it == 0 or not population:
                    population = self._initial(it, counts, given=self.given)
                else:
                    population = self._step(population, it, counts)
                    best = max(ind.fitness for ind in population)
                    extra["stale"] = 0 if best > extra.get("best", -2.0) else extra["stale"] + 1
                    extra["best"] = max(best, extra.get("best", -2.0))
                    if c.islands > 1 and it % c.migration == 0:
                        population = migrate(population, c.islands)
                    # restart: each island keeps its best, the rest is resampled
                    if c.patience and extra["stale"] >= c.patience:
                        elites = [
                            max((p for p in population if p.island == i), key=lambda ind: ind.fitness)
                            for i in range(c.islands)
                        ]
                        population = self._initial(it, counts, keep=elites)
                        extra["stale"], extra["restarts"] = 0, extra["restarts"] + 1
                        extra["restarted_at"] = [*extra.get("restarted_at", []), it]  # marked in fitness.png
                fits = [ind.fitness for ind in population]
                elapsed = time.monotonic() - t0
                rejected = {k: v for k, v in counts.items() if k not in ("evaluated", "duplicates", "replayed") and v}
                self.store.add_history(
                    it, max(fits), statistics.median(fits), counts["evaluated"], rejected, counts["duplicates"], elapsed
                )
                extra["elapsed"] = time.monotonic() - start
                self._save_state(it, population, extra)
                window.update(counts)
                window["seconds"] += elapsed
                if log_every and (it % log_every == 0 or it == total):  # 0: no progress lines
                    self.log(
                        f"iteration {it}/{'∞' if endless else total}: best {max(fits):.4f} "
                        f"median {statistics.median(fits):.4f} | {_window_line(window)}"
                    )
                    window = Counter()
                it += 1
        except KeyboardInterrupt:  # Ctrl-C: the best so far is saved as a finished run's result would be
            if self.store.count("status = 'ok'"):
                self._save_result(it - 1)
            raise
        return self._save_result(it - 1)

    def _save_result(self, iteration: int) -> Individual:
        """Choose the run's result after `iteration` and write it as best.json and best.py."""
        best = self._select_final(iteration)
        named = Genome(best.genome.graph, self.config.space, name=self.dir.name)  # tables show the run's name
        named.save(self.dir / "best.json")
        (self.dir / "best.py").write_text(named.to_python())
        return best

    def _select_final(self, iteration: int) -> Individual:
        """The run's result: among the `select_top` fittest candidates with distinct behaviour, the
        best on the validation configurations (ties: the fitter, then the earlier). Fitness on a
        small sample flatters the proxies that overfit it; the validation ρ tracks the held-out
        split far better. Stored as `final` with the iteration it belongs to."""

        def merit(row) -> float:  # the genome is parsed only where parsimony needs its complexity
            if not self.config.parsimony:
                return row["fitness"]
            return self._merit(Genome.from_json(row["genome"]), row["fitness"])

        picks = []
        for row in fittest_distinct(self.store.candidates("status = 'ok'"), max(1, self.config.select_top), merit):
            genome = Genome.from_json(row["genome"])
            picks.append(Individual(genome, self._merit(genome, row["fitness"]), behaviour(_parts_of(row))))
        if self.config.select_top and all(len(acc) >= 4 for _, acc in self.validation):
            task = BenchesTask([FitnessTask(bits, acc) for bits, acc in self.validation], self.config.aggregate)
            inputs = [prepare_inputs(stats) for stats in self.stats]
            for ind in picks:
                outcome = task.judge(ind.genome, inputs, self.config.csp)
                ind.validation = outcome.fitness if outcome.ok else float("-inf")
            best = max(
                enumerate(picks), key=lambda p: (self._merit(p[1].genome, p[1].validation), p[1].fitness, -p[0])
            )[1]
        else:
            best = picks[0]
        self.store.put(
            final={
                "iteration": iteration,
                "hash": best.genome.wl_hash(),
                "fitness": best.fitness,
                "validation": best.validation if np.isfinite(best.validation) else None,
                "validation_configs": sum(len(acc) for _, acc in self.validation),
                "among": len(picks),
            }
        )
        return best

    def _step(self, population: list[Individual], it: int, counts: Counter) -> list[Individual]:
        """One iteration on every island: `offspring` children each, judged in one batch; each
        island keeps its winners and loses as many of its weakest."""
        members = [[ind for ind in population if ind.island == i] for i in range(self.config.islands)]
        slots = [i for i in range(self.config.islands) for _ in range(self.config.offspring)]
        winners: list[Individual] = []
        for _ in range(self.config.max_retries):
            proposals = [self._propose(members[i]) for i in slots]
            flat = [p for group in proposals for p in group]
            outcomes = iter(self._judge(flat, it, counts))
            retry = []
            for island, group in zip(slots, proposals):
                judged = [(g, next(outcomes)) for g, _ in group]
                passed = [(g, o) for g, o in judged if o is not None and o.ok]
                if self.config.equivalence:  # a new formula that ranks the sample exactly like a member adds nothing
                    known = {ind.behaviour for ind in members[island] + winners if ind.island == island}
                    counts["same behaviour"] += sum(behaviour(o.parts) in known for _, o in passed)
                    passed = [(g, o) for g, o in passed if behaviour(o.parts) not in known]
                if passed:  # DPS: the better of offspring and fresh sample (offspring on ties)
                    g, o = max(passed, key=lambda p: self._merit(p[0], p[1].fitness))
                    winners.append(Individual(g, self._merit(g, o.fitness), behaviour(o.parts), island=island))
                else:
                    retry.append(island)
            slots = retry
            if not slots:
                break
        for winner in winners:
            members[winner.island].append(winner)
        for w in winners:  # the weakest leaves (the oldest among equals)
            m = members[w.island]
            m.pop(min(range(len(m)), key=lambda j: m[j].fitness))
        return [ind for m in members for ind in m]

    def close(self) -> None:
        self.store.close()


def _window_line(window: Counter) -> str:
    """Evaluation rate, and the share of proposed candidates that each screening rule removed,
    over the iterations since the last progress line."""
    proposed = window["evaluated"] + window["duplicates"] + window["replayed"]
    rate = window["evaluated"] / window["seconds"] if window["seconds"] > 0 else float("inf")
    rules = {k: v for k, v in window.items() if k not in ("evaluated", "replayed", "seconds") and v}
    shares = (
        " ".join(
            f"{'WL repeats' if k == 'duplicates' else k} {100 * v / proposed:.1f}%"
            for k, v in sorted(rules.items(), key=lambda p: -p[1])
        )
        if proposed
        else ""
    )
    return f"{rate:.0f} evals/s | screened out of {proposed} proposed: {shares or 'none'}"


def _tuples(value):
    """JSON turns the tuples of random.getstate() into lists; setstate needs tuples back."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value
