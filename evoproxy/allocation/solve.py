"""The solvers by name: `allocate(problem, method)` dispatches to one of SOLVERS, plain
functions, so a caller can swap or add one."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import EvoproxyError
from .dp import solve_dp
from .ilp import solve_ilp
from .problem import AllocationProblem
from .result import Allocation
from .sample import solve_sample

SOLVERS: dict[str, Callable[..., Allocation]] = {"ilp": solve_ilp, "dp": solve_dp, "sample": solve_sample}


def allocate(problem: AllocationProblem, method: str = "ilp", **options) -> Allocation:
    """Solve `problem` with the solver named `method`; `options` go to that solver
    (ilp: time_limit; dp: max_cells; sample: n_samples, seed)."""
    if method not in SOLVERS:
        raise EvoproxyError(f"unknown allocation method {method!r}: use one of {', '.join(SOLVERS)}")
    return SOLVERS[method](problem, **options)
