"""The paper's bit assignment (EMQ §4, after QE): draw many random configurations, keep those
within budget, return the best scoring. A baseline: it never claims optimality."""

from __future__ import annotations

from time import perf_counter

import numpy as np

from ..errors import EvoproxyError
from ..params import Interval, check_parameters
from .problem import AllocationProblem
from .result import Allocation

CHUNK = 4096  # configurations scored at once; bounds memory at CHUNK × layers


def solve_sample(problem: AllocationProblem, n_samples: int = 20_000, seed: int = 0) -> Allocation:
    """Best of `n_samples` configurations drawn uniformly (every free layer's option
    independently, numpy generator seeded with `seed`) that meet every budget. Ties go to the
    earliest draw. Raises EvoproxyError if no draw meets the budgets."""
    t0 = perf_counter()
    problem.check_feasible()
    check_parameters({"n_samples": n_samples}, {"n_samples": Interval(1, None, integer=True)}, owner="solve_sample")
    rng = np.random.default_rng(seed)
    n_free, n_opt = problem.value.shape
    rows = np.arange(n_free)
    size_cap = problem.size_budget_bits - problem.fixed_size_bits
    bops_cap = None if problem.bops_budget is None else problem.bops_budget_int - problem.fixed_bops
    latency = problem.latency
    best_value, best_choice, n_ok = -np.inf, None, 0
    for start in range(0, n_samples, CHUNK):
        choice = rng.integers(0, n_opt, size=(min(CHUNK, n_samples - start), n_free))
        ok = problem.size_bits[rows, choice].sum(axis=1) <= size_cap
        if bops_cap is not None:
            ok &= problem.bops[rows, choice].sum(axis=1) <= bops_cap
        if latency is not None and latency.budget_ms is not None:
            ok &= latency.of_each(choice) <= latency.budget_ns  # the layers' latencies and the switches
        n_ok += int(ok.sum())
        value = np.where(ok, problem.value[rows, choice].sum(axis=1), -np.inf)
        i = int(value.argmax())
        if ok[i] and value[i] > best_value:
            best_value, best_choice = value[i], choice[i]
    if best_choice is None:
        raise EvoproxyError(
            f"none of {n_samples} random configurations met the budget; draw more "
            "(n_samples), raise the budget, or use method ilp or dp"
        )
    note = f"best of {n_samples} random configurations (seed {seed}), {n_ok} within budget"
    return problem.allocation(best_choice, "sample", False, perf_counter() - t0, note)
