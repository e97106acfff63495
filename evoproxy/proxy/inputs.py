"""Proxy inputs of a model, prepared once: per layer, every input of primitives.INPUTS as a
float64 tensor. Evaluating a candidate then only runs its few tensor operations. A large model's
are read from its statistics when a proxy reads them instead, one layer at a time."""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping
from types import SimpleNamespace

import torch

from .. import primitives

# Most bytes of float64 inputs prepared at once. All of ResNet-18's (W, G, H, V and G×W of 11.7 M
# weights: 0.5 GB) are; ViT-B's would be 3.4 GB beside its statistics.
PREPARED_BYTES = 1 << 30

_CACHE: dict[int, "PreparedInputs"] = {}


class PreparedInputs(list):
    """A list with, per layer, a mapping input name → float64 tensor: a dict, or for a large model
    a LayerInputs. Read-only by contract: the primitives never write to their operands."""


class LayerInputs(Mapping):
    """One layer's inputs `names`, each read from its statistics (as primitives.load_inputs reads
    them, so to the same values) whenever a proxy reads it, and not kept."""

    def __init__(self, stats, layer, names: list[str]):
        self._one = SimpleNamespace(layers=[layer], synflow_log_scale=getattr(stats, "synflow_log_scale", 0.0))
        self._names = names

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._names:
            raise KeyError(name)
        return primitives.load_inputs(self._one, [name])[0][name]

    def __contains__(self, name) -> bool:  # without reading the input (Mapping's would)
        return name in self._names

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def prepare_inputs(stats) -> PreparedInputs:
    """The inputs of `stats` (a ModelStats, a list of per-layer statistics as accepted by
    primitives.load_inputs, or PreparedInputs, returned as is): float64 tensors, or LayerInputs where
    they would exceed PREPARED_BYTES. Prepared inputs of an object that supports weak references are
    kept until that object is garbage-collected."""
    if isinstance(stats, PreparedInputs):
        return stats
    cached = _CACHE.get(id(stats))
    if cached is not None:
        return cached
    names = [n for n in primitives.INPUTS if _holds(stats, n)]
    layers = getattr(stats, "layers", stats)
    if 8 * sum(_numel(layer, n) for layer in layers for n in names) > PREPARED_BYTES:
        prepared = PreparedInputs(LayerInputs(stats, layer, names) for layer in layers)
    else:
        prepared = PreparedInputs(primitives.load_inputs(stats, names))
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


def _numel(layer, name: str) -> int:
    """Elements of input `name` of `layer` as prepared: none for a per-bit one (the statistics' Q
    is computed when read; the measured perturbations are a few numbers per bit-width)."""
    if name in primitives.BIT_INPUTS:
        return 0
    first = primitives.FACTORS[name][0]
    return (layer[first] if isinstance(layer, Mapping) else getattr(layer, first)).numel()


def n_layers(stats) -> int:
    """Number of layers in `stats` (ModelStats, list of per-layer statistics or PreparedInputs)."""
    return len(getattr(stats, "layers", stats))
