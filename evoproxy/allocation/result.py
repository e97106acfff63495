"""The result of a bit allocation: per-layer bits in registry order, its cost and how it was found."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Allocation:
    """Bits per layer in registry order (`w_bits`, `a_bits`, one entry per `layer_names`).

    `objective` is Σ_l value(l, bits_l) over all layers; `size_mb` (MB of 10^6 bytes) and
    `bops` (bit operations per sample) are quant/cost.py's per-layer costs summed exactly in
    whole bits (model_size_mb may differ by float rounding); `optimal` is True only when
    the solver proved the configuration optimal (to 1e-6 of the largest per-layer value spread
    for ilp); `seconds` is the solve time. With a latency table, `latency_ms` is its predicted
    latency (the table's sum) and `latency_budget_ms` the budget (None: none).
    """

    layer_names: tuple[str, ...]
    w_bits: tuple[int, ...]
    a_bits: tuple[int, ...]
    objective: float
    size_mb: float
    bops: float
    optimal: bool
    method: str
    seconds: float
    size_budget_mb: float
    bops_budget: float | None = None
    note: str = ""
    latency_ms: float | None = None
    latency_budget_ms: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready dict; `layers` lists {index, name, w_bits, a_bits} in registry order."""
        d = asdict(self)
        names, w, a = d.pop("layer_names"), d.pop("w_bits"), d.pop("a_bits")
        d["layers"] = [
            {"index": i, "name": n, "w_bits": wb, "a_bits": ab} for i, (n, wb, ab) in enumerate(zip(names, w, a))
        ]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Allocation:
        """Inverse of `to_dict`."""
        d = dict(d)
        layers = d.pop("layers")
        return cls(
            layer_names=tuple(l["name"] for l in layers),
            w_bits=tuple(l["w_bits"] for l in layers),
            a_bits=tuple(l["a_bits"] for l in layers),
            **d,
        )

    def __str__(self) -> str:
        status = "optimal" if self.optimal else "not proven optimal"
        bits = " ".join(f"{w}/{a}" for w, a in zip(self.w_bits, self.a_bits))
        return (
            f"{self.method} ({status}): objective {self.objective:.6g}, {self.size_mb:.4f} MB "
            f"of {self.size_budget_mb} MB, {self.bops / 1e9:.4f} GBOPs, "
            + ("" if self.latency_ms is None else f"{self.latency_ms:.4f} ms predicted latency, ")
            + f"solved in {self.seconds * 1e3:.1f} ms; "
            f"W/A bits {bits}" + (f"; {self.note}" if self.note else "")
        )
