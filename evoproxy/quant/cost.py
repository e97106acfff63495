"""Cost of a bit configuration, keyed by the layer registry.

Size counts the quantizable layers only: each weight at its layer's bit-width, each bias at
`bias_bits` (32 by default, as integer accelerators keep it), in megabytes of 10^6 bytes.
BOPs (bit operations) are Σ_l MACs_l × w_bits_l × a_bits_l for one input sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

from ..errors import EvoproxyError
from ..model import LayerInfo

BITS_PER_MB = 8e6  # a megabyte here is 10^6 bytes


def is_bit_width(b: object, low: int = 1) -> bool:
    """Whether `b` is a whole bit-width from `low` to 32 (bool excluded)."""
    return isinstance(b, Integral) and not isinstance(b, bool) and low <= b <= 32


def check_bits(layers: Sequence[LayerInfo], bits: Sequence[int], what: str, low: int = 1) -> None:
    """Raise a clear error unless `bits` has one whole number from `low` to 32 per layer."""
    if len(bits) != len(layers):
        raise EvoproxyError(f"{what} has {len(bits)} entries but the model has {len(layers)} quantizable layers")
    if any(int(b) != b or b < low or b > 32 for b in bits):
        raise EvoproxyError(f"{what} must be whole numbers from {low} to 32, got {list(bits)}")


def per_layer_bits(layers: Sequence[LayerInfo], bits: int | Sequence[int], what: str, low: int = 1) -> tuple[int, ...]:
    """`bits` as one whole bit-width per layer of `layers`: an int stands for every layer, a sequence
    must have one entry per layer (checked as `check_bits` does)."""
    per_layer = [bits] * len(layers) if isinstance(bits, Integral) else list(bits)
    check_bits(layers, per_layer, what, low)
    return tuple(int(b) for b in per_layer)


def weight_count(layer: LayerInfo) -> int:
    n = 1
    for d in layer.weight_shape:
        n *= d
    return n


def layer_size_bits(layer: LayerInfo, w_bits: int, bias_bits: int = 32) -> int:
    """Bits of one layer's weight at `w_bits` and bias at `bias_bits` (an exact integer)."""
    weights = weight_count(layer)
    return weights * w_bits + (layer.params - weights) * bias_bits


def layer_size_mb(layer: LayerInfo, w_bits: int, bias_bits: int = 32) -> float:
    """Megabytes (10^6 bytes) of one layer's weight at `w_bits` and bias at `bias_bits`."""
    return layer_size_bits(layer, w_bits, bias_bits) / BITS_PER_MB


def model_size_mb(layers: Sequence[LayerInfo], w_bits: Sequence[int], bias_bits: int = 32) -> float:
    """Megabytes of the quantizable layers under per-layer weight bit-widths `w_bits`; summed
    in whole bits and divided once, so a configuration exactly at a budget never reads above it."""
    check_bits(layers, w_bits, "the weight bit configuration")
    return sum(layer_size_bits(l, b, bias_bits) for l, b in zip(layers, w_bits)) / BITS_PER_MB


def model_bops(layers: Sequence[LayerInfo], w_bits: Sequence[int], a_bits: Sequence[int] | int = 8) -> float:
    """Bit operations Σ MACs × w_bits × a_bits of one forward pass of one sample; `a_bits` one
    activation bit-width for every layer or one per layer."""
    check_bits(layers, w_bits, "the weight bit configuration")
    a = per_layer_bits(layers, a_bits, "the activation bit configuration")
    return float(sum(l.macs * wb * ab for l, wb, ab in zip(layers, w_bits, a)))
