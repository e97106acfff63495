"""A genome compiled to a straight-line program over one layer's inputs, and its evaluation on
statistics: one value per layer, or one per layer and bit-width for a genome that reads a per-bit
input (such as the quantization error Q)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import torch

from .. import primitives
from ..errors import message_line
from .base import validity_reason
from .graph import INPUT, operands
from .inputs import prepare_inputs


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


class Program:
    """The operations of a canonically numbered proxy graph, in node order. `steps` holds per
    node (fn or None for an input, name, operand ids, whether to check that two tensor operands
    have one shape); `bit_aware` tells whether it reads a per-bit input."""

    def __init__(self, graph: nx.DiGraph, names: list[str], kinds: list[str]):
        self.steps = []
        for node, name in enumerate(names):
            if graph.nodes[node]["role"] == INPUT:
                self.steps.append((None, name, (), False))
                continue
            args = tuple(operands(graph, node))
            check = len(args) == 2 and all(kinds[a] == primitives.TENSOR for a in args)
            self.steps.append((primitives.OPS[name].fn, name, args, check))
        self.bit_aware = any(fn is None and name in primitives.BIT_INPUTS for fn, name, _, _ in self.steps)

    def _run(self, layer: dict, bits: int | None = None) -> torch.Tensor:
        values = []
        for node, (fn, name, args, check) in enumerate(self.steps):
            if fn is None and name in primitives.BIT_INPUTS:
                per_bit = layer.get(name, {})
                if bits not in per_bit:
                    raise _ShapeMismatch(
                        f"the statistics hold no {name} at {bits} bits (they hold {sorted(per_bit) or 'none'})"
                    )
                values.append(per_bit[bits])
                continue
            if fn is None:
                if name not in layer:  # the structure scalars, say, in statistics made by hand
                    raise _ShapeMismatch(f"the statistics hold no {name}")
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
        """See Genome.evaluate."""
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
            return Evaluation(None, f"torch error: {message_line(exc)}")
        return Evaluation(values, validity_reason(values.reshape(-1)), bits)


def _held_bits(inputs) -> tuple[int, ...]:
    """The bit-widths at which every layer holds its per-bit inputs."""
    held = [set(layer[name]) for layer in inputs for name in primitives.BIT_INPUTS if name in layer]
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
