"""When a candidate's per-layer sensitivities can rank bit configurations (EMQ's naive invalid
check, App. D.4, applied per layer), and the validity rate of a search space (EMQ, Table 3)."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

import torch

MAX_BITS = 32  # the largest bit-width a score Σ b_l·s_l may multiply by
RTOL = 1e-9  # values closer than this (relative to the largest) count as equal


def validity_reason(values: torch.Tensor) -> str | None:
    """None if the sensitivities `values` (shape (L,)) are usable, else why not: a value that is
    nan or inf, the same value for every layer (every configuration with the same total bits
    would tie), every value in {-1, 0, 1} (an indicator, not a sensitivity), or values so large
    that Σ b_l·s_l overflows. "Same" and "in" allow a relative difference of RTOL."""
    if not bool(torch.isfinite(values).all()):
        return "not finite (nan or inf)"
    # Equalities hold up to rounding: softmax sums to 1 only within a few ulps, for instance.
    if bool(values.max() - values.min() <= RTOL * values.abs().max()):
        return "constant across layers"
    # Zero relative to the largest value: tiny sensitivities still rank (Σ b·s ignores scale).
    zero = values.abs() <= RTOL * values.abs().max()
    if bool((zero | ((values.abs() - 1).abs() <= RTOL)).all()):
        return "every value is -1, 0 or 1"
    if not bool(torch.isfinite(values.abs().sum() * MAX_BITS)):
        return "too large: the bit-configuration score overflows"
    return None


@dataclass(frozen=True)
class ValidityReport:
    """How many of `samples` random proxies of `space` were valid, and why the others were not
    (reason → count; reasons name the first failing operation without its node)."""
    space: str
    osp: bool
    samples: int
    valid: int
    reasons: dict[str, int]

    @property
    def rate(self) -> float:
        return self.valid / self.samples


def measure_validity(space, stats, samples: int, osp: bool = True, seed: int = 0) -> ValidityReport:
    """Sample `samples` proxies from `space` (a SearchSpace or a name) with or without OSP and
    evaluate each on `stats`: the analog of EMQ's Table 3."""
    from .variation import sample_genome
    from .inputs import prepare_inputs
    from .space import load_space

    space = load_space(space)
    inputs = prepare_inputs(stats)
    rng = random.Random(seed)
    reasons: Counter = Counter()
    for _ in range(samples):
        reason = sample_genome(space, rng, osp).evaluate(inputs).reason
        if reason is not None:
            reasons[reason.split(" (node")[0]] += 1
    return ValidityReport(space.name, osp, samples, samples - sum(reasons.values()), dict(reasons.most_common()))
