"""The allocation stage. Takes a proxy's scores and the layer registry; gives per-layer
bit-widths that maximise the score under a size (and BOPs, and with a measured latency table,
latency) budget, the multiple-choice knapsack of EMQ's equation 3 (exact DP or ILP, or
sampling), sweeps over budgets (Pareto) and bit configuration files.

    problem = proxy_problem(get_proxy("fisher"), stats, size_mb=0.1)
    result = allocate(problem, "ilp")           # or "dp", "sample"
    json.dumps(result.to_dict())
"""

from .bitconfig import act_bits_label, allocation_record, load_bit_config, load_weight_format, plot_bits
from .dp import solve_dp
from .from_proxy import proxy_problem, proxy_values, scores_linearly
from .ilp import solve_ilp
from .latency import MAX_LATENCY_MS, LatencyConstraint, LatencyTable, load_latency_table
from .layer_config import EXPORTERS
from .pareto import ParetoPoint, evaluate_points, plot_pareto, sweep, uniform_points
from .problem import MAX_BOPS, MAX_SIZE_MB, AllocationProblem, build_problem
from .result import Allocation
from .sample import solve_sample
from .solve import SOLVERS, allocate

__all__ = [
    "EXPORTERS",
    "MAX_BOPS",
    "MAX_LATENCY_MS",
    "MAX_SIZE_MB",
    "SOLVERS",
    "Allocation",
    "AllocationProblem",
    "LatencyConstraint",
    "LatencyTable",
    "ParetoPoint",
    "act_bits_label",
    "allocate",
    "allocation_record",
    "build_problem",
    "evaluate_points",
    "load_bit_config",
    "load_latency_table",
    "load_weight_format",
    "plot_bits",
    "plot_pareto",
    "proxy_problem",
    "proxy_values",
    "scores_linearly",
    "solve_dp",
    "solve_ilp",
    "solve_sample",
    "sweep",
    "uniform_points",
]
