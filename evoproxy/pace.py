"""Progress lines for long loops: one every PROGRESS_SECONDS, with how far the loop has come and
about how long it has left, so that no step runs for a minute without a word, whether the lines
go to a terminal or to a log file."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

PROGRESS_SECONDS = 30.0
T = TypeVar("T")

# When the last line of any loop was logged (or the first loop with a log began): the interval runs
# from there, so that passes too short to speak alone (a model's calibration passes, then its
# evaluation) still speak when they add up to a long silence.
_quiet_since: float | None = None


def paced(
    items: Iterable[T], total: int, what: str, log: Callable[[str], None] | None, seconds: float | None = None
) -> Iterator[T]:
    """`items`, of which there are `total` (or at most `total`: the time left is then a bound), logging
    "`what` i/total (s so far, about s left)" before item i once `seconds` have passed since the last
    line of any loop (default PROGRESS_SECONDS; none before the first item: a short loop after a line
    says nothing). `log` None: no lines."""
    global _quiet_since
    seconds = PROGRESS_SECONDS if seconds is None else seconds
    start = time.perf_counter()
    if log is not None and _quiet_since is None:
        _quiet_since = start
    for i, item in enumerate(items):
        now = time.perf_counter()
        if log is not None and i and now - _quiet_since >= seconds:
            _quiet_since, took = now, now - start
            log(f"{what} {i}/{total} ({took:.0f} s, about {took * (total - i) / i:.0f} s left)")
        yield item
