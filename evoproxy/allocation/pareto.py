"""Pareto sweep (EMQ Figure 5): the allocation of each proxy at each size budget, uniform-precision
baselines beside them, optionally their measured PTQ accuracy, as rows and as a plot of
accuracy against size."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ..files import save_figure
from ..pace import paced
from ..quant import PtqEvaluator
from ..quant import average_bits
from .problem import AllocationProblem
from .result import Allocation
from .solve import allocate


@dataclass(frozen=True)
class ParetoPoint:
    """One configuration of the sweep. `kind` is "mixed" (a proxy's allocation under
    `budget_mb`) or "uniform" (every free layer at the same weight and activation bits; `proxy`
    names them and `budget_mb` is None). `w_bits`, `a_bits` per layer (registry order); `size_mb`
    in MB (10^6 bytes), `bops` per sample, `avg_bits` the weight bits averaged over all weights
    (size-weighted), `optimal` whether the solver proved it optimal, `accuracy` top-1 % or None."""

    proxy: str
    kind: str
    budget_mb: float | None
    w_bits: tuple[int, ...]
    a_bits: tuple[int, ...]
    size_mb: float
    bops: float
    avg_bits: float
    optimal: bool | None
    accuracy: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _point(problem: AllocationProblem, result: Allocation, proxy: str, kind: str) -> ParetoPoint:
    mixed = kind == "mixed"
    return ParetoPoint(
        proxy,
        kind,
        result.size_budget_mb if mixed else None,
        result.w_bits,
        result.a_bits,
        result.size_mb,
        result.bops,
        average_bits(problem.layers, result.w_bits, problem.weight_format),
        result.optimal if mixed else None,
    )


def uniform_points(problem: AllocationProblem) -> list[ParetoPoint]:
    """One point per (weight, activation) option of `problem`: every free layer at that option,
    fixed layers as fixed; named "uniform W4" (one activation choice) or "uniform W4A8". Costs
    come from the problem's tables."""
    points = []
    for option, (w, a) in enumerate(problem.options):
        result = problem.allocation(np.full(len(problem.free), option), "uniform", False, 0.0)
        name = f"uniform W{w}" + (f"A{a}" if len(problem.a_choices) > 1 else "")
        points.append(_point(problem, result, name, "uniform"))
    return points


def sweep(
    problems: Sequence[tuple[str, AllocationProblem]], sizes_mb: Sequence[float], method: str = "ilp"
) -> list[ParetoPoint]:
    """Allocate each (proxy name, problem) at each size budget in `sizes_mb` (MB) with solver
    `method`, then append the uniform baselines of the first problem (the costs are the same for
    every proxy of one model). Rows: proxies in the given order, sizes as given."""
    points = [
        _point(problem, allocate(problem.with_budget(size, problem.bops_budget), method), name, "mixed")
        for name, problem in problems
        for size in sizes_mb
    ]
    return points + uniform_points(problems[0][1])


def evaluate_points(points: Sequence[ParetoPoint], evaluator: PtqEvaluator, log=None) -> list[ParetoPoint]:
    """`points` with their PTQ accuracy measured by `evaluator` at their weight and activation bits
    (a configuration that several points share is measured once); `log` gets progress (pace.paced)."""
    return [
        replace(p, accuracy=evaluator.measure(p.w_bits, p.a_bits))
        for p in paced(points, len(points), "pareto: measured point", log)
    ]


def plot_pareto(
    points: Sequence[ParetoPoint], path: str | Path, fp_accuracy: float | None = None, title: str = ""
) -> None:
    """Accuracy (%) against size (MB) per proxy, uniform baselines as black squares and the
    full-precision accuracy as a dashed line, written to the PNG file `path`. Points need accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name in dict.fromkeys(p.proxy for p in points if p.kind == "mixed"):
        mine = sorted((p for p in points if p.proxy == name), key=lambda p: p.size_mb)
        ax.plot([p.size_mb for p in mine], [p.accuracy for p in mine], marker="o", ms=4, label=name)
    for p in (p for p in points if p.kind == "uniform"):
        ax.scatter(p.size_mb, p.accuracy, marker="s", color="black", zorder=3)
        ax.annotate(
            p.proxy.removeprefix("uniform "),
            (p.size_mb, p.accuracy),
            textcoords="offset points",
            xytext=(4, -10),
            fontsize=8,
        )
    if fp_accuracy is not None:
        ax.axhline(fp_accuracy, color="gray", linestyle="--", linewidth=1, label="full precision")
    ax.set_xlabel("size of the quantizable layers (MB)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
