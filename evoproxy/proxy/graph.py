"""The graph form of a proxy, shared by search spaces and genomes: node roles, the canonical
numbering of nodes, structural validation and value-kind inference.

Nodes carry `role` (input, unary, binary, aggregate) and, in a genome, `name` (an input name or
a primitive); edges go from operand to consumer and carry `arg`, the operand position.
"""

from __future__ import annotations

import networkx as nx

from .. import primitives
from ..errors import EvoproxyError

INPUT, UNARY, BINARY, AGGREGATE = "input", "unary", "binary", "aggregate"
ROLES = (INPUT, UNARY, BINARY, AGGREGATE)
ARITY = {INPUT: 0, UNARY: 1, BINARY: 2, AGGREGATE: 1}
# Bounds on a proxy's size. A node used by several others is written out once per use in its formula,
# sympy and LaTeX forms, so "terms" (nodes counted once per use) bound the cost of those; depth bounds
# the WL hash's iterations and sympy's recursion. The shipped spaces need at most 27 terms and depth 8;
# a DAG space with 7 intermediate nodes fits.
MAX_TERMS = 512
MAX_DEPTH = 32


def operands(graph: nx.DiGraph, node) -> list:
    """The operands of `node`, in argument order."""
    preds = graph.pred[node]
    return sorted(preds, key=lambda p: preds[p].get("arg", -1))


def canonical(graph: nx.DiGraph) -> nx.DiGraph:
    """A copy of `graph` with nodes renumbered 0..n-1 in post-order from the output (operands
    in argument order first). Two graphs of the same structure get the same numbering, and the
    numbering is topological, so the output is always the last node."""
    if not isinstance(graph, nx.DiGraph) or graph.is_multigraph() or len(graph) == 0:
        raise EvoproxyError("a proxy graph must be a non-empty networkx.DiGraph")
    if not nx.is_directed_acyclic_graph(graph):
        raise EvoproxyError("a proxy graph must have no cycle")
    sinks = [n for n in graph if graph.out_degree(n) == 0]
    if len(sinks) != 1:
        raise EvoproxyError(f"a proxy graph must have exactly one output node, found {len(sinks)}")
    order: list = []
    seen = set()
    stack = [(sinks[0], False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
        elif node not in seen:
            seen.add(node)
            stack.append((node, True))
            stack.extend((p, False) for p in reversed(operands(graph, node)) if p not in seen)
    return nx.relabel_nodes(graph, {old: new for new, old in enumerate(order)}, copy=True)


def size_reason(graph: nx.DiGraph) -> str | None:
    """None if the canonical `graph` lies within MAX_TERMS and MAX_DEPTH, else why not."""
    if len(graph) > MAX_TERMS:
        return f"{len(graph)} nodes (bound {MAX_TERMS})"
    terms: list[int] = []
    depth: list[int] = []
    for node in range(len(graph)):  # canonical numbering is topological
        args = operands(graph, node)
        terms.append(min(1 + sum(terms[a] for a in args), MAX_TERMS + 1))  # capped: it may double per node
        depth.append(1 + max((depth[a] for a in args), default=0))
    if terms[-1] > MAX_TERMS:
        return f"more than {MAX_TERMS} terms written out (a node counts once per use)"
    if depth[-1] > MAX_DEPTH:
        return f"{depth[-1]} operations deep (bound {MAX_DEPTH})"
    return None


def check_structure(graph: nx.DiGraph) -> None:
    """Raise EvoproxyError unless every node of the canonical `graph` has a known role and name
    and the right operands, and the output is the one aggregation."""
    n = len(graph)
    for node, data in graph.nodes(data=True):
        role, name = data.get("role"), data.get("name")
        if role not in ROLES:
            raise EvoproxyError(f"node {node}: role must be one of {', '.join(ROLES)}, got {role!r}")
        args = sorted(d.get("arg", -1) for _, _, d in graph.in_edges(node, data=True))
        if args != list(range(ARITY[role])):
            raise EvoproxyError(
                f"node {node} ({role}) needs operands at positions {list(range(ARITY[role]))}, got {args}"
            )
        if role == INPUT:
            if name not in primitives.INPUTS:
                raise EvoproxyError(f"node {node}: unknown input {name!r}; known: {', '.join(primitives.INPUTS)}")
            continue
        op = primitives.OPS.get(name)
        if op is None or op.arity != ARITY[role] or (role == AGGREGATE and not op.reduces):
            want = "reducing" if role == AGGREGATE else f"{ARITY[role]}-ary"
            raise EvoproxyError(f"node {node}: {name!r} is not a known {want} primitive")
        if (role == AGGREGATE) != (node == n - 1):
            raise EvoproxyError("the output node, and only it, must be the aggregation")


def infer_kinds(graph: nx.DiGraph, names: list[str]) -> list[str] | str:
    """The value kind (tensor or scalar) of every node of the canonical `graph` with node names
    `names`, or a reason string when an operation gets a kind it does not accept."""
    kinds: list[str] = []
    for node, name in enumerate(names):
        if graph.nodes[node]["role"] == INPUT:
            kinds.append(primitives.INPUTS[name].kind)
            continue
        op = primitives.OPS[name]
        operand_kinds = [kinds[p] for p in operands(graph, node)]
        if op.arity == 1 and operand_kinds[0] not in op.accepts:
            return f"{name} does not accept a {operand_kinds[0]} (node {node})"
        kinds.append(op.out_kind(*operand_kinds))
    return kinds
