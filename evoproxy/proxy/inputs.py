"""Proxy inputs of a model, prepared once: per layer, every input of primitives.INPUTS as a
float64 tensor. Evaluating a candidate then only runs its few tensor operations."""
from __future__ import annotations

import weakref

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
    prepared = PreparedInputs(primitives.load_inputs(stats, list(primitives.INPUTS)))
    try:
        weakref.finalize(stats, _CACHE.pop, id(stats), None)
    except TypeError:  # lists and other objects without weak references are not cached
        return prepared
    _CACHE[id(stats)] = prepared
    return prepared


def n_layers(stats) -> int:
    """Number of layers in `stats` (ModelStats, list of per-layer statistics or PreparedInputs)."""
    return len(getattr(stats, "layers", stats))
