"""The meta records a run stores beside its settings (checkpoint.save_checkpoint's state,
result.select_final's result) and what each of their fields must be, for RunStore's check on open."""

from __future__ import annotations

import random

from ..params import Interval

_count = Interval(0, None, integer=True)  # a whole number of at least 0


def _number(value) -> bool:
    return type(value) in (int, float)


def random_state(value):
    """random.getstate()'s value from its JSON form (lists for its tuples)."""
    return tuple(random_state(v) for v in value) if isinstance(value, list) else value


def _is_random_state(value) -> bool:
    try:
        random.Random().setstate(random_state(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return isinstance(value, list)


def _list_of(check):
    return lambda value: isinstance(value, list) and all(check(v) for v in value)


# The meta records beside the settings, as their writers store them (checkpoint.save_checkpoint
# with RunState's fields, result.select_final): key → (check, what it must be, required). Readers
# trust a record that passed. Runs stored before RunState had a type keep its fields in "extra".
RECORDS = {
    "state": {
        "iteration": (_count, "a whole number of at least 0", True),
        "rng": (_is_random_state, "a random state", True),
        "population": (_list_of(lambda v: isinstance(v, str)), "a list of candidate hashes", True),
        "islands": (_list_of(_count), "a list of island numbers", False),
        "elapsed": (_number, "a number of seconds", False),
        "stale": (_count, "a whole number of at least 0", False),
        "best": (lambda v: v is None or _number(v), "a number or null", False),
        "restarts": (_count, "a whole number of at least 0", False),
        "restarted_at": (_list_of(_count), "a list of iterations", False),
        "extra": (lambda v: isinstance(v, dict), "an object", False),
    },
    "final": {
        "iteration": (_count, "a whole number of at least 0", True),
        "hash": (lambda v: isinstance(v, str), "a candidate hash", True),
        "fitness": (_number, "a number", True),
        "validation": (lambda v: v is None or _number(v), "a number or null", True),
        "validation_configs": (_count, "a whole number of at least 0", True),
        "among": (_count, "a whole number of at least 0", True),
    },
}
