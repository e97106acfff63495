"""The allocation problem as plain data: per free layer and bit option, its value, its size in
bits and its BOPs, plus the budgets. Solvers read it; none of them changes it.

Options are the (weight bits, activation bits) pairs of the choices, ordered by weight bits,
then activation bits, ascending; option 0 is therefore every layer's cheapest in size and BOPs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..errors import EvoproxyError
from ..model import LayerInfo
from ..params import Interval
from ..quant import BITS_PER_MB, WeightFormat, is_bit_width, layer_size_bits, model_bops
from .latency import LatencyConstraint, LatencyTable
from .result import Allocation

DEFAULT_FIXED_BITS = 8  # the paper (after OMPQ) keeps the first and last layer at W8A8
MIN_W_BITS = 2  # what quant.quantize_model takes: symmetric 1-bit weights would have no levels
# Budgets beyond any model (10^18 bytes, 10^30 bit operations); they keep budgets in bits finite.
MAX_SIZE_MB = 1e12
MAX_BOPS = 1e30


def _bit_choices(what: str, bits: Sequence[int], low: int) -> tuple[int, ...]:
    bits = tuple(bits)
    if not bits or not all(is_bit_width(b, low) for b in bits) or len(set(bits)) != len(bits):
        raise EvoproxyError(f"{what} bit choices must be distinct whole numbers from {low} to 32, got {list(bits)}")
    return tuple(sorted(int(b) for b in bits))


def _fixed_bits(fixed: Mapping[int, int | tuple[int, int]] | None, n_layers: int) -> dict[int, tuple[int, int]]:
    """{registry index: (weight bits, activation bits)}; negative indices count from the end."""
    if fixed is None:
        fixed = {0: DEFAULT_FIXED_BITS, n_layers - 1: DEFAULT_FIXED_BITS}
    out = {}
    for index, bits in fixed.items():
        if not isinstance(index, (int, np.integer)) or not -n_layers <= index < n_layers:
            raise EvoproxyError(f"fixed layer index {index!r} is out of range for a model of {n_layers} layers")
        pair = (bits, bits) if is_bit_width(bits) else tuple(bits) if isinstance(bits, (tuple, list)) else ()
        if len(pair) != 2 or not (is_bit_width(pair[0], MIN_W_BITS) and is_bit_width(pair[1])):
            raise EvoproxyError(
                f"fixed bits of layer {index} must be whole numbers from {MIN_W_BITS} to 32 (weights) "
                f"and 1 to 32 (activations), one or a (weight, activation) pair, got {bits!r}"
            )
        out[int(index) % n_layers] = (int(pair[0]), int(pair[1]))
    return out


def _as_scores(scores: object) -> np.ndarray:
    try:
        return np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError):
        raise EvoproxyError("scores must be an array of numbers") from None


def _act_slopes(s: np.ndarray, w_order: Sequence[int]) -> np.ndarray:
    """Each layer's value of one activation bit (L,): its marginal value of a weight bit, the slope
    of its weight values from the fewest to the most weight bits (s_l for sensitivities; with one
    weight choice and no sensitivities, 0)."""
    if s.ndim == 1:
        return s
    if len(w_order) == 1:
        return np.zeros(len(s))
    low, high = w_order.index(min(w_order)), w_order.index(max(w_order))
    return (s[:, high] - s[:, low]) / (max(w_order) - min(w_order))


def _value_table(
    s: np.ndarray, layers: Sequence[LayerInfo], w_order: Sequence[int], a_order: Sequence[int]
) -> np.ndarray:
    """Scores `s` as an (L, n_w, n_a) table of values, choices in the caller's orders `w_order`,
    `a_order`. An (L,) or (L, n_w) `s` values activation bits by `_act_slopes` (see `build_problem`)."""
    n, n_w, n_a = len(layers), len(w_order), len(a_order)
    if s.shape == (n,):
        table = np.asarray(w_order, dtype=np.float64)[None, :] * s[:, None]  # eq. 3: value b·s_l
    elif s.shape in ((n, n_w), (n, n_w, n_a)):
        table = s
    else:
        raise EvoproxyError(
            f"scores have shape {s.shape}; expected ({n},) sensitivities, or ({n}, {n_w}) or "
            f"({n}, {n_w}, {n_a}) values per weight (and activation) bit choice"
        )
    bad = np.flatnonzero(~np.isfinite(table.reshape(n, -1)).all(axis=1))
    if bad.size:
        raise EvoproxyError(f"scores must be finite; layer {layers[bad[0]].name} has {s[bad[0]].tolist()}")
    if table.ndim == 2:
        # With one activation choice slope·a is a constant per layer (it changes no decision): left out.
        act = np.asarray(a_order, dtype=np.float64) if n_a > 1 else np.zeros(1)
        table = table[:, :, None] + _act_slopes(s, list(w_order))[:, None, None] * act[None, None, :]
    return table


@dataclass(frozen=True, eq=False)
class AllocationProblem:
    """A multiple-choice knapsack over the free (not fixed) layers. Build it with `build_problem`.

    Arrays have F rows (free layers, registry order) and K = n_w·n_a columns (options):
    `value` (F, K) float objective terms, `size_bits` (F, K) int64 layer size in bits,
    `bops` (F, K) int64 bit operations per sample. `options` (K, 2) holds each option's
    (weight bits, activation bits). Fixed layers add the constants `fixed_value`,
    `fixed_size_bits` and `fixed_bops`. Budgets: `size_budget_mb` in MB (10^6 bytes),
    `bops_budget` in BOPs per sample or None for no BOPs constraint; `latency` (`with_latency`) or None.
    """

    layers: tuple[LayerInfo, ...]
    w_choices: tuple[int, ...]
    a_choices: tuple[int, ...]
    fixed: dict[int, tuple[int, int]]
    free: tuple[int, ...]
    options: np.ndarray
    value: np.ndarray
    size_bits: np.ndarray
    bops: np.ndarray
    fixed_value: float
    fixed_size_bits: int
    fixed_bops: int
    size_budget_mb: float
    bops_budget: float | None = None
    bias_bits: int = 32
    weight_format: WeightFormat = WeightFormat()  # how sizes count the weights' scales and zero-points
    latency: LatencyConstraint | None = None

    def __post_init__(self) -> None:
        if not Interval(0, MAX_SIZE_MB, closed="right")(self.size_budget_mb):
            raise EvoproxyError(
                f"size budget must be a number of megabytes above 0 and at most {MAX_SIZE_MB:g}, "
                f"got {self.size_budget_mb!r}"
            )
        if self.bops_budget is not None and not Interval(0, MAX_BOPS, closed="right")(self.bops_budget):
            raise EvoproxyError(
                f"BOPs budget must be a number of bit operations above 0 and at most {MAX_BOPS:g}, "
                f"got {self.bops_budget!r}"
            )

    def with_budget(self, size_mb: float, bops: float | None = None) -> AllocationProblem:
        """The same problem under other budgets (for a Pareto sweep); the tables are shared."""
        return replace(self, size_budget_mb=size_mb, bops_budget=bops)

    def with_latency(self, table: LatencyTable, budget_ms: float | None) -> AllocationProblem:
        """The same problem with latencies from `table` (checked against the layers), at most `budget_ms`
        in total (None: predicted, not constrained)."""
        table.check_layers([l.name for l in self.layers])
        return replace(self, latency=table.constraint(self.free, self.fixed, self.options, budget_ms))

    @property
    def size_budget_bits(self) -> int:
        # Rounding to 1/1000 bit first absorbs the float error of MB × 8e6 (0.27 MB → 2159999.99…).
        return math.floor(round(self.size_budget_mb * BITS_PER_MB, 3))

    @property
    def bops_budget_int(self) -> int | None:
        """The BOPs budget as a whole number of bit operations (None without one)."""
        return None if self.bops_budget is None else math.floor(round(self.bops_budget, 3))

    @property
    def min_size_bits(self) -> int:
        """Size of the smallest configuration: every free layer at its cheapest option."""
        return self.fixed_size_bits + int(self.size_bits[:, 0].sum())

    @property
    def max_size_bits(self) -> int:
        """Size of the largest configuration: every free layer at its last option (the most bits)."""
        return self.fixed_size_bits + int(self.size_bits[:, -1].sum())

    def size_bits_of(self, choice: np.ndarray) -> int:
        """Size in whole bits of `choice` (F,) option indices of the free layers. Whole bits are
        divided once: summing per-layer MB (cost.model_size_mb) can land 1 ulp over a budget that
        the configuration meets exactly."""
        return self.fixed_size_bits + int(self.size_bits[np.arange(len(self.free)), choice].sum())

    def bops_of(self, choice: np.ndarray) -> int:
        """Bit operations per sample of `choice` (F,) option indices of the free layers."""
        return self.fixed_bops + int(self.bops[np.arange(len(self.free)), choice].sum())

    def fits(self, choice: np.ndarray) -> bool:
        """Whether `choice` (F,) option indices of the free layers meets the size, BOPs and latency budgets."""
        return (
            self.size_bits_of(choice) <= self.size_budget_bits
            and (self.bops_budget is None or self.bops_of(choice) <= self.bops_budget_int)
            and (self.latency is None or self.latency.fits(choice))
        )

    @property
    def min_size_mb(self) -> float:
        """`min_size_bits` in MB, rounded up to a whole byte so that it is itself a feasible budget."""
        return math.ceil(self.min_size_bits / 8) / 1e6

    @property
    def min_bops(self) -> int:
        """BOPs of the cheapest configuration (the same one as for size: fewest bits everywhere)."""
        return self.fixed_bops + int(self.bops[:, 0].sum())

    def check_feasible(self) -> None:
        """Raise EvoproxyError naming the smallest feasible budgets if no configuration fits."""
        problems = []
        if self.min_size_bits > self.size_budget_bits:
            problems.append(
                f"size budget {self.size_budget_mb} MB is below the smallest feasible size {self.min_size_mb:.6f} MB"
            )
        if self.bops_budget is not None and self.min_bops > self.bops_budget_int:
            problems.append(
                f"BOPs budget {self.bops_budget:.6g} is below the smallest feasible "
                f"{self.min_bops} BOPs ({self.min_bops / 1e9:.4f} G)"
            )
        if problems:
            w, a = self.options[0]
            problems[-1] += f" (every free layer at W{w}A{a}, fixed layers as fixed)"
        if self.latency is not None and self.latency.shortfall():
            problems.append(self.latency.shortfall())
        if problems:
            raise EvoproxyError("; ".join(problems))

    def allocation(self, choice: np.ndarray, method: str, optimal: bool, seconds: float, note: str = "") -> Allocation:
        """The result for `choice` (F,) option indices of the free layers."""
        w_bits = [0] * len(self.layers)
        a_bits = [0] * len(self.layers)
        for index, (w, a) in self.fixed.items():
            w_bits[index], a_bits[index] = w, a
        for index, k in zip(self.free, choice):
            w_bits[index], a_bits[index] = (int(b) for b in self.options[k])
        rows = np.arange(len(self.free))
        objective = self.fixed_value + float(self.value[rows, choice].sum())
        size_bits = self.size_bits_of(choice)
        bops = self.bops_of(choice)
        return Allocation(
            layer_names=tuple(l.name for l in self.layers),
            w_bits=tuple(w_bits),
            a_bits=tuple(a_bits),
            objective=objective,
            size_mb=size_bits / BITS_PER_MB,
            bops=float(bops),
            optimal=optimal,
            method=method,
            seconds=seconds,
            size_budget_mb=self.size_budget_mb,
            bops_budget=self.bops_budget,
            note=note,
            **({} if self.latency is None else self.latency.record(choice)),
        )


def build_problem(
    layers: Sequence[LayerInfo],
    scores: object,
    size_mb: float,
    *,
    bops: float | None = None,
    w_bits: Sequence[int] = (2, 3, 4),
    a_bits: Sequence[int] = (8,),
    fixed: Mapping[int, int | tuple[int, int]] | None = None,
    bias_bits: int = 32,
    weight_format: WeightFormat = WeightFormat(),
) -> AllocationProblem:
    """Describe the allocation of `w_bits` × `a_bits` choices to the layers of a registry.

    `scores`: sensitivities (L,), a value table (L, n_w) per weight choice, or (L, n_w, n_a) per
    (weight, activation) choice, columns in the order of `w_bits` / `a_bits`. An (L, n_w, n_a)
    table is taken as given. Otherwise an activation bit is worth the layer's marginal value of
    a weight bit: value(l, w, a) = value_w(l, w) + slope_l·a with slope_l = (value_w(l, max w) −
    value_w(l, min w)) / (max w − min w); for sensitivities value_w(l, w) = w·s_l and slope_l = s_l
    (paper eq. 3 applied to both operands of the layer's MACs, Σ_l (w_l + a_l)·s_l). With one
    weight choice the slope is s_l for sensitivities, else 0. With one activation choice the
    term is a constant and left out: value(l, w, a) = value_w(l, w).
    `size_mb`: budget on the quantizable layers' size in MB (10^6 bytes; biases at `bias_bits`; weights
    in `weight_format`, with their scales and zero-points: `quant.size_mb_at_average_bits` turns an
    average-bits budget into one).
    `bops`: optional budget in bit operations per sample (Σ MACs·w·a).
    `fixed`: {registry index: bits or (w, a)}; an int fixes weight and activation bits. None
    means the first and last layer at 8 bits; {} fixes nothing. A fixed layer's objective term
    is the rule's value for sensitivities, its table entry when its bits are choices, else 0 (a
    constant either way).
    """
    layers = tuple(layers)
    if not layers:
        raise EvoproxyError("the layer registry is empty: nothing to allocate")
    for position, layer in enumerate(layers):
        if layer.index != position:
            raise EvoproxyError(
                f"layers must be the layer registry in order; position {position} holds "
                f"layer {layer.name} with index {layer.index}"
            )
    w_given, a_given = tuple(w_bits), tuple(a_bits)
    w_choices, a_choices = _bit_choices("weight", w_given, MIN_W_BITS), _bit_choices("activation", a_given, 1)
    fixed_bits = _fixed_bits(fixed, len(layers))
    free = tuple(i for i in range(len(layers)) if i not in fixed_bits)
    if not free:
        raise EvoproxyError(
            f"all {len(layers)} layers are fixed: nothing to allocate "
            "(pass fixed={} to allocate the first and last layer too)"
        )
    s = _as_scores(scores)
    table = _value_table(s, layers, w_given, a_given)
    # Reorder the table's columns from the caller's order to ascending bits.
    table = table[:, [w_given.index(w) for w in w_choices]][:, :, [a_given.index(a) for a in a_choices]]
    options = np.array([(w, a) for w in w_choices for a in a_choices], dtype=np.int64)

    def bits_of(layer: LayerInfo, w: int) -> int:
        return layer_size_bits(layer, w, bias_bits, weight_format)

    def bops_of(layer: LayerInfo, w: int, a: int) -> int:
        return round(model_bops([layer], [w], [a]))

    fixed_value = 0.0
    for index, (w, a) in sorted(fixed_bits.items()):
        if s.ndim == 1:
            fixed_value += (w + (a if len(a_choices) > 1 else 0)) * float(s[index])
        elif w in w_choices and a in a_choices:
            fixed_value += float(table[index, w_choices.index(w), a_choices.index(a)])
    return AllocationProblem(
        layers=layers,
        w_choices=w_choices,
        a_choices=a_choices,
        fixed=fixed_bits,
        free=free,
        options=options,
        value=table[list(free)].reshape(len(free), -1).copy(),
        size_bits=np.array([[bits_of(layers[i], w) for w, _ in options] for i in free], dtype=np.int64),
        bops=np.array([[bops_of(layers[i], w, a) for w, a in options] for i in free], dtype=np.int64),
        fixed_value=fixed_value,
        fixed_size_bits=sum(bits_of(layers[i], w) for i, (w, _) in fixed_bits.items()),
        fixed_bops=sum(bops_of(layers[i], w, a) for i, (w, a) in fixed_bits.items()),
        size_budget_mb=size_mb,
        bops_budget=bops,
        bias_bits=bias_bits,
        weight_format=weight_format,
    )


def reduced_constraint(cost: np.ndarray, budget: int) -> tuple[np.ndarray, int]:
    """Restate Σ_f cost[f, choice_f] ≤ budget exactly, with small integers: subtract every
    layer's option-0 cost (its cheapest) and divide what is left by its gcd. `cost` (F, K) int64;
    returns the reduced (F, K) int64 costs (column 0 all zero) and the reduced budget."""
    extra = cost - cost[:, :1]
    budget -= int(cost[:, 0].sum())
    g = int(np.gcd.reduce(extra.ravel()))
    if g > 1:
        extra //= g
        budget //= g  # floor is exact: every reachable left-hand side is a multiple of g
    return extra, budget
