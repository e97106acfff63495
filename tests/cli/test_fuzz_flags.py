"""Property-based fuzzing of the numeric flags of `evolve` and `show --top`: for any number, the
command either accepts it (it lies within the flag's documented bounds) or ends with exit code
2 and a one-line message that names the flag, never a traceback. `evolve` is stopped where the
run would start, so that no example computes anything."""

import math
import random

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import evoproxy.evolve  # noqa: E402
from evoproxy.cli import main  # noqa: E402
from evoproxy.proxy import get_genome  # noqa: E402
from evoproxy.evolve import RunStore  # noqa: E402
from evoproxy.evolve.fitness import Outcome  # noqa: E402

# flag → whether a value is within its documented bounds
INT_FLAGS = {
    "--population": lambda v: 2 <= v <= 10_000,
    "--islands": lambda v: 1 <= v <= 256,
    "--offspring": lambda v: 1 <= v <= 10_000,
    "--migration": lambda v: v >= 1,
    "--iterations": lambda v: v >= 0,
    "--patience": lambda v: v >= 0,
    "--select-top": lambda v: v >= 0,
    "--samples": lambda v: v == 0 or v >= 4,
    "--seed": lambda v: v >= 0,
    "--log-every": lambda v: v >= 0,
    "--jobs": lambda v: v == -1 or 1 <= v <= 256,
}
FLOAT_FLAGS = {
    "--hours": lambda v: 0 < v < math.inf,
    "--ratio": lambda v: 0 < v <= 1,
    "--p-crossover": lambda v: 0 <= v <= 1,
    "--p-mutation": lambda v: 0 <= v <= 1,
    "--parsimony": lambda v: 0 <= v < math.inf,
    "--candidate-timeout": lambda v: 0 < v <= 86_400,
}
FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# Around the bounds, and anywhere.
INTS = st.one_of(st.integers(-3, 12), st.integers(250, 260), st.integers(9_990, 10_010), st.integers(-(10**18), 10**18))
FLOATS = st.one_of(
    st.sampled_from([0.0, -0.0, 1.0, 86_400.0, 86_400.5, math.nan, math.inf, -math.inf, 5e-324]),
    st.floats(allow_nan=True, allow_infinity=True),
)


class _Started(Exception):
    """Raised where the run would start: the command accepted every flag."""


def _outcome(argv: list[str], capsys) -> str:
    """'accepted', or the one-line error of exit code 2 (anything else fails the test)."""
    try:
        code = main(argv)
    except _Started:
        return "accepted"
    err = capsys.readouterr().err
    assert code == 2, (argv, code, err)
    assert err.count("\n") == 1 and err.startswith(f"evoproxy {argv[0]}: error: ") and "Traceback" not in err, err
    return err


@pytest.fixture
def stopped_before_running(monkeypatch):
    def started(*args, **kwargs):
        raise _Started

    monkeypatch.setattr(evoproxy.evolve, "Evolution", started)


@pytest.mark.slow
@pytest.mark.parametrize("flag", sorted(INT_FLAGS))
def test_integer_flags_of_evolve_are_accepted_within_their_bounds_or_refused_in_one_line(
    flag, tmp_path, capsys, stopped_before_running
):
    @FUZZ
    @given(INTS)
    def check(value):
        got = _outcome(["evolve", "--preset", "paper", "--runs-dir", str(tmp_path), f"{flag}={value}"], capsys)
        assert (got == "accepted") == INT_FLAGS[flag](value), (flag, value, got)
        assert got == "accepted" or flag in got

    check()


@pytest.mark.slow
@pytest.mark.parametrize("flag", sorted(FLOAT_FLAGS))
def test_number_flags_of_evolve_are_accepted_within_their_bounds_or_refused_in_one_line(
    flag, tmp_path, capsys, stopped_before_running
):
    @FUZZ
    @given(FLOATS)
    def check(value):
        got = _outcome(["evolve", "--preset", "paper", "--runs-dir", str(tmp_path), f"{flag}={value!r}"], capsys)
        assert (got == "accepted") == FLOAT_FLAGS[flag](value), (flag, value, got)
        assert got == "accepted" or flag in got

    check()


@pytest.mark.slow
def test_show_top_takes_any_count_of_at_least_one(tmp_path, capsys):
    genome = get_genome("fisher").to_json()
    store = RunStore(tmp_path / "r" / "run.db", new={"config": {"iterations": 1}})
    for i in range(5):
        store.add_candidate(
            f"h{i}", genome, "fisher", Outcome(i / 10, {"rho@20%": i, "rho@50%": 0, "rho@100%": 0}), 0, "init"
        )
    store.put(state={"iteration": 0, "rng": random.Random(0).getstate(), "population": []})  # a whole state record
    store.close()

    @FUZZ
    @given(INTS)
    def check(k):
        code = main(["show", str(tmp_path / "r"), f"--top={k}"])
        out, err = capsys.readouterr()
        if k >= 1:
            assert code == 0 and len(out.splitlines()) == 3 + min(k, 5), (k, out, err)
        else:
            assert code == 2 and err.count("\n") == 1 and "--top must be a whole number at least 1" in err, (k, err)

    check()
