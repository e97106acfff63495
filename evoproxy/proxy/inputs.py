"""Proxy inputs of a model, prepared once: per layer, every input of primitives.INPUTS as a
float64 tensor. Evaluating a candidate then only runs its few tensor operations."""

from __future__ import annotations

import weakref
from collections.abc import Mapping

from .. import primitives

_CACHE: dict[int, "PreparedInputs"] = {}


class PreparedInputs(list):
    """A list with, per layer, a dict input name → float64 tensor. Read-only by contract: the
    primitives never write to their operands."""


def prepare_inputs(stats) -> PreparedInputs:
    """The inputs of `stats` (a ModelStats, a list of per-layer statistics as accepted by
    primitives.load_inputs, or PreparedInputs, returned as is). Prepared inputs of an object that
    supports weak references are kept until that object is garbage-collected."""
    if isinstance(stats, PreparedInputs):
        return stats
    cached = _CACHE.get(id(stats))
    if cached is not None:
        return cached
    prepared = PreparedInputs(primitives.load_inputs(stats, [n for n in primitives.INPUTS if _holds(stats, n)]))
    try:
        weakref.finalize(stats, _CACHE.pop, id(stats), None)
    except TypeError:  # lists and other objects without weak references are not cached
        return prepared
    _CACHE[id(stats)] = prepared
    return prepared


def _holds(stats, name: str) -> bool:
    """Whether `stats` holds input `name`: per-bit inputs (Q) and the structure scalars are absent
    from statistics made without them (synthetic ones, user lists); proxies that read them then
    cannot be evaluated."""
    per_bit, scalar = name in primitives.BIT_INPUTS, primitives.INPUTS[name].kind == primitives.SCALAR
    if not (per_bit or scalar):
        return True
    first = getattr(stats, "layers", stats)[0]
    value = first.get(name) if isinstance(first, Mapping) else getattr(first, name, None)
    return value is not None and (not per_bit or bool(value))


def n_layers(stats) -> int:
    """Number of layers in `stats` (ModelStats, list of per-layer statistics or PreparedInputs)."""
    return len(getattr(stats, "layers", stats))
