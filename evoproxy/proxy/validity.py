"""The validity rate of a search space (EMQ, Table 3): the share of its random proxies whose
sensitivities pass `validity_reason` (EMQ's naive invalid check, App. D.4, applied per layer)."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from .inputs import prepare_inputs
from .space import load_space
from .variation import sample_genome


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
    space = load_space(space)
    inputs = prepare_inputs(stats)
    rng = random.Random(seed)
    reasons: Counter = Counter()
    for _ in range(samples):
        reason = sample_genome(space, rng, osp).evaluate(inputs).reason
        if reason is not None:
            reasons[reason.split(" (node")[0]] += 1
    return ValidityReport(space.name, osp, samples, samples - sum(reasons.values()), dict(reasons.most_common()))
