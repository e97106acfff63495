"""The shortest proxy of equal fitness (PySR's simplification, EZNAS-like pruning), on the genome's graph.

sympy cannot shorten an evolved formula: its reductions and whole-tensor operations (Σ, mean, max,
softmax, z-score, ...) are opaque to it. This works on the graph instead, in two steps:

1. exact rewrites, identities that hold for any statistics, each taking one operation out: |x| or
   max(x, 0) of a value that is never negative, sign(sign(x)), −(−x), |x| or −x under an operation
   that ignores the sign (|·|, ², sqrt(|·|), log(|·|+ε), Σ|·|/numel, ‖·‖), max(x, 0) under the
   protected log, a sum / mean / max / min of a scalar, and no_ops; the proxy's values stay the same;
2. pruning: greedily replace an operation by one of its operands (a binary one loses its other
   branch) and keep the change where the fitness given by the caller does not drop more than a
   tolerance below the proxy's own (0: equal or better), until no change is kept.

Inside a search space the result stays in it where it can: a unary operation is taken out by making
it a no_op (which prints nothing and counts nothing), so the simplified proxy can still seed a run of
that space. Only taking out a binary operation leaves the space's skeleton; the result then says so
(`in_space` False with the reason) and carries no space, and its no_ops are contracted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import networkx as nx

from .. import primitives
from ..errors import EvoproxyError
from ..params import Interval, check_parameters
from .genome import Genome
from .graph import AGGREGATE, INPUT, UNARY, operands
from .space import SearchSpace
from .variation import space_violation

EVEN = frozenset({"abs", "square", "sqrt", "abslog", "l1_mean", "frobenius_norm"})  # f(−x) = f(|x|) = f(x)
SCALAR_IDENTITY = frozenset({"sum", "mean", "max", "min"})  # on a one-element value: that value, exactly
MAX_EVALUATIONS = 300


@dataclass(frozen=True)
class Simplification:
    """A genome `original` and its simplification `genome`, with their fitnesses as the caller's
    fitness function gives them (None where it rejects one), the fitness evaluations spent, each step
    taken (in words), and whether `genome` lies in `space` (None without a space) and why not."""

    original: Genome
    genome: Genome
    fitness_before: float | None
    fitness_after: float | None
    evaluations: int
    steps: tuple[str, ...] = ()
    space: str | None = None
    in_space: bool | None = None
    outside: str | None = None
    tolerance: float = 0.0

    @property
    def shorter(self) -> bool:
        """Whether the simplification has a smaller complexity than the original."""
        return self.genome.complexity < self.original.complexity

    def to_dict(self) -> dict:
        """JSON-ready: formulas, complexities and fitnesses before and after, steps, space, the
        simplified genome."""
        return {
            "shorter": self.shorter,
            "formula_before": self.original.formula(),
            "formula": self.genome.formula(),
            "complexity_before": self.original.complexity,
            "complexity": self.genome.complexity,
            "fitness_before": self.fitness_before,
            "fitness": self.fitness_after,
            "tolerance": self.tolerance,
            "evaluations": self.evaluations,
            "steps": list(self.steps),
            "space": self.space,
            "in_space": self.in_space,
            "outside": self.outside,
            "genome": self.genome.to_dict(),
        }


@dataclass
class _Search:
    """The fitness of one simplification, each distinct genome judged once, within `limit` judgements."""

    fitness: Callable[[Genome], float | None]
    limit: int
    cache: dict[str, float | None] = field(default_factory=dict)

    def judge(self, genome: Genome) -> float | None:
        key = genome.wl_hash()
        if key not in self.cache:
            self.cache[key] = self.fitness(genome)
        return self.cache[key]

    @property
    def spent(self) -> bool:
        return len(self.cache) >= self.limit - 1  # one left for the result


def _in_space(genome: Genome, space: SearchSpace | None) -> bool:
    return space is not None and space_violation(genome, space) is None


def _nonneg(genome: Genome, node: int) -> bool:
    """Whether the value of `node` is never negative, whatever the statistics."""
    name = genome.names[node]
    if genome.graph.nodes[node]["role"] == INPUT:
        return False
    if name == "no_op":
        return _nonneg(genome, operands(genome.graph, node)[0])
    return primitives.OPS[name].nonneg


def _exact(genome: Genome, node: int) -> tuple[int, str] | None:
    """If the operation `node` may be replaced by a node down its operand chain without changing any
    value of the proxy: that node and the identity, else None."""
    g, names = genome.graph, genome.names
    role, name = g.nodes[node]["role"], names[node]
    if role == INPUT or len(operands(g, node)) != 1:
        return None
    (arg,) = operands(g, node)
    inner = names[arg] if g.nodes[arg]["role"] != INPUT else None
    if name in SCALAR_IDENTITY and genome.kinds[arg] == primitives.SCALAR:
        # under the output only a reducing operand can take the output's place
        if role == UNARY or primitives.OPS[inner or "no_op"].reduces:
            return arg, f"{name} of a scalar is that scalar"
    if role != UNARY:
        return None
    consumers = [names[c] for c in g.successors(node)]
    if name == "no_op":
        return arg, "no_op is the identity"
    if name in ("abs", "relu") and _nonneg(genome, arg):
        return arg, f"{name} of a value that is never negative"
    if name == "sign" and inner == "sign":
        return arg, "sign is idempotent"
    if name == "neg" and inner == "neg":
        return operands(g, arg)[0], "−(−x) = x"
    if name in ("abs", "neg") and all(c in EVEN for c in consumers):
        return arg, f"{name} under an operation that ignores the sign"
    if name == "relu" and all(c == "log" for c in consumers):
        return arg, "the protected log clamps at 0 itself"
    return None


def _replace(genome: Genome, node: int, target: int, keep_space: bool) -> Genome | None:
    """`genome` with the value of `node` replaced by that of `target` (a node below it): by making
    `node` and the unary operations between them no_ops where `keep_space` and they are all unary
    operations used once, else by contracting them (the other operand's branch of a binary `node`
    goes, and a reducing `target` under the output aggregation becomes the output). None where the
    result is no valid genome."""
    g = nx.DiGraph(genome.graph)
    path = [node] if target in operands(g, node) else [node, operands(g, node)[0]]
    if keep_space:
        if not all(g.nodes[n]["role"] == UNARY and g.out_degree(n) == 1 for n in path):
            return None
        for n in path:
            g.nodes[n]["name"] = "no_op"
        return _genome(g, genome.space)
    out = len(g) - 1
    if node == out:  # the output's operand takes its place
        if g.nodes[target]["role"] != UNARY or not primitives.OPS[g.nodes[target]["name"]].reduces:
            return None
        g.nodes[target]["role"] = AGGREGATE
    for succ in list(g.successors(node)):
        if g.has_edge(target, succ):  # both operands of succ would be one node
            return None
        g.add_edge(target, succ, arg=g.edges[node, succ]["arg"])
    g.remove_node(node)
    root = target if node == out else out
    g.remove_nodes_from(set(g) - nx.ancestors(g, root) - {root})  # branches nothing uses any more
    return _genome(g, None)


def _genome(graph: nx.DiGraph, space: str | None) -> Genome | None:
    try:
        return Genome(graph, space)
    except EvoproxyError:  # a kind an operation does not take, e.g. a scalar into softmax
        return None


def _contract_no_ops(genome: Genome) -> Genome:
    while True:
        node = next((n for n, name in enumerate(genome.names) if name == "no_op"), None)
        if node is None:
            return genome
        genome = _replace(genome, node, operands(genome.graph, node)[0], keep_space=False)


def rewrite(genome: Genome, space: SearchSpace | None = None) -> tuple[Genome, list[str]]:
    """`genome` with the exact rewrites of this module applied until none applies, and a line per
    rewrite. Within `space` (where `genome` lies in it) a rewrite that would leave it is skipped."""
    steps: list[str] = []
    while True:
        keep = _in_space(genome, space)
        for node in range(len(genome.names)):
            found = _exact(genome, node)
            if found is None or (keep and genome.names[node] == "no_op"):
                continue
            result = _replace(genome, node, found[0], keep)
            if result is not None:
                steps.append(f"{genome.names[node]} removed: {found[1]} (exact)")
                genome = result
                break
        else:
            return (genome if keep else _contract_no_ops(genome)), steps


def _candidates(genome: Genome, keep: bool) -> list[tuple[Genome, str]]:
    """Every genome made by replacing one operation of `genome` by one of its operands; within a
    space, unary ones become no_ops and binary ones leave the space."""
    g, names = genome.graph, genome.names
    found = []
    for node, name in enumerate(names):
        role = g.nodes[node]["role"]
        if role == INPUT or name == "no_op":
            continue
        for i, arg in enumerate(operands(g, node)):
            result = _replace(genome, node, arg, keep and role == UNARY)
            if result is not None:
                found.append(
                    (result, f"{name} replaced by " + (f"operand {i + 1}" if len(g.pred[node]) == 2 else "its operand"))
                )
    return found


# What `simplify` takes; the command line checks its tolerance with the same table before any work.
CONSTRAINTS = {
    "tolerance": Interval(0, math.inf, closed="left"),
    "max_evaluations": Interval(2, None, integer=True),  # the original's evaluation and the result's
}


def simplify(
    genome: Genome,
    fitness: Callable[[Genome], float | None],
    space: SearchSpace | None = None,
    tolerance: float = 0.0,
    max_evaluations: int = MAX_EVALUATIONS,
) -> Simplification:
    """The shortest proxy found whose `fitness` (a function of a genome: its fitness, None where it
    is rejected) is at least `genome`'s less `tolerance`: exact rewrites, then greedy pruning (each
    round keeps the shortest candidate that passes, the fittest among equals), with rewrites after
    every kept change. Every candidate is measured against `genome`'s fitness, not the last kept
    one's, so the result never falls more than `tolerance` below it (with 0: equal or better).
    `space`: the search space to stay in where possible (see the module). At most `max_evaluations`
    distinct genomes are judged (the original and the result included)."""
    check_parameters({"tolerance": tolerance, "max_evaluations": max_evaluations}, CONSTRAINTS, owner="simplify")
    search = _Search(fitness, max_evaluations)
    before = search.judge(genome)
    current, steps = rewrite(genome, space)
    if before is not None:
        while not search.spent:
            kept = None
            for candidate, step in _candidates(current, _in_space(current, space)):
                if search.spent:
                    break
                value = search.judge(candidate)
                if (
                    value is not None
                    and value >= before - tolerance
                    and (kept is None or (candidate.complexity, -value) < (kept[0].complexity, -kept[1]))
                ):
                    kept = (candidate, value, step)
            if kept is None:
                break
            current, more = rewrite(kept[0], space)
            steps += [f"{kept[2]} (fitness {kept[1]:.4f})", *more]
    after = search.judge(current)
    if before is not None and (after is None or after < before - tolerance):  # never worse than promised
        current, after, steps = genome, before, []
    outside = None if space is None else space_violation(current, space)
    in_space = None if space is None else outside is None
    if outside is not None:
        current = Genome(current.graph, None)
    return Simplification(
        genome,
        current,
        before,
        after,
        len(search.cache),
        tuple(steps),
        space.name if space else None,
        in_space,
        outside,
        tolerance,
    )
