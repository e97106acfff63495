"""The latency constraint of an allocation (HAWQ-V3): a latency table that `evoproxy latency`
measured (`quant.latency`), read and checked against the model, and the per-option costs the
solvers read. Latencies are summed in whole nanoseconds, as sizes are in whole bits, so a
configuration meets its budget or not without float rounding. Between consecutive layers (registry
order) of which one runs an int8 kernel and the other a float one, the later layer's `switch_ms`
is charged: a pairwise term, which the ILP linearises with one auxiliary variable per pair.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EvoproxyError
from ..params import Interval
from ..quant.latency import A_OPTIONS, FORMAT, W_OPTIONS

NS_PER_MS = 1_000_000
MAX_LATENCY_MS = 1e9  # a budget beyond any model (11.6 days a sample); it keeps budgets in ns finite


@dataclass(frozen=True)
class LatencyTable:
    """A latency table: `layer_names` (the registry it was measured on, in order), `ms` per
    (layer index, weight bits, activation bits), the `kernel` onnxruntime ran for each, and
    `overhead_ms`, a run of the whole model beyond its layers, and per layer `switch_ms`, what an
    int8/float switch at its input costs. `path` names it in messages."""

    path: str
    model: str
    layer_names: tuple[str, ...]
    ms: Mapping[tuple[int, int, int], float]
    kernel: Mapping[tuple[int, int, int], str]
    overhead_ms: float
    switch_ms: tuple[float, ...]

    def check_layers(self, names: Sequence[str]) -> None:
        """Raise EvoproxyError unless the table was measured on the layers `names` (registry order)."""
        if tuple(names) != self.layer_names:
            what = (
                f"{len(self.layer_names)} layers, the model has {len(names)}"
                if len(names) != len(self.layer_names)
                else "other layer names than the model's"
            )
            raise EvoproxyError(
                f"latency table {self.path} was measured on {self.model} ({what}): measure this model's table "
                "with `evoproxy latency` (same --model, --exclude)"
            )

    def layer_ms(self, index: int, w: int, a: int) -> float:
        """The latency in ms of layer `index` (registry) at `w`-bit weights and `a`-bit inputs."""
        if (index, w, a) not in self.ms:
            raise EvoproxyError(
                f"latency table {self.path} has no entry for W{w}A{a}: it covers weight bits "
                f"{','.join(map(str, W_OPTIONS))} and activation bits {','.join(map(str, A_OPTIONS))}"
            )
        return self.ms[index, w, a]

    def is_int8(self, index: int, w: int, a: int) -> bool:
        self.layer_ms(index, w, a)  # the error for an option the table lacks
        return self.kernel[index, w, a] == "int8"

    def total_ms(self, w_bits: Sequence[int], a_bits: Sequence[int]) -> float:
        """The predicted latency in ms of a whole configuration (bits per layer, registry order)."""
        bits = list(zip(w_bits, a_bits))
        int8 = [self.is_int8(i, w, a) for i, (w, a) in enumerate(bits)]
        switches = sum(self.switch_ms[i] for i in range(1, len(bits)) if int8[i] != int8[i - 1])
        return self.overhead_ms + switches + sum(self.layer_ms(i, w, a) for i, (w, a) in enumerate(bits))

    def constraint(
        self, free: Sequence[int], fixed: Mapping[int, tuple[int, int]], options: np.ndarray, budget_ms: float | None
    ) -> LatencyConstraint:
        """The constraint Σ_l latency_l + Σ switches ≤ `budget_ms` (None: latency predicted only) on the
        `free` layers' `options` (K, 2) of (weight, activation) bits, `fixed` layers at their bits."""
        fixed_ms = self.overhead_ms + sum(self.layer_ms(i, w, a) for i, (w, a) in fixed.items())
        cost = [[_ns(self.layer_ms(i, int(w), int(a))) for w, a in options] for i in free]
        int8 = np.array([[self.is_int8(i, int(w), int(a)) for w, a in options] for i in free], dtype=bool)
        int8 = int8.reshape(len(free), len(options))
        row = {i: f for f, i in enumerate(free)}

        def slot(i: int) -> tuple[int, int]:
            """(row, -1) for a free layer whose options run both kernels; else (-1, y), y its int8-ness
            whatever is chosen (a fixed layer, or one whose options share one kernel)."""
            if i in fixed:
                return -1, int(self.is_int8(i, *fixed[i]))
            kinds = int8[row[i]]
            return (row[i], -1) if kinds.any() != kinds.all() else (-1, int(kinds[0]))

        slots = [slot(i) for i in range(len(self.layer_names))]
        pairs = []
        for i in range(1, len(slots)):
            (ra, ya), (rb, yb) = slots[i - 1], slots[i]
            if ra < 0 and rb < 0:
                fixed_ms += self.switch_ms[i] * (ya != yb)
            elif self.switch_ms[i] > 0:
                pairs.append((ra, rb, ya, yb, _ns(self.switch_ms[i])))
        return LatencyConstraint(
            np.array(cost, dtype=np.int64).reshape(len(free), len(options)),
            _ns(fixed_ms),
            budget_ms,
            self.path,
            int8,
            tuple(pairs),
        )


def _ns(ms: float) -> int:
    return round(ms * NS_PER_MS)


@dataclass(frozen=True, eq=False)
class LatencyConstraint:
    """Σ over the free layers of `cost_ns` (F, K) int64 at each one's option, plus `fixed_ns` (the
    fixed layers, the switches between them and the table's overhead), plus the `pairs`' switches,
    at most `budget_ms` (None: no constraint, the latency is only predicted). `int8` (F, K): whether
    each option runs an int8 kernel. A pair (row a, row b, y a, y b, ns) costs ns when the int8-ness
    of two consecutive layers differs: each is a free layer's row, or -1 for a layer whose int8-ness
    is y whatever is chosen. `table` names the table in messages."""

    cost_ns: np.ndarray
    fixed_ns: int
    budget_ms: float | None
    table: str
    int8: np.ndarray
    pairs: tuple[tuple[int, int, int, int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.budget_ms is not None and not Interval(0, MAX_LATENCY_MS, closed="right")(self.budget_ms):
            raise EvoproxyError(
                f"latency budget must be a number of milliseconds above 0 and at most {MAX_LATENCY_MS:g}, "
                f"got {self.budget_ms!r}"
            )

    @property
    def budget_ns(self) -> int | None:
        # Rounding to 1/1000 ns first absorbs the float error of ms × 10^6.
        return None if self.budget_ms is None else math.floor(round(self.budget_ms * NS_PER_MS, 3))

    @property
    def min_ns(self) -> int:
        """A bound on the fastest configuration's latency: every free layer at its fastest option,
        no switch between free layers."""
        return self.fixed_ns + int(self.cost_ns.min(axis=1).sum())

    @functools.cached_property
    def _pair_columns(self) -> np.ndarray:
        """The `pairs` as columns, (5, P) int64: row a, row b, y a, y b, ns; built once, for `switched`
        and `of` on every configuration a solver checks."""
        return np.array(self.pairs, dtype=np.int64).reshape(len(self.pairs), 5).T

    def switched(self, choice: np.ndarray) -> np.ndarray:
        """(..., P) int: whether each of the `pairs` switches kernels under `choice` (..., F)."""
        ra, rb, ya, yb, _ = self._pair_columns
        # A row of -1 reads the last free layer, which np.where drops (a pair has a free layer: F > 0).
        a, b = self.int8[ra, choice[..., ra]], self.int8[rb, choice[..., rb]]
        return (np.where(ra < 0, ya, a) != np.where(rb < 0, yb, b)).astype(np.int64)

    def of(self, choice: np.ndarray) -> int:
        """Latency in ns of `choice` (F,) option indices of the free layers."""
        return int(self.of_each(choice))

    def of_each(self, choices: np.ndarray) -> np.ndarray:
        """Latency in ns (...,) int64 of each configuration of `choices` (..., F)."""
        switches = self.switched(choices) @ self._pair_columns[4]
        return self.fixed_ns + self.cost_ns[np.arange(len(self.cost_ns)), choices].sum(-1) + switches

    def fits(self, choice: np.ndarray) -> bool:
        return self.budget_ms is None or self.of(choice) <= self.budget_ns

    def record(self, choice: np.ndarray) -> dict:
        """What an Allocation records of `choice` (F,): its predicted latency and the budget, in ms."""
        return {"latency_ms": self.of(choice) / NS_PER_MS, "latency_budget_ms": self.budget_ms}

    def shortfall(self) -> str | None:
        """Why no configuration meets the budget, or None if the fastest one does."""
        if self.budget_ms is None or self.min_ns <= self.budget_ns:
            return None
        fastest = math.ceil(self.min_ns / 1000) / 1000  # in whole µs, rounded up: itself a feasible budget
        return (
            f"latency budget {self.budget_ms} ms is below the fastest feasible {fastest:g} ms "
            f"(every free layer at its fastest option in {self.table}, fixed layers as fixed, no int8/float switch "
            "between free layers)"
        )


def load_latency_table(path: str | Path) -> LatencyTable:
    """The latency table that `evoproxy latency` wrote to `path`; EvoproxyError (one line) for a
    file that is missing, not JSON or not such a table."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EvoproxyError(f"latency table {path} does not exist: measure one with `evoproxy latency`") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise EvoproxyError(f"latency table {path} is not a JSON file: {exc}") from None
    except OSError as exc:
        raise EvoproxyError(f"cannot read latency table {path}: {exc.strerror}") from None
    bad = EvoproxyError(f"{path} is not a latency table of format {FORMAT}: write one with `evoproxy latency`")
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("layers"), list):
        raise bad
    ms, kernel, names, switch = {}, {}, [], []
    try:
        for index, row in enumerate(data["layers"]):
            names.append(str(row["name"]))
            switch.append(float(row["switch_ms"]))
            for entry in row["options"]:
                key = (index, int(entry["w_bits"]), int(entry["a_bits"]))
                ms[key], kernel[key] = float(entry["ms"]), str(entry["kernel"])
        overhead = float(data["overhead_ms"])
    except (KeyError, TypeError, ValueError):
        raise bad from None
    if not all(math.isfinite(v) and v >= 0 for v in [*ms.values(), *switch, overhead]):
        raise EvoproxyError(f"latency table {path} holds a latency that is negative or not finite")
    return LatencyTable(str(path), str(data.get("model", "unknown")), tuple(names), ms, kernel, overhead, tuple(switch))
