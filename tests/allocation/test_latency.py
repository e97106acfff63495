"""Latency budgets (HAWQ-V3): a measured table of a tiny model is well formed and reads back; the ILP
under a latency budget meets it, finds the best configuration that does, and never gets slower as
the budget tightens; a budget below the fastest configuration, a table of another model and the
solvers that take no latency budget are one-line errors."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from evoproxy.allocation import Allocation, LatencyTable, allocate, build_problem, load_latency_table
from evoproxy.errors import EvoproxyError
from evoproxy.model import LayerInfo, layer_registry
from evoproxy.quant import export_onnx, lsq_model
from evoproxy.quant.latency import A_OPTIONS, FORMAT, W_OPTIONS, LatencySettings, measure_latency


@pytest.mark.slow
def test_measuring_a_tiny_model_gives_a_table_that_reads_back(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is absent: pip install -e '.[onnx]'")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    layers = layer_registry(model, (1, 6, 6))
    settings = LatencySettings(repeats=3, warmup=1)
    images = torch.randn(8, 1, 6, 6)
    whole = tmp_path / "tiny.onnx"
    export_onnx(lsq_model(model, layers, [8, 8], 8, images, bn_recalibration=False).eval(), layers, (1, 6, 6), whole)
    table = measure_latency(model, layers, images, model_name="tiny", settings=settings, beside=[whole])

    assert table["format"] == FORMAT and table["settings"]["graph"] == "int8"
    assert {"platform", "processor", "cpu_count", "onnxruntime"} <= set(table["machine"])
    assert [r["name"] for r in table["layers"]] == ["0", "3"]
    assert table["layers"][0]["input_shape"] == [1, 1, 6, 6] and table["layers"][1]["input_shape"] == [1, 144]
    # The float model was timed among the layers; what its layers do not hold is the overhead.
    float_layers = sum(r["measured"]["W32A32"]["ms"] for r in table["layers"])
    assert table["overhead_ms"] == pytest.approx(max(table["float_model_ms"] - float_layers, 0.0))
    assert len(table["beside_ms"]) == 1 and table["beside_ms"][0] > 0  # the file timed among the layers
    for row in table["layers"]:
        assert math.isfinite(row["switch_ms"]) and row["switch_ms"] >= 0
        # The float graphs hold the ReLU that follows the convolution; the int8 one folds it away.
        assert "Relu" in row["measured"]["W8A32"]["ops"] or row["name"] == "3"
        options = {(o["w_bits"], o["a_bits"]): o for o in row["options"]}
        assert set(options) == set(itertools.product(W_OPTIONS, A_OPTIONS))
        assert all(math.isfinite(o["ms"]) and o["ms"] >= 0 for o in options.values())
        # Below 8 bits there is no faster kernel: the entry is the 8-bit graph's, and says so.
        for w, a in itertools.product(range(2, 8), A_OPTIONS):
            assert options[w, a]["measured_as"] == f"W8A{a}" and options[w, a]["ms"] == options[8, a]["ms"]
        assert options[32, 32]["kernel"] == "float" and options[32, 32]["measured_as"] == "W32A32"
        # onnxruntime fused the QDQ pairs of the fully quantized graph into an integer kernel.
        assert options[8, 8]["kernel"] == "int8", row["measured"]["W8A8"]["ops"]

    path = tmp_path / "lat.json"
    path.write_text(json.dumps(table))
    loaded = load_latency_table(path)
    assert loaded.layer_names == ("0", "3") and loaded.overhead_ms == table["overhead_ms"]
    assert loaded.switch_ms == tuple(r["switch_ms"] for r in table["layers"])
    assert loaded.layer_ms(1, 4, 8) == table["layers"][1]["options"][2 * 2]["ms"]  # (W4, A8): third weight choice
    loaded.check_layers(["0", "3"])
    with pytest.raises(EvoproxyError, match=r"measured on tiny \(2 layers, the model has 3\).*evoproxy latency"):
        loaded.check_layers(["0", "3", "5"])


def _layers(n):
    return [LayerInfo(i, f"l{i}", "conv", (8, 8, 3, 3), 576, 576 * (i + 1) * 10) for i in range(n)]


def _table(layers, seed=0, switch=0.0):
    """A latency table as a measurement could give it: float faster than 8 bits on some layers,
    slower on others; 2 to 7 bits cost what 8 bits cost; each int8/float switch costs `switch` ms."""
    rng = np.random.default_rng(seed)
    ms, kernel = {}, {}
    for layer in layers:
        int8, fp = rng.uniform(0.01, 0.1, 2)
        for w, a in itertools.product(W_OPTIONS, A_OPTIONS):
            quantized = w < 32 and a < 32
            ms[layer.index, w, a] = float(int8 if quantized else fp + 0.01 * (w < 32) + 0.005 * (a < 32))
            kernel[layer.index, w, a] = "int8" if quantized else "float"
    names = tuple(l.name for l in layers)
    return LatencyTable("lat.json", "synthetic", names, ms, kernel, 0.005, (switch,) * len(layers))


def _problem(layers, seed=0):
    values = np.random.default_rng(seed).random((len(layers), 3, 2))  # bits (2, 8, 32) × act (8, 32)
    values.sort(axis=1)  # more weight bits are worth more
    return build_problem(layers, values, 1.0, w_bits=(2, 8, 32), a_bits=(8, 32), fixed={0: 8})


def test_ilp_meets_each_latency_budget_optimally_and_tighter_budgets_are_never_slower():
    layers = _layers(5)
    table, problem = _table(layers), _problem(layers)
    free = allocate(problem.with_latency(table, None))
    fastest = problem.with_latency(table, 1.0).latency.min_ns / 1e6
    assert (
        free.latency_ms == pytest.approx(table.total_ms(free.w_bits, free.a_bits), abs=1e-5)
        and free.latency_budget_ms is None
    )
    assert fastest < free.latency_ms  # so that the budgets below bind
    last = math.inf
    for budget in np.linspace(free.latency_ms, fastest, 6):
        constrained = problem.with_latency(table, float(budget))
        result = allocate(constrained)
        assert result.latency_ms <= budget + 1e-9 and result.latency_budget_ms == budget
        assert result.latency_ms <= last + 1e-9
        last = result.latency_ms
        # Brute force over the 4 free layers' 6 options: no configuration within budget is worth more.
        best = max(
            problem.value[np.arange(4), c].sum()
            for c in map(np.array, itertools.product(range(6), repeat=4))
            if constrained.fits(c)
        )
        assert result.objective == pytest.approx(problem.fixed_value + best)
    # The tightest budget takes each free layer's fastest option.
    assert last == pytest.approx(fastest)


def test_with_switch_costs_the_ilp_stays_optimal_and_meets_each_budget():
    layers = _layers(5)
    table, problem = _table(layers, seed=1, switch=0.03), _problem(layers, seed=1)
    free = allocate(problem.with_latency(table, None))
    assert free.latency_ms == pytest.approx(table.total_ms(free.w_bits, free.a_bits), abs=1e-5)
    for budget in np.linspace(free.latency_ms, problem.with_latency(table, 1.0).latency.min_ns / 1e6, 6)[:-1]:
        constrained = problem.with_latency(table, float(budget))
        feasible = [c for c in map(np.array, itertools.product(range(6), repeat=4)) if constrained.fits(c)]
        if not feasible:
            continue
        result = allocate(constrained)
        assert result.latency_ms == pytest.approx(table.total_ms(result.w_bits, result.a_bits), abs=1e-5)
        assert result.latency_ms <= budget + 1e-9
        assert result.objective == pytest.approx(
            problem.fixed_value + max(problem.value[np.arange(4), c].sum() for c in feasible)
        )


def test_sampling_counts_the_switch_costs_and_meets_each_budget():
    layers = _layers(5)
    table, problem = _table(layers, seed=1, switch=0.03), _problem(layers, seed=1)
    free = allocate(problem.with_latency(table, None))
    for budget in np.linspace(free.latency_ms, problem.with_latency(table, 1.0).latency.min_ns / 1e6, 6)[:-1]:
        constrained = problem.with_latency(table, float(budget))
        if not any(constrained.fits(np.array(c)) for c in itertools.product(range(6), repeat=4)):
            continue
        result = allocate(constrained, "sample", n_samples=5000, seed=0)
        assert result.latency_ms == pytest.approx(table.total_ms(result.w_bits, result.a_bits), abs=1e-5)
        assert result.latency_ms <= budget + 1e-9


def test_switch_costs_make_the_ilp_pick_the_contiguous_int8_run():
    """Four equal layers, int8 worth more and slower than float; the budget 0.65 ms allows two int8
    layers (0.6 ms) and one switch (0.03 ms). The values prefer layers 0 and 2, three switches
    apart: without switch costs the ILP takes them, with them a contiguous pair at an end."""
    layers = _layers(4)
    ms, kernel = {}, {}
    for i, w, a in itertools.product(range(4), W_OPTIONS, A_OPTIONS):
        quantized = w < 32 and a < 32
        ms[i, w, a], kernel[i, w, a] = (0.2 if quantized else 0.1), ("int8" if quantized else "float")
    values = np.zeros((4, 2, 2))
    values[:, 0, 0] = [1.5, 0.5, 1.5, 0.5]  # (W8, A8) on each layer
    problem = build_problem(layers, values, 1.0, w_bits=(8, 32), a_bits=(8, 32), fixed={})
    picked = {}
    for switch in (0.0, 0.03):
        table = LatencyTable("lat.json", "synthetic", tuple(l.name for l in layers), ms, kernel, 0.0, (switch,) * 4)
        result = allocate(problem.with_latency(table, 0.65))
        picked[switch] = [w < 32 and a < 32 for w, a in zip(result.w_bits, result.a_bits)]
        assert result.latency_ms == pytest.approx(table.total_ms(result.w_bits, result.a_bits))
        assert result.latency_ms <= 0.65
    assert picked[0.0] == [True, False, True, False]
    assert picked[0.03] in ([True, True, False, False], [False, False, True, True])


def test_the_bits_file_record_keeps_the_budget_and_the_predicted_latency():
    layers = _layers(3)
    result = allocate(_problem(layers).with_latency(_table(layers), 1.0))
    record = result.to_dict()
    assert record["latency_budget_ms"] == 1.0 and record["latency_ms"] == result.latency_ms
    assert Allocation.from_dict(json.loads(json.dumps(record))) == result
    assert "ms predicted latency" in str(result)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "does not exist: measure one with `evoproxy latency`"),
        ("{", "is not a JSON file"),
        ('{"format": "evoproxy-allocation/1", "layers": []}', "is not a latency table of format"),
        (json.dumps({"format": FORMAT, "layers": [{"name": "a"}], "overhead_ms": 0}), "is not a latency table"),
        (json.dumps({"format": "evoproxy-latency/1", "layers": [], "overhead_ms": 0}), "of format evoproxy-latency/2"),
    ],
)
def test_unreadable_tables_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "lat.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(EvoproxyError, match=message):
        load_latency_table(path)
