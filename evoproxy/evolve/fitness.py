"""Fitness of a candidate proxy and the compatibility screening protocol (CSP) that rejects a
candidate before, or instead of, its full evaluation (EMQ Sec. 3.2, App. D).

Fitness is the mean of ρ@20%, ρ@50% and ρ@100% (Spearman@topk, top-k by measured accuracy)
between the candidate's configuration scores Σ_l b_l·s_l and the accuracies of a fixed sample
of configurations. The early-rejection rules, each switchable:
- conflict awareness: an operation applied to the result of an operation it undoes or repeats
  to no effect (reciprocal∘reciprocal, neg∘neg, exp∘log, ...), rejected without evaluation;
- naive invalid check: sensitivities not finite, constant across layers, or all in {-1, 0, 1};
- sensitivity perception: configuration scores that barely vary over the sampled configurations.
Equivalence checking (canonical WL hash against every candidate already seen) lives in the
evolution loop, which owns the run's memory. BenchesTask judges on several benches (models) at
once; `search_partition` draws a run's fitness sample and validation configurations.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import rankdata

from ..bench import TOPK, Bench
from ..errors import ParameterError, exception_line
from ..params import Interval, OneOf, check_parameters
from ..proxy import INPUT, Genome, bit_columns, operands, table_score
from ..stats import quant_errors

# (outer, inner) pairs such that outer(inner(x)) undoes or merely repeats inner.
CONFLICTS = frozenset(
    {
        ("reciprocal", "reciprocal"),
        ("neg", "neg"),
        ("exp", "log"),
        ("log", "exp"),
        ("abs", "abs"),
        ("abs", "square"),
        ("abs", "exp"),
        ("abs", "sqrt"),
        ("abs", "relu"),
        ("relu", "relu"),
        ("relu", "abs"),
        ("sign", "sign"),
        ("normalize", "normalize"),
        ("minmax_normalize", "minmax_normalize"),
        ("softmax", "softmax"),
        ("sqrt", "square"),
        ("square", "sqrt"),
    }
)
RULES = ("conflict", "invalid", "insensitive", "error", "too slow")


MAX_TIMEOUT_S = 86_400.0  # a candidate's time limit: a day (the timer cannot take infinity)


@dataclass(frozen=True)
class CSPSettings:
    """Which early-rejection rules run, and their thresholds."""

    conflict: bool = True
    invalid: bool = True
    insensitive: bool = True
    min_relative_spread: float = 1e-9  # scores whose range is below this × max|score| are insensitive
    timeout_s: float = 5.0  # a candidate that takes longer is rejected

    CONSTRAINTS = {
        "min_relative_spread": Interval(0, None),
        "timeout_s": Interval(0, MAX_TIMEOUT_S, closed="right"),
    }

    def __post_init__(self):
        check_parameters(self)


@dataclass
class Outcome:
    """What happened to one candidate: fitness and its parts when it was evaluated, else the
    rule that rejected it and why."""

    fitness: float = float("nan")
    parts: dict[str, float] = field(default_factory=dict)
    rule: str | None = None
    reason: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.rule is None


def conflict(genome: Genome) -> str | None:
    """The first conflicting pair of chained unary operations in `genome`, or None."""
    g = genome.graph
    for node in g:
        if g.nodes[node]["role"] == INPUT:
            continue
        args = operands(g, node)
        if len(args) == 1 and g.nodes[args[0]]["role"] != INPUT:
            pair = (g.nodes[node]["name"], g.nodes[args[0]]["name"])
            if pair in CONFLICTS:
                return f"{pair[0]} after {pair[1]}"
    return None


class _Timeout(Exception):
    pass


@contextmanager
def deadline(seconds: float):
    """Interrupt the block with _Timeout after `seconds` of wall time. Needs SIGALRM and the
    main thread (this process, or a joblib/loky worker); elsewhere (Windows, Dask worker threads)
    it does nothing and a slow candidate is only rejected once it returns. A single torch call
    is not interrupted: the signal lands when it returns to Python."""
    if seconds <= 0 or not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def alarm(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class FitnessTask:
    """A fixed sample of configurations to judge candidates on: `bits` (N, L) and their
    measured accuracies `accuracy` (N,). Top-k subsets and their ground-truth ranks are
    precomputed, so one fitness is a matrix-vector product and three rankings."""

    def __init__(self, bits: np.ndarray, accuracy: np.ndarray):
        self.bits = torch.as_tensor(np.asarray(bits, dtype=np.float64))
        # For bit-aware genomes: the bit-widths the configurations use, and each layer's column.
        self.held = tuple(int(b) for b in self.bits.unique())
        self.columns = bit_columns(self.bits, self.held)
        acc = np.asarray(accuracy, dtype=float)
        order = np.argsort(-acc, kind="stable")
        self.subsets = []
        for k in TOPK:
            idx = order[: max(2, int(round(k * len(acc))))]
            self.subsets.append((f"rho@{int(k * 100)}%", idx, rankdata(acc[idx])))

    def parts(self, scores: np.ndarray) -> dict[str, float]:
        """ρ@k for each k, from configuration scores (N,)."""
        out = {}
        for key, idx, truth_ranks in self.subsets:
            s = scores[idx]
            out[key] = float("nan") if np.ptp(s) == 0 else float(np.corrcoef(rankdata(s), truth_ranks)[0, 1])
        return out

    def judge(self, genome: Genome, inputs, csp: CSPSettings = CSPSettings()) -> Outcome:
        """Screen and evaluate `genome` on prepared `inputs`. Never raises for a bad candidate."""
        start = time.perf_counter()
        if csp.conflict and (why := conflict(genome)):
            return Outcome(rule="conflict", reason=why, seconds=time.perf_counter() - start)
        try:
            with deadline(csp.timeout_s):
                if genome.bit_aware:
                    result = genome.evaluate(inputs, self.held)
                    scores = None if result.values is None else table_score(result.values, self.columns).numpy()
                else:
                    result = genome.evaluate(inputs)
                    scores = None if result.values is None else (self.bits @ result.values).numpy()
            if result.values is None or (csp.invalid and not result.valid):
                return Outcome(rule="invalid", reason=result.reason, seconds=time.perf_counter() - start)
            if not np.isfinite(scores).all():
                return Outcome(rule="invalid", reason="scores not finite", seconds=time.perf_counter() - start)
            if csp.insensitive and np.ptp(scores) <= csp.min_relative_spread * np.abs(scores).max():
                return Outcome(
                    rule="insensitive",
                    reason="scores barely vary with the bit configuration",
                    seconds=time.perf_counter() - start,
                )
            parts = self.parts(scores)
        except _Timeout:
            seconds = time.perf_counter() - start
            return Outcome(
                rule="too slow", reason=f"stopped after {seconds:.1f} s > {csp.timeout_s} s", seconds=seconds
            )
        except Exception as exc:  # a broken candidate is a rejection, never the end of a run
            return Outcome(
                rule="error",
                reason=exception_line(exc),
                seconds=time.perf_counter() - start,
            )
        seconds = time.perf_counter() - start
        if seconds > csp.timeout_s:
            return Outcome(rule="too slow", reason=f"{seconds:.1f} s > {csp.timeout_s} s", seconds=seconds)
        fitness = float(np.mean(list(parts.values())))
        if not np.isfinite(fitness):
            return Outcome(rule="invalid", reason="ρ undefined (tied scores)", parts=parts, seconds=seconds)
        return Outcome(fitness, parts, seconds=seconds)


SOFTMIN_TEMPERATURE = 0.05  # in fitness units (ρ): benches further than a few of it above the worst barely count


def softmin(values) -> float:
    """−τ·log(mean(exp(−f/τ))): near the worst fitness, but moved by every bench (τ = SOFTMIN_TEMPERATURE)."""
    f = np.asarray(values, dtype=np.float64)
    low = f.min()  # shifted, so that exp never underflows to log(0)
    return float(low - SOFTMIN_TEMPERATURE * np.log(np.mean(np.exp(-(f - low) / SOFTMIN_TEMPERATURE))))


# How the fitnesses of several benches make one: their mean, the worst, a soft minimum, or the
# lower quartile (the worst case that one odd bench does not decide alone).
AGGREGATES = {
    "mean": lambda values: float(np.mean(values)),
    "min": min,
    "softmin": softmin,
    "q25": lambda values: float(np.quantile(values, 0.25)),
}


class BenchesTask:
    """Fitness on several benches at once, for proxies that transfer across models (EZNAS judges
    on the worst of several search spaces): a candidate is judged by each bench's FitnessTask on
    that bench model's inputs, rejected where any bench rejects it, and its fitness is the mean,
    the worst (`aggregate` "min"), a soft minimum ("softmin") or the lower quartile ("q25") of the
    benches' fitnesses (AGGREGATES). Its parts are the mean ρ@k over
    the benches. On one bench it is that bench's FitnessTask, to the last bit."""

    def __init__(self, tasks: list[FitnessTask], aggregate: str = "mean"):
        check_parameters({"aggregate": aggregate}, {"aggregate": OneOf(tuple(AGGREGATES))}, owner="BenchesTask")
        self.tasks, self.aggregate = tasks, aggregate

    def judge(self, genome: Genome, inputs: list, csp: CSPSettings = CSPSettings()) -> Outcome:
        """Screen and evaluate `genome` on each bench's prepared `inputs` (one per task)."""
        outcomes: list[Outcome] = []
        for task, x in zip(self.tasks, inputs):
            outcome = task.judge(genome, x, csp)
            if not outcome.ok:
                outcome.seconds += sum(o.seconds for o in outcomes)
                return outcome
            outcomes.append(outcome)
        parts = {k: float(np.mean([o.parts[k] for o in outcomes])) for k in outcomes[0].parts}
        return Outcome(
            AGGREGATES[self.aggregate]([o.fitness for o in outcomes]), parts, seconds=sum(o.seconds for o in outcomes)
        )

    def compute_quantization_errors(self, inputs: list, log: Callable[[str], None] | None) -> None:
        """Compute the Q each bench's configurations read, on that bench's prepared `inputs`, with
        `log` getting progress lines (quant_errors.reporting): read first by a candidate, it would
        take long on a large model without a word, and count against that candidate's time limit."""
        with quant_errors.reporting(sum(len(layers) for layers in inputs), log):
            for task, layers in zip(self.tasks, inputs):
                for layer in layers:
                    for bits in task.held:
                        if "Q" in layer and bits in layer["Q"]:
                            layer["Q"][bits]


def search_partition(
    bench: Bench, n: int, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The configurations of a run as (bits (n, L), accuracies (n,)) pairs: the fitness sample,
    n drawn from the bench's search split with the run's seed (n = 0: the whole split), and the
    validation configurations, the rest of the search split."""
    entries = bench.split("search")
    if n == 0:
        bits, acc = Bench.arrays(entries)
        return (bits, acc), (bits[:0], acc[:0])
    if len(entries) < n:  # the run's `samples` setting, checked against this bench
        raise ParameterError(
            "EvolutionSettings", "samples", f"at most {len(entries)}, the search split of {bench.name}", n
        )
    chosen = set(np.random.default_rng(seed).choice(len(entries), n, replace=False).tolist())
    return (
        Bench.arrays([e for i, e in enumerate(entries) if i in chosen]),
        Bench.arrays([e for i, e in enumerate(entries) if i not in chosen]),
    )
