"""The EMQ evolution loop (Algorithm 1): `Evolution`, one run persisted in a RunStore.

The modules beside it hold the rest: settings.py what a run is given, operators.py the steps
over populations and the DEAP toolbox, workers.py where candidates are judged, checkpoint.py
how a killed run resumes, result.py how the run's result is chosen, progress.py the counts and
progress lines. With one worker and a fixed seed, a resumed run ends with the same candidates
and result as an uninterrupted one.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from ..bench import bench_stats, load_bench
from ..errors import EvoproxyError
from ..files import write_atomically
from ..proxy import INPUT, Genome, load_space, space_violation
from .checkpoint import RunState, load_checkpoint, save_checkpoint
from .fitness import Outcome, search_partition
from .operators import (
    Individual,
    behaviour,
    island_elites,
    join_islands,
    make_toolbox,
    merit,
    migrate,
    propose,
    replace_weakest,
    split_islands,
)
from .progress import SAME_BEHAVIOUR, WL_REPEATS, Tally, progress_line
from .result import select_final
from .settings import EvolutionSettings
from .store import RunStore
from .workers import Evaluator


class Evolution:
    """One run in `run_dir`: `Evolution(run_dir, settings).run()` starts it, and
    `Evolution(run_dir).run()` continues it with its stored settings. Candidates are judged in
    this process (jobs=1) or in `jobs` joblib workers (`backend` "loky" or "dask"); statistics
    not yet cached are computed on `device`. The variation steps are `self.toolbox`'s."""

    def __init__(
        self,
        run_dir: str | Path,
        settings: EvolutionSettings | None = None,
        jobs: int = 1,
        backend: str | None = None,
        log: Callable[[str], None] = print,
        device: str = "cpu",
    ):
        self.dir = Path(run_dir)
        self.log, self.device = log, device
        db = self.dir / "run.db"
        if not db.is_file():  # a new run: check its settings before anything is written
            if settings is None:
                raise EvoproxyError(f"{self.dir} holds no run to resume (no run.db)")
            paths = self._prepare(settings)
            self.store = RunStore(db, new={"config": settings.to_dict()})
        else:
            self.store = RunStore(db, write=True)
            try:
                stored = EvolutionSettings.from_dict(self.store.get("config"))
                if settings is not None and settings != stored:
                    raise EvoproxyError(
                        f"{self.dir} holds a run with other settings; continue it with "
                        f"`evoproxy evolve --resume {self.dir}`, or choose another --name"
                    )
                paths = self._prepare(stored)
            except BaseException:
                self.store.close()
                raise
        self._record_statistics()
        s = self.settings
        self.evaluate = Evaluator(
            [(p, *f) for p, f in zip(paths, self.fitness_configs)], s.csp, s.aggregate, jobs, backend
        )
        self.rng = random.Random(s.seed)
        self.toolbox = make_toolbox(self.space, self.rng, s)
        self.seen: set[str] = set()  # hashes judged in this run: never judged again
        self.replay: dict[str, Outcome] = {}  # outcomes of the unfinished iteration a killed run stored

    def _prepare(self, s: EvolutionSettings) -> list[Path]:
        """Load what the run's settings name (space, given proxies, benches, their statistics,
        fitness and validation configurations), failing with a clear error on a bad one; returns
        the statistics files that workers load, one per bench."""
        self.settings = s
        self.space = load_space(s.space)
        self.given = [Genome.from_json(g) for g in s.init]
        for g in self.given:
            if why := space_violation(g, self.space):
                raise EvoproxyError(
                    f"the init proxy {g.name or g.formula()} does not lie in the {self.space.name} space: {why}"
                )
        self.benches = [load_bench(b) for b in s.benches]
        got = [bench_stats(b, settings=s.stats_settings, log=self._stats_log, device=self.device) for b in self.benches]
        self.stats = [stats for stats, _, _ in got]
        partitions = [search_partition(b, s.samples, s.seed) for b in self.benches]
        self.fitness_configs = [fit for fit, _ in partitions]
        self.validation = [val for _, val in partitions]
        return [path for _, _, path in got]

    def _stats_log(self, msg: str) -> None:
        """Log a line of the statistics' progress."""
        self.log(f"[stats] {msg}")

    def _record_statistics(self) -> None:
        """Store the cache entry (path, sha256) of each bench's statistics, which the report names;
        say so where a resumed run's differ from those its last start used."""
        entries = {b: s.cache_entry for b, s in zip(self.settings.benches, self.stats)}
        before = self.store.get("statistics")
        for bench, entry in entries.items():
            old = before.get(bench) if isinstance(before, dict) else None
            if isinstance(old, dict) and old.get("sha256") != entry["sha256"]:
                self.log(
                    f"the statistics of {bench} are not those the run used so far (cache entry {entry['path']}, "
                    f"sha256 {entry['sha256'][:16]}, was {str(old.get('sha256'))[:16]}): they were recomputed "
                    "or changed, and fitness from now on is judged on them"
                )
        self.store.put(statistics=entries)

    def _merit(self, genome: Genome, fitness: float) -> float:
        return merit(genome, fitness, self.settings.parsimony)

    def _individual(self, genome: Genome, outcome: Outcome, island: int) -> Individual:
        return Individual(genome, self._merit(genome, outcome.fitness), behaviour(outcome.parts), island=island)

    # -- the loop ---------------------------------------------------------------------------------

    def run(self, hours: float | None = None, iterations: int | None = None, log_every: int = 25) -> Individual:
        """Run (or continue) until iteration `iterations` (default: the settings') or `hours` of
        wall time in total, with a progress line every `log_every` iterations (0: none). Returns
        the run's result, also written as best.json and best.py. EMQ's Algorithm 1, with this
        product's additions marked +:

            P := the `init` proxies (+), then OSP samples that pass CSP: |P| on each island (+)
            for i = 1 .. N:
                on each island (+), for each of its `offspring` slots (+), all judged in one batch:
                    parents := the two fittest of r × |P| drawn at random
                    child := crossover(parents) with probability p_c; mutate(child) with p_m
                    fresh := an OSP sample                                    (DPS)
                    offspring := the fitter of child and fresh among those that pass CSP
                        and rank the sample unlike every member of the island (+)
                    none: propose again (at most `max_retries` times)
                each island appends its offspring and removes as many of its weakest
                every `migration` iterations: each island's best replaces the weakest of the next (+)
                `patience` iterations without improvement: each island keeps its best,
                    the rest is sampled again (+)
            result := of the `select_top` fittest distinct proxies, the best on the search
                      configurations the fitness never saw (+)

        Every candidate is stored as it is judged, and the state after every iteration, so that
        a run killed at any moment continues where it stopped (checkpoint.py)."""
        s, (total, endless) = self.settings, self._budget(hours, iterations)
        if "Q" in self.space.choices[INPUT]:  # before the first candidate that reads it
            self.evaluate.compute_quantization_errors(self._stats_log)
        resumed = load_checkpoint(self.store, self.rng, self._merit)
        it, population, state = resumed.iteration, resumed.population, resumed.state
        self.seen, self.replay = resumed.seen, resumed.replay
        start = time.monotonic() - state.elapsed
        window = Tally()  # what happened since the last progress line
        try:
            # The initial population is always completed, whatever the budget.
            while not population or (
                (hours is None or time.monotonic() - start <= hours * 3600) and (endless or it <= total)
            ):
                counts, t0 = Tally(), time.monotonic()
                if not population:
                    # Initial population: the given proxies, then fresh samples that pass CSP.
                    population = self._initial(it, counts, given=self.given)
                else:
                    # Selection, variation, DPS and CSP: the offspring replace each island's weakest.
                    population = self._step(population, it, counts)
                    state.observe(max(ind.fitness for ind in population))
                    # Migration around the ring of islands.
                    if s.islands > 1 and it % s.migration == 0:
                        population = migrate(population, s.islands)
                    # Restart: each island keeps its best, the rest is sampled again.
                    if s.patience and state.stale >= s.patience:
                        population = self._initial(it, counts, keep=island_elites(population, s.islands))
                        state.restart(it)
                # Record the iteration, then the state to resume from after it.
                counts.seconds = time.monotonic() - t0
                fits = [ind.fitness for ind in population]
                best, median = max(fits), statistics.median(fits)
                self.store.add_history(
                    it, best, median, counts.evaluated, counts.rejected(), counts.screened[WL_REPEATS], counts.seconds
                )
                state.elapsed = time.monotonic() - start
                self._save_state(it, population, state)
                # Progress line.
                window.add(counts)
                if log_every and (it % log_every == 0 or it == total):
                    bound = "∞" if endless else total
                    self.log(f"iteration {it}/{bound}: best {best:.4f} median {median:.4f} | {progress_line(window)}")
                    window = Tally()
                it += 1
        except KeyboardInterrupt:  # Ctrl-C: the best so far is saved as a finished run's result would be
            if self.store.count("status = 'ok'"):
                self._save_result(it - 1)
            raise
        return self._save_result(it - 1)

    def _initial(
        self, iteration: int, counts: Tally, keep: list[Individual] = (), given: list[Genome] = ()
    ) -> list[Individual]:
        """The `given` proxies (dealt round the islands) and the individuals in `keep`, then fresh
        OSP samples that fill every island up to |P|."""
        s = self.settings
        population = list(keep)
        proposals = [(g, "given") for g in given]
        for k, ((g, _), o) in enumerate(zip(proposals, self._judge(proposals, iteration, counts))):
            if o is None or not o.ok:
                why = "a repeat" if o is None else f"{o.rule} ({o.reason})"
                self.log(f"the given proxy {g.formula()} is left out: {why}")
            elif sum(p.island == k % s.islands for p in population) < s.population:
                population.append(self._individual(g, o, k % s.islands))
        for _ in range(s.max_retries * s.population * s.islands):
            open_slots = [
                i for i in range(s.islands) for _ in range(s.population - sum(p.island == i for p in population))
            ]
            if not open_slots:
                break
            proposals = [(self.toolbox.sample(), "init") for _ in open_slots]
            outcomes = self._judge(proposals, iteration, counts)
            judged = [(g, o) for (g, _), o in zip(proposals, outcomes) if o is not None and o.ok]
            for island, (g, o) in zip(open_slots, judged):
                population.append(self._individual(g, o, island))
        if any(sum(p.island == i for p in population) < s.population for i in range(s.islands)):
            raise EvoproxyError(f"could not find {s.population * s.islands} valid proxies in {self.space.name}")
        return population

    def _step(self, population: list[Individual], it: int, counts: Tally) -> list[Individual]:
        """One iteration on every island: `offspring` slots each, their candidates judged in one
        batch; each island keeps its winners and loses as many of its weakest."""
        s = self.settings
        members = split_islands(population, s.islands)
        slots = [i for i in range(s.islands) for _ in range(s.offspring)]
        winners: list[Individual] = []
        for _ in range(s.max_retries):
            proposals = [propose(members[i], self.toolbox, self.rng, s) for i in slots]
            outcomes = iter(self._judge([p for group in proposals for p in group], it, counts))
            retry = []
            for island, group in zip(slots, proposals):
                judged = [(g, next(outcomes)) for g, _ in group]
                passed = [(g, o) for g, o in judged if o is not None and o.ok]
                if s.equivalence:  # a new formula that ranks the sample exactly like a member adds nothing
                    known = {ind.behaviour for ind in members[island] + winners if ind.island == island}
                    counts.screened[SAME_BEHAVIOUR] += sum(behaviour(o.parts) in known for _, o in passed)
                    passed = [(g, o) for g, o in passed if behaviour(o.parts) not in known]
                if passed:  # DPS: the better of offspring and fresh sample (offspring on ties)
                    g, o = max(passed, key=lambda p: self._merit(p[0], p[1].fitness))
                    winners.append(self._individual(g, o, island))
                else:
                    retry.append(island)
            slots = retry
            if not slots:
                break
        return join_islands(replace_weakest(members, winners))

    def _judge(self, proposals: list[tuple[Genome, str]], iteration: int, counts: Tally) -> list[Outcome | None]:
        """Outcomes of proposed (genome, origin) candidates, each stored as it is judged: a candidate
        of the unfinished iteration of a killed run is replayed from the store, a repeat of one
        already seen is None (with equivalence checking), the others are judged."""
        fresh: list[int] = []
        hashes = [g.wl_hash() for g, _ in proposals]
        outcomes: list[Outcome | None] = [None] * len(proposals)
        for i, h in enumerate(hashes):
            if h in self.replay:
                outcomes[i] = self.replay.pop(h)
                self.seen.add(h)
                counts.replayed += 1
            elif self.settings.equivalence and h in self.seen:
                counts.screened[WL_REPEATS] += 1
            else:
                self.seen.add(h)
                fresh.append(i)
        for i, outcome in zip(fresh, self.evaluate([proposals[i][0] for i in fresh]) if fresh else []):
            g, origin = proposals[i]
            self.store.add_candidate(hashes[i], g.to_json(), g.formula(), outcome, iteration, origin)
            outcomes[i] = outcome
            counts.evaluated += 1
            if not outcome.ok:
                counts.screened[outcome.rule] += 1
        return outcomes

    # -- budget, state and result -------------------------------------------------------------------

    def _save_state(self, iteration: int, population: list[Individual], state: RunState) -> None:
        """Store the run after `iteration` (a method of its own: where tests stop a run)."""
        save_checkpoint(self.store, iteration, self.rng, population, state)

    def _budget(self, hours: float | None, iterations: int | None) -> tuple[int, bool]:
        """The last iteration to run, and whether only the time budget ends the run (hours alone)."""
        total = self.settings.iterations if iterations is None else iterations
        return total, hours is not None and iterations is None and self.settings.iterations == 0

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

    def _save_result(self, iteration: int) -> Individual:
        """Choose the run's result after `iteration` and write it as best.json and best.py."""
        best = select_final(self.store, self.settings, self.stats, self.validation, iteration, self._stats_log)
        # named as the run, so that tables show it; measured as the run measured its benches
        named = Genome(best.genome.graph, self.settings.space, self.dir.name, self.settings.perturb_around)
        named.save(self.dir / "best.json")
        write_atomically(self.dir / "best.py", named.to_python())
        return best

    def close(self) -> None:
        """Close the run's store (and release its lock)."""
        self.store.close()
