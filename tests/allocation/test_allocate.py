import itertools
import json
import math

import numpy as np
import pytest
from scipy.optimize import LinearConstraint

from evoproxy.allocation import Allocation, allocate, build_problem
from evoproxy.allocation import ilp as ilp_module
from evoproxy.errors import EvoproxyError, ParameterError
from evoproxy.model import LayerInfo, ResNet20, layer_registry
from evoproxy.quant import model_bops, model_size_mb


@pytest.fixture(scope="module")
def resnet_layers():
    return layer_registry(ResNet20(), (1, 28, 28))


def _random_layers(rng, n):
    layers = []
    for i in range(n):
        shape = (int(rng.choice([2, 4, 8])), int(rng.choice([1, 2, 4])), *[int(rng.choice([1, 3]))] * 2)
        weights = math.prod(shape)
        bias = shape[0] if rng.random() < 0.5 else 0
        layers.append(LayerInfo(i, f"l{i}", "conv", shape, weights + bias, weights * int(rng.choice([1, 4, 16]))))
    return layers


def _random_instance(seed, act_choices=False):
    """Layers, scores (integer-valued half the time, so that ties occur), choices and fixed layers."""
    rng = np.random.default_rng(seed)
    w_bits, a_bits = (2, 3, 4), ((4, 8) if act_choices else (8,))
    n = int(rng.integers(3, 6 if act_choices else 9))
    layers = _random_layers(rng, n)
    kind = rng.integers(3) if not act_choices else 2
    if kind == 0:
        scores = rng.integers(0, 3, n).astype(float)
    elif kind == 1:
        scores = rng.random((n, len(w_bits)))
    else:
        scores = rng.integers(0, 4, (n, len(w_bits), len(a_bits))).astype(float)
    fixed = [None, {}, {int(rng.integers(n)): int(rng.choice([3, 8]))}][rng.integers(3)]
    return layers, scores, w_bits, a_bits, fixed, rng


def _brute_force(layers, scores, w_bits, a_bits, fixed, size_budget_bits, bops_budget):
    """Every configuration, costed independently of the package. Returns (w, a) bit tuples of the
    best configuration (the first in lexicographic order among exact ties), its objective, the
    objectives of all feasible ones and the smallest size in bits; best is None if none fits."""
    n = len(layers)
    fixed = {0: 8, n - 1: 8} if fixed is None else fixed
    per_layer = []
    for l in layers:
        weights = math.prod(l.weight_shape)
        opts = [(fixed[l.index], fixed[l.index])] if l.index in fixed else [(w, a) for w in w_bits for a in a_bits]
        per_layer.append([(w, a, weights * w + (l.params - weights) * 32, l.macs * w * a) for w, a in opts])

    def value(i, w, a):
        if scores.ndim == 1:
            return w * scores[i]
        if w not in w_bits or a not in a_bits:
            return 0.0
        entry = scores[i, w_bits.index(w)]
        return entry if scores.ndim == 2 else entry[a_bits.index(a)]

    configs = list(itertools.product(*per_layer))
    size = np.array([sum(o[2] for o in c) for c in configs])
    bops = np.array([sum(o[3] for o in c) for c in configs])
    obj = np.array([sum(value(i, o[0], o[1]) for i, o in enumerate(c)) for c in configs])
    ok = size <= size_budget_bits
    if bops_budget is not None:
        ok &= bops <= bops_budget
    if not ok.any():
        return None, None, None, int(size.min())
    best = int(np.flatnonzero(ok)[np.argmax(obj[ok])])
    return tuple((o[0], o[1]) for o in configs[best]), obj[best], obj[ok], int(size.min())


def _check_against_brute_force(result, brute, layers, size_mb, bops_budget, exact_ties):
    best_bits, best_obj, feasible_obj, _ = brute
    assert result.objective == pytest.approx(best_obj, abs=1e-6 * max(1.0, np.abs(feasible_obj).max()))
    unique = np.sum(feasible_obj >= best_obj - 1e-6) == 1
    if exact_ties or unique:
        assert tuple(zip(result.w_bits, result.a_bits)) == best_bits
    assert model_size_mb(layers, result.w_bits) <= size_mb * (1 + 1e-12)
    if bops_budget is not None:
        assert model_bops(layers, result.w_bits, result.a_bits) <= bops_budget


@pytest.mark.parametrize("seed", range(120))
def test_dp_and_ilp_match_brute_force_under_a_size_budget(seed):
    layers, scores, w_bits, a_bits, fixed, rng = _random_instance(seed)
    lo = _brute_force(layers, scores, w_bits, a_bits, fixed, 0, None)[3]
    hi = sum(math.prod(l.weight_shape) * 8 + (l.params - math.prod(l.weight_shape)) * 32 for l in layers)
    budget_bits = int(lo + rng.uniform(-0.1, 1.1) * (hi - lo))
    brute = _brute_force(layers, scores, w_bits, a_bits, fixed, budget_bits, None)
    problem = build_problem(layers, scores, budget_bits / 8e6, w_bits=w_bits, a_bits=a_bits, fixed=fixed)
    for method in ("dp", "ilp"):
        if brute[0] is None:
            with pytest.raises(EvoproxyError, match=f"smallest feasible size {math.ceil(lo / 8) / 1e6:.6f} MB"):
                allocate(problem, method)
            continue
        result = allocate(problem, method)
        assert result.optimal and result.method == method
        # dp breaks exact ties lexicographically; ilp only promises an optimum.
        _check_against_brute_force(
            result,
            brute,
            layers,
            budget_bits / 8e6,
            None,
            exact_ties=method == "dp" and scores.dtype == float and np.array_equal(scores, np.round(scores)),
        )


@pytest.mark.parametrize("seed", range(60))
def test_ilp_matches_brute_force_with_size_bops_and_activation_choices(seed):
    layers, scores, w_bits, a_bits, fixed, rng = _random_instance(1000 + seed, act_choices=True)
    lo = _brute_force(layers, scores, w_bits, a_bits, fixed, 0, None)[3]
    hi = sum(math.prod(l.weight_shape) * 4 + (l.params - math.prod(l.weight_shape)) * 32 for l in layers)
    budget_bits = int(lo + rng.uniform(0.0, 1.0) * (hi - lo))
    all_bops = [sum(l.macs * w * a for l in layers) for w, a in ((2, 4), (8, 8))]
    bops_budget = int(all_bops[0] + rng.uniform(-0.05, 0.5) * (all_bops[1] - all_bops[0]))
    brute = _brute_force(layers, scores, w_bits, a_bits, fixed, budget_bits, bops_budget)
    problem = build_problem(
        layers, scores, budget_bits / 8e6, bops=bops_budget, w_bits=w_bits, a_bits=a_bits, fixed=fixed
    )
    if brute[0] is None:
        with pytest.raises(EvoproxyError, match=f"smallest feasible {problem.min_bops} BOPs"):
            allocate(problem, "ilp")
        return
    result = allocate(problem, "ilp")
    assert result.optimal
    _check_against_brute_force(result, brute, layers, budget_bits / 8e6, bops_budget, exact_ties=False)


def test_smallest_feasible_size_from_the_message_is_itself_feasible(resnet_layers):
    s = np.random.default_rng(0).random(len(resnet_layers))
    problem = build_problem(resnet_layers, s, 0.01)
    with pytest.raises(EvoproxyError, match=f"smallest feasible size {problem.min_size_mb:.6f} MB"):
        allocate(problem, "dp")
    result = allocate(problem.with_budget(problem.min_size_mb), "dp")
    assert result.w_bits[1:-1] == (2,) * (len(resnet_layers) - 2)
    assert result.size_mb == pytest.approx(problem.min_size_bits / 8e6)


@pytest.mark.parametrize("method", ["dp", "ilp", "sample"])
def test_resnet20_allocation_is_within_budget_and_fixes_first_and_last_layer(resnet_layers, method):
    s = np.random.default_rng(1).random(len(resnet_layers))
    for size_mb in (0.075, 0.09, 0.11):
        problem = build_problem(resnet_layers, s, size_mb, bops=None if method == "dp" else 1.1e9)
        result = allocate(problem, method)
        assert result.size_mb <= size_mb
        # cost.py sums per-layer MB in floats, so it may read 1 ulp above an exactly met budget.
        assert model_size_mb(resnet_layers, result.w_bits) <= size_mb * (1 + 1e-12)
        assert result.size_mb == pytest.approx(model_size_mb(resnet_layers, result.w_bits), rel=1e-12)
        assert result.bops == model_bops(resnet_layers, result.w_bits, result.a_bits)
        if method != "dp":
            assert model_bops(resnet_layers, result.w_bits, result.a_bits) <= 1.1e9
        assert (result.w_bits[0], result.a_bits[0], result.w_bits[-1], result.a_bits[-1]) == (8, 8, 8, 8)
        assert set(result.w_bits[1:-1]) <= {2, 3, 4} and set(result.a_bits) == {8}


def test_dp_ilp_and_sample_agree_on_resnet20_and_sample_is_no_better(resnet_layers):
    s = np.random.default_rng(2).random(len(resnet_layers))
    problem = build_problem(resnet_layers, s, 0.09)
    dp, ilp, sample = (allocate(problem, m) for m in ("dp", "ilp", "sample"))
    assert ilp.objective == pytest.approx(dp.objective, rel=1e-9)
    assert sample.objective <= dp.objective and not sample.optimal


def test_custom_and_empty_fixed_layers(resnet_layers):
    n = len(resnet_layers)
    s = np.random.default_rng(3).random(n)
    result = allocate(build_problem(resnet_layers, s, 0.2, fixed={1: (6, 4), -2: 5}, a_bits=(8,)), "ilp")
    assert (result.w_bits[1], result.a_bits[1]) == (6, 4)
    assert (result.w_bits[n - 2], result.a_bits[n - 2]) == (5, 5)
    assert result.w_bits[0] == 4 and result.w_bits[-1] == 4  # free now; a large budget gives the most bits
    free = build_problem(resnet_layers, s, 0.2, fixed={})
    assert free.free == tuple(range(n)) and allocate(free, "dp").w_bits == (4,) * n


def test_sample_never_exceeds_the_budget_and_is_reproducible(resnet_layers):
    s = np.random.default_rng(4).random(len(resnet_layers))
    problem = build_problem(resnet_layers, s, 0.15, bops=1e9, w_bits=(2, 3, 4, 8), a_bits=(4, 8))
    for seed in range(10):
        result = allocate(problem, "sample", n_samples=3000, seed=seed)
        assert result.size_mb <= 0.15 and model_size_mb(resnet_layers, result.w_bits) <= 0.15 * (1 + 1e-12)
        assert model_bops(resnet_layers, result.w_bits, result.a_bits) <= 1e9
        assert not result.optimal
    again = allocate(problem, "sample", n_samples=3000, seed=9)
    assert (again.w_bits, again.a_bits) == (result.w_bits, result.a_bits)


def test_sample_without_a_configuration_in_budget_says_so(resnet_layers):
    problem = build_problem(resnet_layers, np.ones(len(resnet_layers)), 0.07)
    with pytest.raises(EvoproxyError, match="none of 100 random configurations met the budget"):
        allocate(problem, "sample", n_samples=100)


def test_sample_needs_a_draw(resnet_layers):
    problem = build_problem(resnet_layers, np.ones(len(resnet_layers)), 0.1)
    with pytest.raises(ParameterError, match=r"^solve_sample\.n_samples must be a whole number at least 1, got 0$"):
        allocate(problem, "sample", n_samples=0)


def test_unsorted_choices_read_the_table_in_the_given_order(resnet_layers):
    table = np.random.default_rng(5).random((len(resnet_layers), 3))
    a = allocate(build_problem(resnet_layers, table, 0.09, w_bits=(4, 2, 3)), "dp")
    b = allocate(build_problem(resnet_layers, table[:, [1, 2, 0]], 0.09, w_bits=(2, 3, 4)), "dp")
    assert a.w_bits == b.w_bits and a.objective == b.objective


def test_to_dict_is_json_in_registry_order_and_round_trips(resnet_layers):
    s = np.random.default_rng(6).random(len(resnet_layers))
    result = allocate(build_problem(resnet_layers, s, 0.09, bops=1e9), "ilp")
    d = json.loads(json.dumps(result.to_dict()))
    assert [l["name"] for l in d["layers"]] == [l.name for l in resnet_layers]
    assert [l["w_bits"] for l in d["layers"]] == list(result.w_bits)
    assert d["method"] == "ilp" and d["bops_budget"] == 1e9
    assert Allocation.from_dict(d) == result


def test_dp_grid_too_large_falls_back_to_ilp_with_a_message(resnet_layers):
    problem = build_problem(resnet_layers, np.random.default_rng(7).random(len(resnet_layers)), 0.09)
    with pytest.warns(RuntimeWarning, match="exceeds max_cells=10; solved with ilp instead"):
        result = allocate(problem, "dp", max_cells=10)
    assert result.method == "ilp" and "dp grid" in result.note
    assert result.objective == pytest.approx(allocate(problem, "dp").objective, rel=1e-9)


def test_ilp_resolves_when_the_solver_returns_a_configuration_over_budget(resnet_layers, monkeypatch):
    real_milp, calls = ilp_module.milp, []

    def sloppy_milp(c, *, constraints, **kwargs):
        # First solve: let the size row slip by 1 %, as a solver tolerance could on large layers.
        if not calls:
            one_hot, size = constraints
            constraints = [one_hot, LinearConstraint(size.A, size.lb, size.ub * 1.05)]
        calls.append(1)
        return real_milp(c, constraints=constraints, **kwargs)

    monkeypatch.setattr(ilp_module, "milp", sloppy_milp)
    problem = build_problem(resnet_layers, np.random.default_rng(8).random(len(resnet_layers)), 0.09)
    result = allocate(problem, "ilp")
    assert len(calls) >= 2 and "re-solved" in result.note and not result.optimal
    assert result.size_mb <= 0.09 and model_size_mb(resnet_layers, result.w_bits) <= 0.09 * (1 + 1e-12)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(scores=np.ones(21)), r"scores have shape \(21,\); expected \(22,\)"),
        (dict(scores=np.ones((22, 2))), r"scores have shape \(22, 2\)"),
        (dict(scores=[1.0] * 21 + [float("nan")]), "scores must be finite; layer fc"),
        (dict(scores=["a"] * 22), "scores must be an array of numbers"),
        (dict(w_bits=(2, 3, 33)), "weight bit choices must be distinct whole numbers from 2 to 32"),
        (dict(w_bits=(1, 2)), "weight bit choices must be distinct whole numbers from 2 to 32, got \\[1, 2\\]"),
        (dict(w_bits=(2, 2, 4)), "weight bit choices must be distinct"),
        (dict(w_bits=(2.5, 4)), "weight bit choices must be"),
        (dict(a_bits=(0,)), "activation bit choices must be"),
        (dict(size_mb=-1.0), "size budget must be a number of megabytes above 0 and at most 1e\\+12, got -1.0"),
        (dict(size_mb=float("nan")), "size budget must be a number of megabytes above 0"),
        (dict(size_mb=1e308), "size budget .* at most 1e\\+12, got 1e\\+308"),  # in bits it would overflow
        (dict(bops=-5), "BOPs budget must be a number of bit operations above 0 and at most 1e\\+30"),
        (dict(bops=float("inf")), "BOPs budget must be a number"),
        (dict(fixed={99: 8}), "fixed layer index 99 is out of range for a model of 22 layers"),
        (dict(fixed={0: 40}), "fixed bits of layer 0 must be whole numbers from 2 to 32 \\(weights\\)"),
        (dict(fixed={0: (1, 8)}), "fixed bits of layer 0 must be whole numbers from 2 to 32 \\(weights\\)"),
        (dict(fixed={i: 8 for i in range(22)}), "all 22 layers are fixed: nothing to allocate"),
    ],
)
def test_bad_input_is_a_one_line_error(resnet_layers, change, message):
    args = dict(scores=np.ones(22), size_mb=0.1, w_bits=(2, 3, 4), a_bits=(8,), fixed=None, bops=None) | change
    with pytest.raises(EvoproxyError, match=message) as info:
        build_problem(resnet_layers, args.pop("scores"), args.pop("size_mb"), **args)
    assert "\n" not in str(info.value)


def test_bad_method_and_registry_order_are_one_line_errors(resnet_layers):
    problem = build_problem(resnet_layers, np.ones(22), 0.1, bops=1e9)
    with pytest.raises(EvoproxyError, match="unknown allocation method 'greedy': use one of ilp, dp, sample"):
        allocate(problem, "greedy")
    with pytest.raises(EvoproxyError, match="method dp handles the size budget only"):
        allocate(problem, "dp")
    with pytest.raises(EvoproxyError, match="layers must be the layer registry in order"):
        build_problem(resnet_layers[1:], np.ones(21), 0.1)
