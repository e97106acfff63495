"""A proxy as data: a `networkx.DiGraph` of named primitives and inputs (see graph.py).

A Genome is immutable. It evaluates to one sensitivity per layer (a configuration scores
Σ_l b_l·s_l), or, when it reads a per-bit input such as the quantization error Q, to one value
per layer and bit-width (a configuration scores Σ_l s_l(b_l)) (program.py). It prints as a
formula (formula.py), converts to sympy / LaTeX / a standalone Python module (export.py),
round-trips through JSON (genome_file.py: loading parses data and runs nothing), and has a
canonical Weisfeiler-Lehman hash shared by equivalent structures (canonical_hash.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import networkx as nx
import torch

from .. import primitives
from ..errors import EvoproxyError
from ..files import write_atomically
from ..params import OneOf, check_parameters
from ..stats import PERTURBATIONS
from .base import as_bits, bit_score
from .canonical_hash import canonical_hash
from .export import to_latex, to_python, to_sympy
from .formula import NOTATIONS, formula_text
from .genome_file import FORMAT, VERSION, graph_from_dict, parse_json, read_text
from .graph import INPUT, canonical, check_structure, infer_kinds, operands, size_reason
from .inputs import n_layers
from .program import Evaluation, Program, bit_columns, table_score


class Genome:
    """A proxy graph (see proxy_graph for its nodes and edges); EvoproxyError unless valid and
    within the size bounds of graph.py (MAX_TERMS, MAX_DEPTH).

    `space` names the search space it was drawn from (metadata only; the variation operators
    take the SearchSpace itself); `name` defaults to one made from the hash. Attributes: `graph`
    (frozen, canonically numbered, the output last), `kinds` (tensor or scalar per node).
    """

    def __init__(
        self, graph: nx.DiGraph, space: str | None = None, name: str | None = None, perturb_around: int | None = None
    ):
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
        # the bits every other layer sat at where the perturbations it was evolved on were measured
        # (StatsSettings.perturb_around; None: in float): the statistics it is to read
        self.perturb_around = perturb_around

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_expression(
        cls, expr, space: str | None = None, name: str | None = None, perturb_around: int | None = None
    ) -> "Genome":
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
        return cls(graph, space, name, perturb_around)

    @classmethod
    def from_dict(cls, data: dict) -> "Genome":
        """The genome stored by `to_dict` (see genome_file.py: only data is read, so loading
        never runs code)."""
        return cls(*graph_from_dict(data))

    @classmethod
    def from_json(cls, text: str) -> "Genome":
        """Parse `to_json` output (json.loads only), of at most genome_file.MAX_JSON_BYTES."""
        return cls.from_dict(parse_json(text))

    @classmethod
    def load(cls, path: str | Path) -> "Genome":
        """Read a genome JSON file (UTF-8, at most genome_file.MAX_JSON_BYTES)."""
        return cls.from_json(read_text(path))

    # -- identity -----------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name or f"genome-{self.wl_hash()[:10]}"

    @property
    def names(self) -> list[str]:
        """Node names (inputs and primitives) by canonical node id."""
        return list(self._names)

    def _reads(self, fields) -> bool:
        """Whether an input of the genome has one of the statistics `fields` among its factors."""
        return any(
            set(fields) & set(primitives.FACTORS[self._names[n]])
            for n in self.graph
            if self.graph.nodes[n]["role"] == INPUT
        )

    @property
    def needs_hessian(self) -> bool:
        """Whether the genome reads the Hessian diagonal (an input with H among its factors)."""
        return self._reads(("H",))

    @property
    def needs_perturbations(self) -> bool:
        """Whether the genome reads a measured output perturbation (MSE, KL, TAYLOR)."""
        return self._reads(PERTURBATIONS)

    @cached_property
    def _hash(self) -> str:
        return canonical_hash(self.graph)

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
    def _program(self) -> Program:
        return Program(self.graph, self._names, self.kinds)

    @cached_property
    def complexity(self) -> int:
        """Inputs and operations, no_ops left out: what parsimony penalises and the hall of fame
        sorts by."""
        return sum(name != "no_op" for name in self._names)

    @cached_property
    def bit_aware(self) -> bool:
        """Whether the genome reads a per-bit input, so that its value depends on the bit-width."""
        return self._program.bit_aware

    def evaluate(self, stats, bits: Sequence[int] | None = None) -> Evaluation:
        """Sensitivities on `stats` (ModelStats, per-layer statistics or PreparedInputs) and
        whether they are valid (see base.validity_reason); for a bit-aware genome, its values at
        each bit-width of `bits` (default: every bit-width the statistics hold). Never raises for
        a bad candidate: a failing operation gives values None and a reason."""
        return self._program.evaluate(stats, bits)

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
        check_parameters({"notation": notation}, {"notation": OneOf(NOTATIONS)}, owner="Genome.formula")
        return formula_text(self.graph, self._names, notation)

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
            **({"perturb_around": self.perturb_around} if self.perturb_around is not None else {}),
            "formula": self.formula(),
            "hash": self.wl_hash(),
            "nodes": nodes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False)

    def save(self, path: str | Path) -> None:
        """Write the genome as JSON to `path`."""
        write_atomically(path, self.to_json() + "\n")
