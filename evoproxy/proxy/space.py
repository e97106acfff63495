"""Search spaces: which inputs and operations a proxy may use and the shape of its graph,
read from the declarative files in search_spaces/ (or any TOML file of the same format).

Every space is one family of graphs, fixed by four numbers:

    n_inputs      input nodes (each picks one input name);
    n_nodes       intermediate nodes; node i combines all its predecessors (the inputs and
                  nodes 1..i-1): each predecessor goes through `chain_length` unary ops, and the
                  results are folded left to right with binary ops;
    tail_length   unary ops after the last node (or after the single input when n_nodes = 0);
    then one aggregation, which gives each layer its one number.

Sequential: n_inputs 1, n_nodes 0, tail k. Branched: n_inputs 2, n_nodes 1, chain k. DAG:
n_inputs 2, n_nodes n, chain 1. All genomes of a space share one skeleton, so crossover can
exchange node labels position by position.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import networkx as nx

from .. import primitives
from ..errors import EvoproxyError
from ..search_spaces import space_files
from .graph import AGGREGATE, BINARY, INPUT, MAX_TERMS, UNARY, canonical, size_reason

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport
    import tomli as tomllib

_COUNTS = ("n_inputs", "n_nodes", "chain_length", "tail_length")
_KEYS = ("name", "description", "inputs", *_COUNTS, "unary", "binary", "aggregations", "osp")


@dataclass(frozen=True)
class SearchSpace:
    """A search space. `choices[role]` are the names allowed at nodes of that role (inputs for
    "input", primitives for the others); `osp_weights` the OSP weight of every operation."""

    name: str
    description: str
    n_inputs: int
    n_nodes: int
    chain_length: int
    tail_length: int
    choices: dict[str, tuple[str, ...]]
    osp_weights: dict[str, float] = field(repr=False)

    def weights(self, names: list[str], osp: bool) -> list[float] | None:
        """Sampling weights of `names`: their OSP weights, or None (uniform) without OSP."""
        return [self.osp_weights[n] for n in names] if osp else None

    @cached_property
    def _skeleton(self) -> nx.DiGraph:
        return nx.freeze(self._build_skeleton())

    def skeleton(self) -> nx.DiGraph:
        """The canonical graph (see proxy_graph.canonical) shared by all genomes of the space:
        nodes carry `role`, edges `arg` (operand position); names are left out. Frozen."""
        return self._skeleton

    def _build_skeleton(self) -> nx.DiGraph:
        g = nx.DiGraph()

        def add(role: str, *operands: int) -> int:
            node = len(g)
            g.add_node(node, role=role)
            for arg, operand in enumerate(operands):
                g.add_edge(operand, node, arg=arg)
            return node

        def chain(node: int, length: int) -> int:
            for _ in range(length):
                node = add(UNARY, node)
            return node

        values = [add(INPUT) for _ in range(self.n_inputs)]
        for _ in range(self.n_nodes):
            incoming = [chain(v, self.chain_length) for v in values]
            combined = incoming[0]
            for other in incoming[1:]:
                combined = add(BINARY, combined, other)
            values.append(combined)
        add(AGGREGATE, chain(values[-1], self.tail_length))
        return canonical(g)


def _skeleton_size(n_inputs: int, n_nodes: int, chain_length: int, tail_length: int) -> int:
    """The node count of the skeleton of these counts, worked out without building it (which for
    large counts could take hours)."""
    incoming = n_nodes * n_inputs + n_nodes * (n_nodes - 1) // 2  # values combined, over all nodes
    return n_inputs + incoming * (chain_length + 1) - n_nodes + tail_length + 1


def _names(data: dict, key: str, known: dict, what: str, path: Path) -> tuple[str, ...]:
    value = data.get(key, "all")
    if value == "all":
        return tuple(known)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise EvoproxyError(f"{path}: '{key}' must be \"all\" or a non-empty list of names")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise EvoproxyError(f"{path}: unknown {what} {', '.join(unknown)} in '{key}'; known: {', '.join(known)}")
    return tuple(dict.fromkeys(value))


def parse_space(data: dict, path: Path) -> SearchSpace:
    """A SearchSpace from the parsed contents of a space file (`path` names it in errors)."""
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise EvoproxyError(f"{path}: unknown key(s) {', '.join(unknown)}; a space file has {', '.join(_KEYS)}")
    counts = {}
    for key in _COUNTS:
        value = data.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise EvoproxyError(f"{path}: '{key}' must be a non-negative integer, got {value!r}")
        counts[key] = value
    if counts["n_inputs"] < 1 or (counts["n_nodes"] == 0 and counts["n_inputs"] != 1):
        raise EvoproxyError(f"{path}: a space needs n_inputs ≥ 1, and exactly one input when n_nodes = 0")
    if counts["n_inputs"] == 1 and counts["chain_length"] == 0 and counts["n_nodes"] > 1:
        raise EvoproxyError(
            f"{path}: with one input and chain_length 0, node 2 would combine a value with itself; "
            "use chain_length ≥ 1 or n_inputs ≥ 2"
        )
    size = _skeleton_size(**counts)
    too_big = f"{size} nodes (bound {MAX_TERMS})" if size > MAX_TERMS else None
    unary = {n: op for n, op in primitives.OPS.items() if op.arity == 1}
    binary = {n: op for n, op in primitives.OPS.items() if op.arity == 2}
    reducing = {n: op for n, op in unary.items() if op.reduces}
    choices = {
        INPUT: _names(data, "inputs", primitives.INPUTS, "input", path),
        UNARY: _names(data, "unary", unary, "unary operation", path),
        BINARY: _names(data, "binary", binary, "binary operation", path),
        AGGREGATE: _names(data, "aggregations", reducing, "aggregation", path),
    }
    osp = data.get("osp", {})
    if not isinstance(osp, dict):
        raise EvoproxyError(f"{path}: 'osp' must be a table of operation weights")
    bad = {
        k: v
        for k, v in osp.items()
        if k not in primitives.OPS or not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < math.inf
    }
    if bad:
        raise EvoproxyError(f"{path}: [osp] needs operation names with positive finite weights; bad: {bad}")
    weights = {n: float(osp.get(n, op.weight)) for n, op in primitives.OPS.items()}
    name = data.get("name", path.stem)
    space = SearchSpace(str(name), str(data.get("description", "")), choices=choices, osp_weights=weights, **counts)
    too_big = too_big or size_reason(space.skeleton())
    if too_big:
        raise EvoproxyError(
            f"{path}: the proxies of this space would be too large, {too_big}; "
            "lower n_inputs, n_nodes, chain_length or tail_length"
        )
    return space


def load_space(ref: str | Path | SearchSpace) -> SearchSpace:
    """A shipped space by name (see `available_spaces`) or a space file by path."""
    if isinstance(ref, SearchSpace):
        return ref
    shipped = space_files()
    path = shipped.get(str(ref), Path(ref))
    if not path.is_file():
        raise EvoproxyError(
            f"no search space {str(ref)!r}: use one of {', '.join(sorted(shipped))} or the path of a space TOML file"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise EvoproxyError(f"{path} is not valid TOML: {exc}") from None
    except RecursionError:
        raise EvoproxyError(f"{path} is nested too deeply to be a search space") from None
    except OSError as exc:
        raise EvoproxyError(f"cannot read search space {path}: {exc.strerror}") from None
    return parse_space(data, path)


def available_spaces() -> list[str]:
    """Names of the search spaces shipped in search_spaces/."""
    return sorted(space_files())
