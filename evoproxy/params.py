"""Settings checked by parameter name from one declarative table per class, in the shape of
scikit-learn's `_parameter_constraints`: a class says what each of its parameters must be, and a
value outside that is a `ParameterError` (evoproxy.errors) naming the class and the parameter. The library never
names a command-line flag; the command line alone turns a parameter into its flag
(`evoproxy.cli.args.FLAGS`).

    @dataclass(frozen=True)
    class Settings:
        epochs: int = 1
        lr: float = 0.01
        CONSTRAINTS = {"epochs": Interval(1, None, integer=True), "lr": Interval(0, None, closed="neither")}

        def __post_init__(self):
            check_parameters(self)
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ParameterError


@dataclass(frozen=True)
class Interval:
    """A number between `low` and `high` (None: unbounded on that side), `closed` on "both"
    sides, "left", "right" or "neither"; whole numbers only where `integer` (numpy's too). NaN and
    booleans never pass; `high=math.inf` open on the right asks for a finite number."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"
    integer: bool = False

    def __call__(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if self.integer else numbers.Real):
            return False
        if math.isnan(value):
            return False
        low_ok = self.low is None or (value >= self.low if self.closed in ("both", "left") else value > self.low)
        high_ok = self.high is None or (value <= self.high if self.closed in ("both", "right") else value < self.high)
        return low_ok and high_ok

    def __str__(self) -> str:
        finite = self.high == math.inf and self.closed in ("left", "neither")
        kind = "a whole number" if self.integer else "a finite number" if finite else "a number"
        high = None if finite else self.high
        low_word = "at least" if self.closed in ("both", "left") else "above"
        high_word = "at most" if self.closed in ("both", "right") else "below"
        low = None if self.low is None else _number(self.low)
        high = None if high is None else _number(high)
        if low is None and high is None:
            return kind
        if high is None:
            return f"{kind} {low_word} {low}"
        if low is None:
            return f"{kind} {high_word} {high}"
        if self.closed == "both":
            return f"{kind} between {low} and {high}"
        return f"{kind} {low_word} {low} and {high_word} {high}"


def _number(x: float) -> str:
    """A bound as people write it: whole numbers in full (4294967294, not 4.29497e+09)."""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class OneOf:
    """One of `values` (compared with ==, booleans apart from numbers)."""

    values: tuple

    def __call__(self, value: Any) -> bool:
        return any(value == v and isinstance(value, bool) == isinstance(v, bool) for v in self.values)

    def __str__(self) -> str:
        words = list(map(str, self.values))
        return " or ".join(words) if len(words) < 3 else "one of " + ", ".join(words)


@dataclass(frozen=True)
class Satisfies:
    """A value for which `test` is true, worded as `requirement`."""

    test: Callable[[Any], bool]
    requirement: str

    def __call__(self, value: Any) -> bool:
        try:
            return bool(self.test(value))
        except (TypeError, ValueError):
            return False

    def __str__(self) -> str:
        return self.requirement


Constraint = Interval | OneOf | Satisfies


def check_parameters(
    obj: Any, constraints: Mapping[str, Constraint | list[Constraint]] | None = None, owner: str | None = None
) -> None:
    """Raise `ParameterError` for the first parameter of `obj` (an object's attribute, or a
    mapping's key) that meets none of its constraints; `constraints` default to
    `obj.CONSTRAINTS`, and `owner`, the name errors give, to `obj`'s class name."""
    constraints = type(obj).CONSTRAINTS if constraints is None else constraints
    owner = owner or type(obj).__name__
    for param, rules in constraints.items():
        rules = rules if isinstance(rules, list) else [rules]
        value = obj[param] if isinstance(obj, Mapping) else getattr(obj, param)
        if not any(rule(value) for rule in rules):
            raise ParameterError(owner, param, " or ".join(map(str, rules)), value)
