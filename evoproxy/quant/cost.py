"""Cost of a bit configuration, keyed by the layer registry.

Size counts the quantizable layers only: each weight at its layer's bit-width, each bias at
`bias_bits` (32 by default, as integer accelerators keep it), in megabytes of 10^6 bytes. A
group-wise `WeightFormat` adds each group's 16-bit scale (and asymmetric zero-point) to its weights.
BOPs (bit operations) are Σ_l MACs_l × w_bits_l × a_bits_l for one input sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

from ..errors import EvoproxyError, ParameterError
from ..model import LayerInfo
from ..params import Interval, OneOf, check_parameters

BITS_PER_MB = 8e6  # a megabyte here is 10^6 bytes
SCALE_BITS = 16  # a quantization scale is stored as a float16


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


def row_length(layer: LayerInfo) -> int:
    """Elements of one output row of the layer's weight (out, in, *kernel): in × kernel."""
    return weight_count(layer) // layer.weight_shape[0]


@dataclass(frozen=True)
class WeightFormat:
    """How a weight is quantized and stored. `group_size` None: one scale per output channel; g: one
    scale per g consecutive elements of each output row (in × kernel, flattened; g must divide it).
    `asymmetric`: levels 0..2^b−1 with an integer zero-point per group (else −q..q, q = 2^(b−1)−1).
    Group scales are stored in SCALE_BITS bits, a zero-point at the weight's own bit-width."""

    group_size: int | None = None
    asymmetric: bool = False

    CONSTRAINTS = {
        "group_size": [OneOf((None,)), Interval(1, None, integer=True)],
        "asymmetric": OneOf((False, True)),
    }

    def __post_init__(self) -> None:
        check_parameters(self)

    def bits_per_weight(self, bits: int) -> float:
        """Storage bits per weight element at `bits`: exactly `bits` per channel (its scales are not
        counted, as before groups existed) and for a float layer (bits ≥ 32, no scales); group-wise,
        plus a scale and a zero-point spread over each group's g elements."""
        if self.group_size is None or bits >= 32:
            return float(bits)
        return bits + self._group_overhead(bits) / self.group_size

    def _group_overhead(self, bits: int) -> int:
        return SCALE_BITS + (bits if self.asymmetric else 0)

    def check_layers(self, layers: Sequence[LayerInfo]) -> None:
        """Raise a one-line ParameterError unless the group size divides every layer's row length."""
        if self.group_size is None:
            return
        for layer in layers:
            if row_length(layer) % self.group_size:
                raise ParameterError(
                    "WeightFormat",
                    "group_size",
                    f"a divisor of every layer's input size (layer {layer.name} has {row_length(layer)})",
                    self.group_size,
                )

    def weight_bits(self, layer: LayerInfo, bits: int) -> int:
        """Bits that store the layer's weight at `bits`, scales and zero-points included (exact)."""
        weights = weight_count(layer)
        if self.group_size is None or bits >= 32:
            return weights * bits
        self.check_layers([layer])
        return weights * bits + weights // self.group_size * self._group_overhead(bits)

    def describe(self) -> str:
        """Short wording, such as "symmetric, groups of 128" or "asymmetric per-channel"."""
        kind = "asymmetric" if self.asymmetric else "symmetric"
        return f"{kind} per-channel" if self.group_size is None else f"{kind}, groups of {self.group_size}"


def layer_size_bits(layer: LayerInfo, w_bits: int, bias_bits: int = 32, fmt: WeightFormat = WeightFormat()) -> int:
    """Bits of one layer's weight at `w_bits` stored in format `fmt` and bias at `bias_bits` (an
    exact integer)."""
    return fmt.weight_bits(layer, w_bits) + (layer.params - weight_count(layer)) * bias_bits


def layer_size_mb(layer: LayerInfo, w_bits: int, bias_bits: int = 32, fmt: WeightFormat = WeightFormat()) -> float:
    """Megabytes (10^6 bytes) of one layer's weight at `w_bits` in format `fmt` and bias at `bias_bits`."""
    return layer_size_bits(layer, w_bits, bias_bits, fmt) / BITS_PER_MB


def model_size_mb(
    layers: Sequence[LayerInfo], w_bits: Sequence[int], bias_bits: int = 32, fmt: WeightFormat = WeightFormat()
) -> float:
    """Megabytes of the quantizable layers under per-layer weight bit-widths `w_bits` in format
    `fmt`; summed in whole bits and divided once, so a configuration exactly at a budget never
    reads above it."""
    check_bits(layers, w_bits, "the weight bit configuration")
    return sum(layer_size_bits(l, b, bias_bits, fmt) for l, b in zip(layers, w_bits)) / BITS_PER_MB


def average_bits(layers: Sequence[LayerInfo], w_bits: int | Sequence[int], fmt: WeightFormat = WeightFormat()) -> float:
    """Weight-storage bits (scales and zero-points included, biases not) per weight element over
    `layers`, with `w_bits` one bit-width for every layer or one per layer."""
    bits = per_layer_bits(layers, w_bits, "the weight bit configuration")
    return sum(fmt.weight_bits(l, b) for l, b in zip(layers, bits)) / sum(map(weight_count, layers))


def size_mb_at_average_bits(
    layers: Sequence[LayerInfo], avg_bits: float, bias_bits: int = 32, fmt: WeightFormat = WeightFormat()
) -> float:
    """The size budget (MB) that holds exactly the configurations of `layers` whose `average_bits`
    in `fmt` is at most `avg_bits`: avg_bits per weight element plus the biases at `bias_bits`."""
    weights = sum(map(weight_count, layers))
    biases = sum(l.params for l in layers) - weights
    return (avg_bits * weights + biases * bias_bits) / BITS_PER_MB


def model_bops(layers: Sequence[LayerInfo], w_bits: Sequence[int], a_bits: Sequence[int] | int = 8) -> float:
    """Bit operations Σ MACs × w_bits × a_bits of one forward pass of one sample; `a_bits` one
    activation bit-width for every layer or one per layer."""
    check_bits(layers, w_bits, "the weight bit configuration")
    a = per_layer_bits(layers, a_bits, "the activation bit configuration")
    return float(sum(l.macs * wb * ab for l, wb, ab in zip(layers, w_bits, a)))
