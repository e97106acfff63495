"""Settings checked by parameter name (evoproxy.params): each constraint accepts what it says and
words what it needs; an error names the class and parameter, and the command line names the flag."""

import math
from dataclasses import dataclass

import numpy as np
import pytest

from evoproxy.cli.args import flag_for
from evoproxy.errors import ParameterError
from evoproxy.params import Interval, OneOf, Satisfies, check_parameters


@dataclass(frozen=True)
class Toy:
    epochs: int = 1
    rate: float = 0.5
    mode: str = "a"
    CONSTRAINTS = {
        "epochs": Interval(1, 100, integer=True),
        "rate": Interval(0, 1, closed="right"),
        "mode": [OneOf(("a", "b")), Satisfies(lambda m: m.startswith("x-"), "a name starting x-")],
    }

    def __post_init__(self):
        check_parameters(self)


def test_values_inside_pass_and_outside_fail_with_the_parameter_named():
    Toy(epochs=100, rate=1.0, mode="x-9")
    with pytest.raises(ParameterError, match=r"^Toy\.epochs must be a whole number between 1 and 100, got 0$"):
        Toy(epochs=0)
    with pytest.raises(ParameterError, match=r"rate must be a number above 0 and at most 1, got 0"):
        Toy(rate=0)
    with pytest.raises(ParameterError, match=r"mode must be a or b or a name starting x-, got 'c'"):
        Toy(mode="c")


@pytest.mark.parametrize("bad", [float("nan"), True, "3", 2.5])
def test_nan_booleans_text_and_fractions_are_not_whole_numbers(bad):
    assert not Interval(1, None, integer=True)(bad)


def test_numpy_numbers_pass_like_python_numbers():
    assert Interval(1, None, integer=True)(np.int64(3)) and Interval(0, 1)(np.float32(0.5))


def test_wording_of_bounds():
    assert str(Interval(0, None)) == "a number at least 0"
    assert str(Interval(0, None, closed="neither")) == "a number above 0"
    assert str(Interval(None, 5, closed="neither")) == "a number below 5"
    assert str(Interval(0, math.inf, closed="left")) == "a finite number at least 0"
    assert not Interval(0, math.inf, closed="left")(math.inf)
    assert str(Interval(0, 2**32 - 2, integer=True)) == "a whole number between 0 and 4294967294"
    assert str(Interval(0.5, None)) == "a number at least 0.5"
    assert str(OneOf(("mean", "min", "max"))) == "one of mean, min, max"


def test_mappings_are_checked_by_key_with_the_owner_given():
    with pytest.raises(ParameterError, match=r"^build\.configs must be"):
        check_parameters({"configs": 0}, {"configs": Interval(1, None, integer=True)}, owner="build")


def test_the_command_line_words_the_error_with_the_flag():
    error = ParameterError("Toy", "p_crossover", "a number between 0 and 1", 2.0)
    assert error.worded(flag_for(error)) == "--p-crossover must be a number between 0 and 1, got 2.0"
    renamed = ParameterError("AdaqatSettings", "lam", "a number at least 0", -1.0)
    assert flag_for(renamed) == "--bitops-lambda"
