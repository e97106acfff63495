"""Random genomes of a search space and the variation operators of the evolution: sampling
(with or without operation sampling prioritization), mutation and crossover. All are pure
(they return new genomes) and keep genomes inside their space, kinds included. `rng` is a
`random.Random`, as in DEAP, so a seeded run repeats exactly."""

from __future__ import annotations

import random

import networkx as nx

from .. import primitives
from ..errors import EvoproxyError
from .genome import Genome
from .graph import INPUT, infer_kinds, operands
from .space import SearchSpace

_TRIES = 20  # crossover masks tried before falling back to copies of the parents


def _weighted_order(options: list[str], weights: list[float] | None, rng: random.Random) -> list[str]:
    """`options` in a random order in which heavier ones tend to come first (each next one is
    drawn with probability proportional to its weight, Efraimidis-Spirakis keys)."""
    if weights is None:
        return rng.sample(options, len(options))
    keys = [rng.random() ** (1.0 / w) for w in weights]
    return [o for _, o in sorted(zip(keys, options), reverse=True)]


def _build(space: SearchSpace, skeleton: nx.DiGraph, names: list[str]) -> Genome:
    graph = nx.DiGraph(skeleton)
    for node, name in enumerate(names):
        graph.nodes[node]["name"] = name
    return Genome(graph, space.name)


def sample_genome(space: SearchSpace, rng: random.Random, osp: bool = True) -> Genome:
    """A random genome of `space`. Inputs are drawn uniformly; operations with their OSP
    weights when `osp`, else uniformly. Unary operations are drawn among those that accept the
    kind (tensor or scalar) of their operand, so every sample is well-typed."""
    skeleton = space.skeleton()
    names: list[str] = []
    kinds: list[str] = []
    for node in range(len(skeleton)):
        role = skeleton.nodes[node]["role"]
        if role == INPUT:
            names.append(rng.choice(space.choices[INPUT]))
            kinds.append(primitives.INPUTS[names[-1]].kind)
            continue
        operand_kinds = [kinds[p] for p in operands(skeleton, node)]
        options = [
            n
            for n in space.choices[role]
            if primitives.OPS[n].arity == 2 or operand_kinds[0] in primitives.OPS[n].accepts
        ]
        name = rng.choices(options, space.weights(options, osp))[0]
        names.append(name)
        kinds.append(primitives.OPS[name].out_kind(*operand_kinds))
    return _build(space, skeleton, names)


def _same_skeleton(genome: Genome, skeleton: nx.DiGraph) -> bool:
    return (
        len(genome.graph) == len(skeleton)
        and all(genome.graph.nodes[n]["role"] == skeleton.nodes[n]["role"] for n in skeleton)
        and set(genome.graph.edges(data="arg")) == set(skeleton.edges(data="arg"))
    )


def space_violation(genome: Genome, space: SearchSpace) -> str | None:
    """None if `genome` lies in `space` (its skeleton, allowed names, well-typed), else why not."""
    skeleton = space.skeleton()
    if not _same_skeleton(genome, skeleton):
        return f"its graph is not the {space.name} skeleton"
    for node, name in enumerate(genome.names):
        role = skeleton.nodes[node]["role"]
        if name not in space.choices[role]:
            return f"{name} is not allowed at a {role} node of {space.name}"
    return None


def mutate(genome: Genome, space: SearchSpace, rng: random.Random, osp: bool = True) -> Genome:
    """A copy of `genome` with one node's name replaced: an input by another input, an
    operation by another of its role (drawn with OSP weights when `osp`). Nodes are tried in
    random order until a replacement keeps the genome well-typed."""
    skeleton = space.skeleton()
    violation = space_violation(genome, space)
    if violation:
        raise EvoproxyError(f"cannot mutate within {space.name}: {violation}")
    names = genome.names
    for node in rng.sample(range(len(names)), len(names)):
        role = skeleton.nodes[node]["role"]
        options = [n for n in space.choices[role] if n != names[node]]
        weights = None if role == INPUT else space.weights(options, osp)
        for candidate in _weighted_order(options, weights, rng):
            trial = names[:node] + [candidate] + names[node + 1 :]
            if not isinstance(infer_kinds(skeleton, trial), str):
                return _build(space, skeleton, trial)
    return _build(space, skeleton, names)  # nothing can change (a space with one choice per role)


def crossover(a: Genome, b: Genome, space: SearchSpace, rng: random.Random) -> tuple[Genome, Genome]:
    """Two children of parents `a` and `b` of `space` (uniform crossover): at every node,
    child 1 takes one parent's name and child 2 the other's, each with probability 1/2. Masks
    that break typing are redrawn; if none of a few works, the children are copies of the
    parents."""
    skeleton = space.skeleton()
    for parent in (a, b):
        violation = space_violation(parent, space)
        if violation:
            raise EvoproxyError(f"cannot cross over within {space.name}: {violation}")
    na, nb = a.names, b.names
    for _ in range(_TRIES):
        mask = [rng.random() < 0.5 for _ in na]
        c1 = [x if m else y for x, y, m in zip(na, nb, mask)]
        c2 = [y if m else x for x, y, m in zip(na, nb, mask)]
        if not isinstance(infer_kinds(skeleton, c1), str) and not isinstance(infer_kinds(skeleton, c2), str):
            return _build(space, skeleton, c1), _build(space, skeleton, c2)
    return _build(space, skeleton, na), _build(space, skeleton, nb)
