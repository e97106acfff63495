"""Resume and replay: what a run saves in its store after every iteration, and how a killed run
continues exactly where it stopped.

After iteration i the store's `state` holds i, the RNG state, the population (hashes and
islands) and the RunState. Candidates are stored as they are judged, so a run killed during
iteration i + 1 has some of that iteration's candidates in the store but not its state: it
redoes iteration i + 1 from the state of i, drawing the same proposals, and the outcomes of the
candidates already judged are replayed from the store instead of being judged again."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

from ..proxy import Genome
from .fitness import Outcome
from .operators import Individual, behaviour
from .records import random_state
from .store import RunStore, row_parts


@dataclass
class RunState:
    """What a run carries from one iteration to the next, beside its population and RNG."""

    elapsed: float = 0.0  # wall-clock seconds over every session of the run
    stale: int = 0  # iterations since the best fitness last rose (a restart starts it again)
    best: float | None = None  # the best fitness selection has seen (None before the first iteration)
    restarts: int = 0
    restarted_at: list[int] = field(default_factory=list)  # the iterations that restarted (marked in fitness.png)

    def observe(self, best: float) -> None:
        """Count an iteration whose population's best fitness is `best`."""
        self.stale = 0 if self.best is None or best > self.best else self.stale + 1
        self.best = best if self.best is None else max(best, self.best)

    def restart(self, iteration: int) -> None:
        """Record a restart at `iteration`."""
        self.stale, self.restarts = 0, self.restarts + 1
        self.restarted_at.append(iteration)

    @classmethod
    def stored(cls, state: dict | None) -> RunState:
        """The RunState in a store's `state` record (None: a new run). Runs stored before it had
        a type keep it as a dict under "extra", without the keys not yet set."""
        values = (state or {}).get("extra", state or {})
        return cls(**{f.name: values[f.name] for f in fields(cls) if f.name in values})


@dataclass
class Checkpoint:
    """Where a run continues: the next `iteration` (0: a new run), the `population` and RunState
    after the one before, the hashes of the candidates of the iterations done (`seen`: never
    judged again) and the outcomes of those of the unfinished iteration (`replay`)."""

    iteration: int
    population: list[Individual]
    state: RunState
    seen: set[str]
    replay: dict[str, Outcome]


def save_checkpoint(
    store: RunStore, iteration: int, rng: random.Random, population: list[Individual], state: RunState
) -> None:
    """Store the run after `iteration`: the RNG state, the population and `state`."""
    store.put(
        state={
            "iteration": iteration,
            "rng": rng.getstate(),
            "population": [ind.genome.wl_hash() for ind in population],
            "islands": [ind.island for ind in population],
            **asdict(state),
        }
    )


def load_checkpoint(store: RunStore, rng: random.Random, merit: Callable[[Genome, float], float]) -> Checkpoint:
    """The Checkpoint of the run in `store`, with `rng` set back to its state (a new run leaves it
    alone); `merit(genome, fitness)` gives the population's fitness as selection compares it."""
    stored = store.get("state")
    rows = store.candidates()
    done = stored["iteration"] if stored else -1
    seen = {r["hash"] for r in rows if r["iteration"] <= done}
    replay = {
        r["hash"]: Outcome(
            r["fitness"] if r["fitness"] is not None else float("nan"),
            row_parts(r),
            None if r["status"] == "ok" else r["status"],
            r["reason"],
            r["seconds"],
        )
        for r in rows
        if r["iteration"] == done + 1
    }
    if not stored:
        return Checkpoint(0, [], RunState(), seen, replay)
    rng.setstate(random_state(stored["rng"]))
    by_hash = {r["hash"]: r for r in rows}
    islands = stored.get("islands") or [0] * len(stored["population"])  # runs of one island stored none
    population = []
    for h, island in zip(stored["population"], islands):
        genome = store.genome(by_hash[h])
        fitness = merit(genome, by_hash[h]["fitness"])
        population.append(Individual(genome, fitness, behaviour(row_parts(by_hash[h])), island=island))
    return Checkpoint(done + 1, population, RunState.stored(stored), seen, replay)
