"""A proxy graph written as a formula string, in the inputs' short names or the EMQ paper's
notation; the protected primitives print their rule (see primitives)."""

from __future__ import annotations

import re

import networkx as nx

from .. import primitives
from .graph import INPUT, operands

NOTATIONS = ("short", "paper")
_PLACEHOLDER = re.compile(r"\{(\d)\}")
_OPEN, _CLOSE = "(|‖", ")|‖"


def formula_text(graph: nx.DiGraph, names: list[str], notation: str) -> str:
    """The formula of a canonically numbered proxy graph with node names `names`; `notation`
    is one of NOTATIONS."""
    texts: list[tuple[str, bool]] = []  # (text, known to be non-negative)
    for node, name in enumerate(names):
        if graph.nodes[node]["role"] == INPUT:
            texts.append((primitives.INPUTS[name].paper if notation == "paper" else name, False))
            continue
        op = primitives.OPS[name]
        args = [texts[a] for a in operands(graph, node)]
        nonneg = op.nonneg or (name == "no_op" and args[0][1])
        texts.append((_fill(op.template, args), nonneg))
    return _bare(texts[-1][0])


def _bare(text: str) -> str:
    """`text` without outer parentheses that enclose all of it."""
    if not (text.startswith("(") and text.endswith(")")):
        return text
    depth = 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth == 0 and i < len(text) - 1:
            return text
    return text[1:-1]


def _fill(template: str, args: list[tuple[str, bool]]) -> str:
    """Put the operand texts into a formula template. An operand already delimited by the
    template goes in without its own parentheses; |x| of a non-negative x is written x."""
    for i, (_, nonneg) in enumerate(args):
        if nonneg:
            template = template.replace(f"|{{{i}}}|", f"{{{i}}}")

    def put(m: re.Match) -> str:
        text = args[int(m.group(1))][0]
        start, end = m.start(), m.end()
        delimited = start > 0 and end < len(template) and template[start - 1] in _OPEN and template[end] in _CLOSE
        return _bare(text) if delimited else text

    return _PLACEHOLDER.sub(put, template)
