"""The search stage. Takes a bench and a search space; evolves proxies (EMQ Algorithm 1: DEAP
toolbox, DPS, OSP, CSP), stores every candidate in the run's SQLite file as it is judged, and
gives the chosen proxy with its report on the held-out split and on another model's bench."""

from .evolution import Evolution, EvolutionSettings
from .fitness import CSPSettings, FitnessTask
from .report import (
    export_candidates,
    full_report,
    leaderboard,
    list_runs,
    run_summary,
    search_fitness,
    simplified_report,
    transfer_benches,
)
from .store import RunStore

__all__ = [
    "CSPSettings",
    "Evolution",
    "EvolutionSettings",
    "FitnessTask",
    "RunStore",
    "export_candidates",
    "full_report",
    "leaderboard",
    "list_runs",
    "run_summary",
    "search_fitness",
    "simplified_report",
    "transfer_benches",
]
