"""The operators of the evolution, plain functions over populations (lists of Individuals, each
tagged with its island), and the DEAP toolbox of the variation steps (sample, mate, mutate,
select), which a reader can swap one at a time: `Evolution(...).toolbox.register("select", f)`.

Every random choice draws from the run's one `random.Random`, in a fixed order, so that a seed
fixes the run and a resumed run draws what an uninterrupted one would. DEAP's own selTournament
draws from the global `random` module (with replacement) and its migRing replaces without
looking at behaviour, so neither would give these runs; they are not used."""

from __future__ import annotations

import random
from dataclasses import dataclass

from deap import base

from ..proxy import Genome, SearchSpace, crossover, mutate, sample_genome
from .settings import EvolutionSettings
from .store import PART_COLUMNS


@dataclass
class Individual:
    """A member of the population: its genome, its fitness as selection compares it (its merit:
    fitness less any parsimony penalty) and its ρ@k parts as a comparable key."""

    genome: Genome
    fitness: float
    behaviour: tuple[float, ...]  # its ρ@k parts: equal parts mean the same ranking of the sample
    validation: float = float("nan")  # mean ρ@k on the validation configurations, where judged there
    island: int = 0


def behaviour(parts: dict[str, float]) -> tuple[float, ...]:
    """The ρ@k parts of a judged candidate, as a comparable key."""
    return tuple(round(parts[part], 12) for part, _ in PART_COLUMNS)


def merit(genome: Genome, fitness: float, parsimony: float) -> float:
    """What selection compares: `fitness` less `parsimony` × the genome's complexity; the fitness
    itself where parsimony is 0."""
    return fitness - parsimony * genome.complexity if parsimony else fitness


def tournament(population: list[Individual], ratio: float, rng: random.Random) -> tuple[Genome, Genome]:
    """Draw `ratio` × |P| individuals (at least 2); the two fittest are the parents, in random order."""
    k = max(2, round(ratio * len(population)))
    drawn = rng.sample(population, min(k, len(population)))
    top = sorted(drawn, key=lambda ind: -ind.fitness)[:2]
    rng.shuffle(top)
    return top[0].genome, top[-1].genome


def make_toolbox(space: SearchSpace, rng: random.Random, settings: EvolutionSettings) -> base.Toolbox:
    """The variation steps of a run: `sample()` a fresh genome (with OSP where the settings say),
    `mate(a, b)` and `mutate(g)` within `space`, `select(population)` two parents."""
    toolbox = base.Toolbox()
    toolbox.register("sample", sample_genome, space, rng, settings.osp)
    toolbox.register("mate", crossover, space=space, rng=rng)
    toolbox.register("mutate", mutate, space=space, rng=rng, osp=settings.osp)
    toolbox.register("select", tournament, ratio=settings.ratio, rng=rng)
    return toolbox


def propose(
    members: list[Individual], toolbox: base.Toolbox, rng: random.Random, settings: EvolutionSettings
) -> list[tuple[Genome, str]]:
    """Candidates for one offspring slot of an island of `members`, with their origin: the child of
    two selected parents (crossed over with probability p_c, mutated with p_m) and, with DPS, a
    fresh sample to compete with it; with the "random" strategy, a fresh sample alone."""
    if settings.strategy == "random":
        return [(toolbox.sample(), "random")]
    a, b = toolbox.select(members)
    child = toolbox.mate(a, b)[0] if rng.random() < settings.p_crossover else a
    if rng.random() < settings.p_mutation:
        child = toolbox.mutate(child)
    return [(child, "offspring")] + ([(toolbox.sample(), "random")] if settings.dps else [])


def split_islands(population: list[Individual], islands: int) -> list[list[Individual]]:
    """The members of each island, in population order."""
    return [[ind for ind in population if ind.island == i] for i in range(islands)]


def join_islands(members: list[list[Individual]]) -> list[Individual]:
    """The population of islands' `members`, island by island."""
    return [ind for m in members for ind in m]


def replace_weakest(members: list[list[Individual]], newcomers: list[Individual]) -> list[list[Individual]]:
    """Each newcomer joins its island, then for each the island's weakest leaves (the oldest
    among equals): every island keeps its size."""
    for ind in newcomers:
        members[ind.island].append(ind)
    for ind in newcomers:
        m = members[ind.island]
        m.pop(min(range(len(m)), key=lambda j: m[j].fitness))
    return members


def migrate(population: list[Individual], islands: int) -> list[Individual]:
    """Ring migration: a copy of each island's fittest replaces the weakest of the next island,
    unless that island already ranks the sample the same way. Emigrants are chosen before any
    island changes, so the order of the islands does not matter."""
    members = split_islands(population, islands)
    emigrants = [max(m, key=lambda ind: ind.fitness) for m in members]
    for i, emigrant in enumerate(emigrants):
        host = members[(i + 1) % islands]
        if emigrant.behaviour in {ind.behaviour for ind in host}:
            continue
        weakest = min(range(len(host)), key=lambda j: host[j].fitness)
        host[weakest] = Individual(emigrant.genome, emigrant.fitness, emigrant.behaviour, island=(i + 1) % islands)
    return join_islands(members)


def island_elites(population: list[Individual], islands: int) -> list[Individual]:
    """The fittest individual of each island (the first among equals): what a restart keeps."""
    return [max(m, key=lambda ind: ind.fitness) for m in split_islands(population, islands)]
