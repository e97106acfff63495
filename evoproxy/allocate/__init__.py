"""Bit allocation: choose per-layer bit-widths that maximise a proxy's score under a size
(and BOPs) budget — the multiple-choice knapsack of the paper's equation 3.

    problem = build_problem(layers, sensitivities, size_mb=0.1, bops=2e9)
    result = allocate(problem, "ilp")           # or "dp", "sample"
    json.dumps(result.to_dict())

Solvers are plain functions in SOLVERS, so a caller can swap or add one.
"""
from __future__ import annotations

from collections.abc import Callable

from ..errors import EvoproxyError
from .dp import solve_dp
from .ilp import solve_ilp
from .problem import AllocationProblem, build_problem
from .result import Allocation
from .sample import solve_sample

SOLVERS: dict[str, Callable[..., Allocation]] = {"ilp": solve_ilp, "dp": solve_dp, "sample": solve_sample}


def allocate(problem: AllocationProblem, method: str = "ilp", **options) -> Allocation:
    """Solve `problem` with the solver named `method`; `options` go to that solver
    (ilp: time_limit; dp: max_cells; sample: n_samples, seed)."""
    if method not in SOLVERS:
        raise EvoproxyError(f"unknown allocation method {method!r}: use one of {', '.join(SOLVERS)}")
    return SOLVERS[method](problem, **options)


__all__ = ["Allocation", "AllocationProblem", "SOLVERS", "allocate", "build_problem",
           "solve_dp", "solve_ilp", "solve_sample"]
