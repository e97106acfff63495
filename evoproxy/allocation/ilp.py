"""Exact allocation as a 0/1 integer program solved by HiGHS (scipy.optimize.milp): one binary
per (free layer, option), one option per layer, a size row and optionally a BOPs row and a
latency row (HAWQ-V3's three constraints). The latency row's int8/float switches between
consecutive layers are auxiliary variables z ≥ |y_a − y_b|, y a layer's int8-ness (a sum of its
binaries, or a constant): the row only charges them, so z is |y_a − y_b| or needlessly above it."""

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
    latency = problem.latency if problem.latency is not None and problem.latency.budget_ms is not None else None
    n_pairs = 0 if latency is None else len(latency.pairs)
    if latency is not None:
        # Each pair as a row of two options, not switched (0) and switched (its ns), reduced with the layers.
        switches = np.array([[0, ns] for *_, ns in latency.pairs], dtype=np.int64).reshape(n_pairs, 2)
        cost = np.zeros((n_free + n_pairs, max(n_opt, 2)), dtype=np.int64)
        cost[:n_free, :n_opt], cost[n_free:, :2] = latency.cost_ns, switches
        cost[:n_free, n_opt:] = latency.cost_ns[:, :1]  # no column beyond the options costs more
        rows.append(reduced_constraint(cost, latency.budget_ns - latency.fixed_ns))
    costs, caps = [c for c, _ in rows], [b for _, b in rows]
    n_x = n_free * n_opt
    gain = problem.value - problem.value.min(axis=1, keepdims=True)
    # Scale the objective to [0, 1] so HiGHS's absolute gap (1e-6) is relative to the value spread.
    objective = np.concatenate([-(gain / (gain.max() or 1.0)).ravel(), np.zeros(n_pairs)])
    one_hot = LinearConstraint(
        sparse.hstack([sparse.kron(sparse.eye(n_free), np.ones((1, n_opt))), sparse.csr_matrix((n_free, n_pairs))]),
        1,
        1,
    )
    links = [] if not n_pairs else [_switch_rows(latency, n_free, n_opt)]
    options = {"mip_rel_gap": 0.0} | ({} if time_limit is None else {"time_limit": time_limit})
    resolved = 0
    while True:
        # Rows scaled to coefficients ≤ 1: raw BOPs coefficients (~1e6 even after the gcd) make HiGHS
        # repair presolved solutions over and over; exactness is restored by the check below. (Latency
        # coefficients may be negative: a layer's fewest bits need not be its fastest option.)
        scales = [max(abs(c).max(), 1) for c in costs]
        budget_rows = [
            LinearConstraint(_row(c, n_free, n_opt, n_pairs) / s, -np.inf, cap / s)
            for c, cap, s in zip(costs, caps, scales)
        ]
        res = milp(
            objective,
            integrality=np.r_[np.ones(n_x), np.zeros(n_pairs)],
            bounds=Bounds(0, 1),
            constraints=[one_hot, *budget_rows, *links],
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
        choice = res.x[:n_x].reshape(n_free, n_opt).argmax(axis=1)
        full = choice if latency is None else np.r_[choice, latency.switched(choice)]
        excess = [int(c[np.arange(len(c)), full[: len(c)]].sum()) - cap for c, cap in zip(costs, caps)]
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


def _row(cost: np.ndarray, n_free: int, n_opt: int, n_pairs: int) -> np.ndarray:
    """A budget row over the variables (the options' binaries, then the pairs' z) from `cost`: (F, K),
    or for latency (F + P, max(K, 2)), a pair's switched cost in its column 1."""
    row = cost[:n_free, :n_opt].ravel()
    return np.r_[row, cost[n_free:, 1] if len(cost) > n_free else np.zeros(n_pairs)].reshape(1, -1)


def _switch_rows(latency, n_free: int, n_opt: int) -> LinearConstraint:
    """z_p − (y_a − y_b) ≥ 0 and z_p + (y_a − y_b) ≥ 0 for each pair p of `latency`."""
    n_pairs = len(latency.pairs)
    a = np.zeros((2 * n_pairs, n_free * n_opt + n_pairs))
    low = np.zeros(2 * n_pairs)
    for p, (ra, rb, ya, yb, _) in enumerate(latency.pairs):
        for sign, r in ((1, 2 * p), (-1, 2 * p + 1)):
            a[r, n_free * n_opt + p] = 1
            # y_a − y_b: a free layer's int8 binaries, a constant layer's y moved to the bound.
            for row, y, s in ((ra, ya, -sign), (rb, yb, sign)):
                if row < 0:
                    low[r] -= s * y
                else:
                    a[r, row * n_opt : (row + 1) * n_opt] = s * latency.int8[row]
    return LinearConstraint(a, low, np.inf)
