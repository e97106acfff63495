"""The canonical Weisfeiler-Lehman hash of a proxy graph, shared by equivalent structures: what
runs key candidates by."""

from __future__ import annotations

import warnings

import networkx as nx

from .. import primitives
from .graph import INPUT


def canonical_hash(graph: nx.DiGraph) -> str:
    """Equal for structures that differ only in the order of a commutative operation's operands,
    in no_ops, or in node numbering."""
    g = nx.DiGraph(graph)
    # no_op is the identity: contract it so that chains differing only by no_ops agree.
    for node in [n for n in g if g.nodes[n]["name"] == "no_op" and g.nodes[n]["role"] != INPUT]:
        (src,) = g.predecessors(node)
        for dst in list(g.successors(node)):
            g.add_edge(src, dst, **g.edges[node, dst])
        g.remove_node(node)
    for node, data in g.nodes(data=True):
        data["label"] = ("input:" if data["role"] == INPUT else "") + data["name"]
    for src, dst, data in g.edges(data=True):
        op = primitives.OPS[g.nodes[dst]["name"]]
        # Operand position only matters for non-commutative binary operations.
        data["label"] = str(data["arg"]) if op.arity == 2 and not op.commutative else ""
    depth = nx.dag_longest_path_length(g) + 1
    with warnings.catch_warnings():  # networkx warns that directed hashes changed in 3.5
        warnings.simplefilter("ignore", UserWarning)
        return nx.weisfeiler_lehman_graph_hash(g, edge_attr="label", node_attr="label", iterations=depth)
