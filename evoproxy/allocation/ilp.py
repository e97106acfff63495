"""Exact allocation as a 0/1 integer program solved by HiGHS (scipy.optimize.milp): one binary
per (free layer, option), one option per layer, a size row and optionally a BOPs row and a
latency row (HAWQ-V3's three constraints)."""

from __future__ import annotations

from time import perf_counter

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp

from ..errors import EvoproxyError
from .problem import AllocationProblem, reduced_constraint
from .result import Allocation

MAX_RESOLVES = 5


def solve_ilp(problem: AllocationProblem, time_limit: float | None = None) -> Allocation:
    """Maximise the objective under the size (and BOPs and latency) budget. `time_limit` in seconds; a run
    stopped by it returns its best configuration with `optimal=False`. Among exactly tied
    optima the result is HiGHS's, deterministic for a given problem but not canonical."""
    t0 = perf_counter()
    problem.check_feasible()
    n_free, n_opt = problem.value.shape
    rows = [reduced_constraint(problem.size_bits, problem.size_budget_bits - problem.fixed_size_bits)]
    if problem.bops_budget is not None:
        rows.append(reduced_constraint(problem.bops, problem.bops_budget_int - problem.fixed_bops))
    if problem.latency is not None and problem.latency.budget_ms is not None:
        latency = problem.latency
        rows.append(reduced_constraint(latency.cost_ns, latency.budget_ns - latency.fixed_ns))
    costs, caps = [c for c, _ in rows], [b for _, b in rows]
    gain = problem.value - problem.value.min(axis=1, keepdims=True)
    # Scale the objective to [0, 1] so HiGHS's absolute gap (1e-6) is relative to the value spread.
    objective = -(gain / (gain.max() or 1.0)).ravel()
    one_hot = LinearConstraint(sparse.kron(sparse.eye(n_free), np.ones((1, n_opt))), 1, 1)
    options = {"mip_rel_gap": 0.0} | ({} if time_limit is None else {"time_limit": time_limit})
    resolved = 0
    while True:
        # Rows scaled to coefficients ≤ 1: raw BOPs coefficients (~1e6 even after the gcd) make HiGHS
        # repair presolved solutions over and over; exactness is restored by the check below. (Latency
        # coefficients may be negative: a layer's fewest bits need not be its fastest option.)
        scales = [max(abs(c).max(), 1) for c in costs]
        budget_rows = [
            LinearConstraint(c.reshape(1, -1) / s, -np.inf, cap / s) for c, cap, s in zip(costs, caps, scales)
        ]
        res = milp(
            objective,
            integrality=np.ones(objective.size),
            bounds=Bounds(0, 1),
            constraints=[one_hot, *budget_rows],
            options=options,
        )
        if res.status == 2:  # infeasible, though each budget alone is met (check_feasible)
            raise EvoproxyError(
                "no configuration meets all the budgets together, though each alone can be met: raise one"
            )
        if res.x is None:
            raise EvoproxyError(
                f"the ILP solver stopped without a configuration ({res.message}); give it a longer time_limit"
            )
        choice = res.x.reshape(n_free, n_opt).argmax(axis=1)
        excess = [int(c[np.arange(n_free), choice].sum()) - cap for c, cap in zip(costs, caps)]
        if max(excess) <= 0:
            break
        # HiGHS accepts binaries within 1e-6 of 0/1, which on large layers can hide an overrun
        # of a few bits; lower the budget by the overrun and solve again.
        resolved += 1
        if resolved > MAX_RESOLVES:
            raise EvoproxyError(
                f"the ILP solver kept returning configurations over budget after {MAX_RESOLVES} "
                "re-solves; use method dp for a size budget alone"
            )
        caps = [cap - max(e, 0) for cap, e in zip(caps, excess)]
    note = f"re-solved {resolved}× with budgets lowered by the solver's rounding overrun" if resolved else ""
    return problem.allocation(choice, "ilp", res.status == 0 and not resolved, perf_counter() - t0, note)
