"""What happened to the candidates of an iteration (a Tally), and the progress line that sums
the iterations since the last line."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

WL_REPEATS = "WL repeats"  # a proposal whose canonical WL hash the run has seen: never judged again
SAME_BEHAVIOUR = "same behaviour"  # judged, but ranks the sample exactly like a member of its island


@dataclass
class Tally:
    """Counts of proposed candidates: judged in this session (`evaluated`), read back from the
    store after a kill (`replayed`), and screened out by reason (`screened`: WL repeats, a CSP
    rule of fitness.RULES, same behaviour; in the order each reason first came up), with the
    seconds they took."""

    evaluated: int = 0
    replayed: int = 0
    screened: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def proposed(self) -> int:
        """Every candidate proposed: judged, replayed or a WL repeat."""
        return self.evaluated + self.replayed + self.screened[WL_REPEATS]

    def rejected(self) -> dict[str, int]:
        """Judged candidates screened out, by reason (what the history table stores)."""
        return {reason: n for reason, n in self.screened.items() if reason != WL_REPEATS and n}

    def add(self, other: Tally) -> None:
        """Add `other`'s counts and seconds to these."""
        self.evaluated += other.evaluated
        self.replayed += other.replayed
        self.screened.update(other.screened)
        self.seconds += other.seconds


def progress_line(tally: Tally) -> str:
    """Evaluation rate, and the share of proposed candidates that each screening reason removed
    (most first; among equals, the first to come up)."""
    rate = tally.evaluated / tally.seconds if tally.seconds > 0 else float("inf")
    shares = " ".join(
        f"{reason} {100 * n / tally.proposed:.1f}%"
        for reason, n in sorted(tally.screened.items(), key=lambda p: -p[1])
        if n
    )
    return f"{rate:.0f} evals/s | screened out of {tally.proposed} proposed: {shares or 'none'}"
