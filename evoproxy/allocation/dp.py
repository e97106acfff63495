"""Exact allocation under the size budget alone by dynamic programming over whole bits (a BOPs or
latency budget, a second dimension, goes to the ILP).

Sizes are whole numbers of bits, so after `reduced_constraint` (cheapest option subtracted,
gcd divided out) the DP runs on an integer grid and is exact, not an approximation.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from time import perf_counter

import numpy as np

from ..errors import EvoproxyError
from .ilp import solve_ilp
from .problem import AllocationProblem, reduced_constraint
from .result import Allocation

DP_MAX_CELLS = 50_000_000  # layers × options × capacity steps: ~0.5 s and ~50 MB at most


def solve_dp(problem: AllocationProblem, max_cells: int = DP_MAX_CELLS) -> Allocation:
    """Maximise the objective under the size budget. Among exactly tied optima it returns the
    lexicographically smallest configuration: fewest bits at the earliest layer, then the next.
    A grid over `max_cells` is solved by `solve_ilp` instead, with a warning and a note."""
    t0 = perf_counter()
    problem.check_feasible()
    if problem.bops_budget is not None or (problem.latency is not None and problem.latency.budget_ms is not None):
        raise EvoproxyError("method dp handles the size budget only; use method ilp for a BOPs or latency budget")
    cost, cap = reduced_constraint(problem.size_bits, problem.size_budget_bits - problem.fixed_size_bits)
    cap = min(cap, int(cost.max(axis=1).sum()))  # capacity beyond every layer's largest option is unused
    cells = cost.size * (cap + 1)
    if cells > max_cells:
        msg = f"the dp grid of {cells} cells exceeds max_cells={max_cells}; solved with ilp instead"
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        result = solve_ilp(problem)
        return replace(result, note="; ".join(filter(None, [msg, result.note])))
    return problem.allocation(_dp_choice(problem.value, cost, cap), "dp", True, perf_counter() - t0)


def _dp_choice(value: np.ndarray, cost: np.ndarray, cap: int) -> np.ndarray:
    """Optimal option per layer. `value` (F, K) float, `cost` (F, K) int ≥ 0 with column 0 zero,
    `cap` ≥ 0. best[c] is the best value of the layers after f within capacity c; the DP runs
    from the last layer back so that the forward read-out can take the smallest tied option."""
    n_free, n_opt = value.shape
    best = np.zeros(cap + 1)
    pick = np.empty((n_free, cap + 1), dtype=np.min_scalar_type(n_opt - 1))
    for f in range(n_free - 1, -1, -1):
        new = np.full(cap + 1, -np.inf)
        cand = np.empty(cap + 1)
        for k in range(n_opt):
            c = int(cost[f, k])
            if c > cap:
                continue
            cand[:c] = -np.inf
            np.add(best[: cap + 1 - c], value[f, k], out=cand[c:])
            better = cand > new  # strict: an exact tie keeps the earlier, fewer-bit option
            np.copyto(pick[f], k, where=better)
            np.maximum(new, cand, out=new)
        best = new
    choice = np.empty(n_free, dtype=np.int64)
    c = cap
    for f in range(n_free):
        choice[f] = pick[f, c]
        c -= int(cost[f, choice[f]])
    return choice
