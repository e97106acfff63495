"""The evolution stage. Takes a bench and a search space; evolves proxies (EMQ Algorithm 1: DEAP
toolbox, DPS, OSP, CSP), stores every candidate in the run's SQLite file as it is judged, and
gives the chosen proxy with its report on the held-out split and on another model's bench."""

from .checkpoint import RunState
from .evolution import Evolution
from .fitness import CSPSettings, FitnessTask, search_partition
from .operators import Individual, migrate, tournament
from .report import full_report
from .result import fittest_distinct, select_final
from .runs import export_candidates, leaderboard, list_runs, run_summary
from .settings import PRESETS, EvolutionSettings, expand_benches, transfer_benches
from .simplified import search_fitness, simplified_report
from .store import RunStore

__all__ = [
    "PRESETS",
    "CSPSettings",
    "Evolution",
    "EvolutionSettings",
    "FitnessTask",
    "Individual",
    "RunState",
    "RunStore",
    "expand_benches",
    "export_candidates",
    "fittest_distinct",
    "full_report",
    "leaderboard",
    "list_runs",
    "migrate",
    "run_summary",
    "search_fitness",
    "search_partition",
    "select_final",
    "simplified_report",
    "tournament",
    "transfer_benches",
]
