"""A proxy as data: a `networkx.DiGraph` of named primitives and inputs (see graph.py).

A Genome is immutable. It evaluates to one sensitivity per layer (a configuration scores
Σ_l b_l·s_l), or, when it reads a per-bit input such as the quantization error Q, to one value
per layer and bit-width (a configuration scores Σ_l s_l(b_l)). It prints as a formula, converts
to sympy / LaTeX / a standalone Python module, round-trips through JSON (loading parses data and
runs nothing), and has a canonical Weisfeiler-Lehman hash shared by equivalent structures.
"""

from __future__ import annotations

import json
import re
import reprlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import networkx as nx
import torch

from .. import primitives
from ..errors import EvoproxyError
from .base import as_bits, bit_score, validity_reason
from .export import to_latex, to_python, to_sympy
from .graph import INPUT, ROLES, canonical, check_structure, infer_kinds, operands, size_reason
from .inputs import n_layers, prepare_inputs

FORMAT = "evoproxy-genome"
VERSION = 1
NOTATIONS = ("short", "paper")
# A genome within graph.MAX_TERMS takes under 64 KB of JSON; the bound refuses a file before it is
# read, and caps the graph built before its size is checked.
MAX_JSON_BYTES = 256 * 1024


@dataclass(frozen=True)
class Evaluation:
    """The outcome of evaluating a candidate: `values` (float64, shape (L,), or (L, len(bits))
    for a bit-aware genome, a column per bit-width of `bits`) unless an operation failed, and
    `reason`, None when the candidate is valid."""

    values: torch.Tensor | None
    reason: str | None
    bits: tuple[int, ...] | None = None

    @property
    def valid(self) -> bool:
        return self.reason is None


class _ShapeMismatch(Exception):
    """An operation that cannot run on these inputs (operand shapes, a missing bit-width)."""


class Genome:
    """A proxy graph (see proxy_graph for its nodes and edges); EvoproxyError unless valid and
    within the size bounds of graph.py (MAX_TERMS, MAX_DEPTH).

    `space` names the search space it was drawn from (metadata only; the variation operators
    take the SearchSpace itself); `name` defaults to one made from the hash. Attributes: `graph`
    (frozen, canonically numbered, the output last), `kinds` (tensor or scalar per node).
    """

    def __init__(self, graph: nx.DiGraph, space: str | None = None, name: str | None = None):
        graph = canonical(graph)
        too_big = size_reason(graph)
        if too_big:
            raise EvoproxyError(f"proxy too large: {too_big}")
        check_structure(graph)
        self._names = [graph.nodes[n]["name"] for n in range(len(graph))]
        kinds = infer_kinds(graph, self._names)
        if isinstance(kinds, str):
            raise EvoproxyError(f"invalid proxy: {kinds}")
        self.kinds = kinds
        self.graph = nx.freeze(graph)
        self.space = space
        self._name = name

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_expression(cls, expr, space: str | None = None, name: str | None = None) -> "Genome":
        """A genome from a nested tuple: an input name ("W"), or (op, operand[, operand]).
        The outermost op must be an aggregation, e.g. ("sum", ("mul", "G", "W"))."""
        graph = nx.DiGraph()

        def add(e) -> int:
            node = len(graph)  # any unique id: canonical() renumbers
            if isinstance(e, str):
                graph.add_node(node, role=INPUT, name=e)
                return node
            if not isinstance(e, tuple) or not e or not isinstance(e[0], str):
                raise EvoproxyError(f"bad expression {e!r}: use an input name or (op, operands...)")
            op = primitives.OPS.get(e[0])
            if op is None:
                raise EvoproxyError(f"unknown primitive {e[0]!r}")
            role = "binary" if op.arity == 2 else "unary"
            graph.add_node(node, role=role, name=e[0])
            for arg, operand in enumerate(e[1:]):
                graph.add_edge(add(operand), node, arg=arg)
            return node

        root = add(expr)
        graph.nodes[root]["role"] = "aggregate"
        return cls(graph, space, name)

    @classmethod
    def from_dict(cls, data: dict) -> "Genome":
        """The genome stored by `to_dict`. Only data is read: names must be known inputs and
        primitives, so loading never runs code."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise EvoproxyError(f"not an evoproxy genome: expected a JSON object with format {FORMAT!r}")
        if data.get("version") != VERSION:
            raise EvoproxyError(f"unsupported genome version {data.get('version')!r} (this evoproxy reads {VERSION})")
        nodes = data.get("nodes")
        if not isinstance(nodes, list) or not nodes:
            raise EvoproxyError("a genome needs a non-empty 'nodes' list")
        graph = nx.DiGraph()
        for node in nodes:
            if not (
                isinstance(node, dict)
                and isinstance(node.get("id"), int)
                and node.get("role") in ROLES
                and isinstance(node.get("name"), str)
                and isinstance(node.get("operands", []), list)
            ):
                raise EvoproxyError(
                    f"bad genome node {reprlib.repr(node)}: needs int 'id', 'role' in {ROLES}, 'name', 'operands'"
                )
            if node["id"] in graph:
                raise EvoproxyError(f"genome node id {node['id']} appears twice")
            graph.add_node(node["id"], role=node["role"], name=node["name"])
        for node in nodes:
            ops = node.get("operands", [])
            if not all(isinstance(o, int) and o in graph for o in ops) or len(set(ops)) != len(ops):
                raise EvoproxyError(f"genome node {node['id']}: operands must be distinct ids of other nodes")
            for arg, operand in enumerate(ops):
                graph.add_edge(operand, node["id"], arg=arg)
        space, name = data.get("space"), data.get("name")
        return cls(graph, space if isinstance(space, str) else None, name if isinstance(name, str) else None)

    @classmethod
    def from_json(cls, text: str) -> "Genome":
        """Parse `to_json` output (json.loads only), of at most MAX_JSON_BYTES."""
        if len(text) > MAX_JSON_BYTES:
            raise EvoproxyError(f"genome JSON of {len(text)} characters, over the bound of {MAX_JSON_BYTES}")
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise EvoproxyError(f"genome is not valid JSON: {exc}") from None
        except RecursionError:
            raise EvoproxyError("genome JSON is nested too deeply to be a genome") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "Genome":
        """Read a genome JSON file (UTF-8, at most MAX_JSON_BYTES)."""
        path = Path(path)
        if not path.is_file():
            raise EvoproxyError(f"genome file {path} does not exist")
        try:
            with path.open("rb") as f:
                data = f.read(MAX_JSON_BYTES + 1)
        except OSError as exc:
            raise EvoproxyError(f"cannot read genome file {path}: {exc.strerror}") from None
        if len(data) > MAX_JSON_BYTES:
            raise EvoproxyError(f"genome file {path} is over the bound of {MAX_JSON_BYTES} bytes")
        try:
            return cls.from_json(data.decode("utf-8"))
        except UnicodeDecodeError:
            raise EvoproxyError(f"genome file {path} is not UTF-8 text") from None

    # -- identity -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name or f"genome-{self.wl_hash()[:10]}"

    @property
    def names(self) -> list[str]:
        """Node names (inputs and primitives) by canonical node id."""
        return list(self._names)

    @property
    def needs_hessian(self) -> bool:
        """Whether the genome reads the Hessian diagonal (an input with H among its factors)."""
        return any(
            "H" in primitives.FACTORS[self._names[n]] for n in self.graph if self.graph.nodes[n]["role"] == INPUT
        )

    @cached_property
    def _hash(self) -> str:
        g = nx.DiGraph(self.graph)
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

    def wl_hash(self) -> str:
        """Canonical Weisfeiler-Lehman hash: equal for structures that differ only in the order
        of a commutative operation's operands, in no_ops, or in node numbering."""
        return self._hash

    def __eq__(self, other) -> bool:
        """Same graph and names (canonical numbering makes this structural equality)."""
        return (
            isinstance(other, Genome)
            and self._names == other._names
            and set(self.graph.edges(data="arg")) == set(other.graph.edges(data="arg"))
        )

    def __hash__(self) -> int:
        return hash(tuple(self._names))

    def __repr__(self) -> str:
        return f"Genome({self.formula()!r})"

    def __str__(self) -> str:
        return self.formula()

    # -- evaluation ---------------------------------------------------------------------------

    @cached_property
    def _plan(self) -> list[tuple]:
        """Per node (in topological order): (fn or None for an input, name, operand ids,
        whether to check that two tensor operands have one shape)."""
        plan = []
        for node, name in enumerate(self._names):
            if self.graph.nodes[node]["role"] == INPUT:
                plan.append((None, name, (), False))
                continue
            args = tuple(operands(self.graph, node))
            check = len(args) == 2 and all(self.kinds[a] == primitives.TENSOR for a in args)
            plan.append((primitives.OPS[name].fn, name, args, check))
        return plan

    @cached_property
    def complexity(self) -> int:
        """Inputs and operations, no_ops left out: what parsimony penalises and the hall of fame
        sorts by."""
        return sum(name != "no_op" for name in self._names)

    @cached_property
    def bit_aware(self) -> bool:
        """Whether the genome reads a per-bit input, so that its value depends on the bit-width."""
        return any(fn is None and name in primitives.BIT_INPUTS for fn, name, _, _ in self._plan)

    def _run(self, layer: dict, bits: int | None = None) -> torch.Tensor:
        values = []
        for node, (fn, name, args, check) in enumerate(self._plan):
            if fn is None and name in primitives.BIT_INPUTS:
                per_bit = layer.get(name, {})
                if bits not in per_bit:
                    raise _ShapeMismatch(
                        f"the statistics hold no {name} at {bits} bits (they hold {sorted(per_bit) or 'none'})"
                    )
                values.append(per_bit[bits])
                continue
            if fn is None:
                values.append(layer[name])
                continue
            operand_values = [values[a] for a in args]
            if check and operand_values[0].shape != operand_values[1].shape:
                raise _ShapeMismatch(
                    f"shape mismatch in {name} (node {node}: {tuple(operand_values[0].shape)} "
                    f"vs {tuple(operand_values[1].shape)})"
                )
            values.append(fn(*operand_values))
        return values[-1]

    def evaluate(self, stats, bits: Sequence[int] | None = None) -> Evaluation:
        """Sensitivities on `stats` (ModelStats, per-layer statistics or PreparedInputs) and
        whether they are valid (see base.validity_reason); for a bit-aware genome, its values at
        each bit-width of `bits` (default: every bit-width the statistics hold). Never raises for
        a bad candidate: a failing operation gives values None and a reason."""
        inputs = prepare_inputs(stats)
        try:
            if not self.bit_aware:
                values = torch.stack([self._run(layer) for layer in inputs])
                return Evaluation(values, validity_reason(values))
            bits = tuple(int(b) for b in (bits if bits is not None else _held_bits(inputs)))
            if not bits:
                return Evaluation(None, "the statistics hold no Q: they were made without per-bit inputs")
            values = torch.stack([torch.stack([self._run(layer, b) for b in bits]) for layer in inputs])
        except _ShapeMismatch as exc:
            return Evaluation(None, str(exc))
        except RuntimeError as exc:  # torch refusing an operation: a reason, not a crash
            return Evaluation(None, f"torch error: {str(exc).splitlines()[0]}")
        return Evaluation(values, validity_reason(values.reshape(-1)), bits)

    def _values(self, stats, bits: Sequence[int] | None = None) -> Evaluation:
        result = self.evaluate(stats, bits)
        if result.values is None:
            raise EvoproxyError(f"proxy {self.formula()} cannot be evaluated here: {result.reason}")
        return result

    def sensitivities(self, stats) -> torch.Tensor:
        """One sensitivity per layer (float64, shape (L,)). For a bit-aware genome: the mean value
        of one more bit between 2 and 8 bits, (s_l(8) − s_l(2)) / 6. Raises EvoproxyError if an
        operation fails on these statistics (e.g. operands of different shapes); degenerate but
        computable values (constant, nan) are returned as they are."""
        if not self.bit_aware:
            return self._values(stats).values
        values = self._values(stats, (2, 8)).values
        return (values[:, 1] - values[:, 0]) / 6

    def score(self, stats, bits) -> torch.Tensor:
        """Σ_l b_l·s_l, or Σ_l s_l(b_l) for a bit-aware genome, for a bit configuration (L,) or a
        batch of them (M, L)."""
        if not self.bit_aware:
            return bit_score(self.sensitivities(stats), bits)
        b = as_bits(bits, n_layers(stats))
        if not bool(((b == b.round()) & (b >= 1)).all()):
            raise EvoproxyError(f"proxy {self.formula()} reads per-bit inputs: bit-widths must be whole numbers")
        held = tuple(int(x) for x in b.unique())
        return table_score(self._values(stats, held).values, bit_columns(b, held))

    # -- views --------------------------------------------------------------------------------

    def formula(self, notation: str = "short") -> str:
        """The proxy as a formula string; `notation` "paper" writes inputs as the EMQ paper does
        (θ, ∂L/∂θ, ∂R/∂θ, ...). The protected primitives print their rule (see primitives)."""
        if notation not in NOTATIONS:
            raise EvoproxyError(f"notation must be one of {', '.join(NOTATIONS)}")
        texts: list[tuple[str, bool]] = []  # (text, known to be non-negative)
        for node, name in enumerate(self._names):
            if self.graph.nodes[node]["role"] == INPUT:
                texts.append((primitives.INPUTS[name].paper if notation == "paper" else name, False))
                continue
            op = primitives.OPS[name]
            args = [texts[a] for a in operands(self.graph, node)]
            nonneg = op.nonneg or (name == "no_op" and args[0][1])
            texts.append((_fill(op.template, args), nonneg))
        return _bare(texts[-1][0])

    def to_sympy(self):
        """The proxy as a sympy expression (see export.to_sympy)."""
        return to_sympy(self)

    def to_latex(self, notation: str = "short") -> str:
        """The sympy expression in LaTeX (see export.to_latex)."""
        return to_latex(self, notation)

    def to_python(self) -> str:
        """Source of a standalone Python module computing this proxy (see export)."""
        return to_python(self)

    def to_dict(self) -> dict:
        """JSON-ready data: format, version, name, space, formula and hash (informative), nodes
        with their operands."""
        nodes = [
            {
                "id": node,
                "role": self.graph.nodes[node]["role"],
                "name": name,
                "operands": list(operands(self.graph, node)),
            }
            for node, name in enumerate(self._names)
        ]
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self._name,
            "space": self.space,
            "formula": self.formula(),
            "hash": self.wl_hash(),
            "nodes": nodes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    def save(self, path: str | Path) -> None:
        """Write the genome as JSON to `path`."""
        Path(path).write_text(self.to_json() + "\n", encoding="utf-8")


def _held_bits(inputs) -> tuple[int, ...]:
    """The bit-widths at which every layer holds its per-bit inputs."""
    held = [set(v) for layer in inputs for name, v in layer.items() if name in primitives.BIT_INPUTS]
    return tuple(sorted(set.intersection(*held))) if held else ()


def bit_columns(bits: torch.Tensor, held: Sequence[int]) -> torch.Tensor:
    """For configurations `bits` (..., L) of whole bit-widths among `held`, the column of each
    layer's bit-width in a table of per-layer values at the bit-widths `held` (int64, same shape)."""
    lookup = torch.full((max(held, default=0) + 1,), -1, dtype=torch.long)
    lookup[list(held)] = torch.arange(len(held))
    return lookup[bits.long()]


def table_score(values: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """Σ_l values[l, columns[..., l]]: the scores of configurations from per-layer values
    (L, n_bits) and their `bit_columns` (..., L)."""
    return values[torch.arange(values.shape[0]), columns].sum(-1)


_PLACEHOLDER = re.compile(r"\{(\d)\}")
_OPEN, _CLOSE = "(|‖", ")|‖"


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
