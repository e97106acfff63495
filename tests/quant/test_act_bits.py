"""Activation bits in the allocation: the value an activation bit gets, BOPs with per-layer
activation bits, `--act-bits 4,8` on allocate, bit files with a per-layer `act_bits` list that
quantize, QAT and ONNX export honour layer by layer, and the one-line errors for files that do
not fit."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import user_models
from evoproxy.allocation import act_bits_label, allocate, build_problem, load_bit_config
from evoproxy.cli import main
from evoproxy.model import layer_registry
from evoproxy.model.nets import ResNet20
from evoproxy.quant import (
    ActQuant,
    PtqEvaluator,
    QuantSettings,
    export_onnx,
    lsq_model,
    model_bops,
    qdq_model,
    quantize_model,
)

FAST = ["--batch-size", "8", "--hutchinson-samples", "4", "--power-iters", "3"]
MLP_LAYERS = layer_registry(user_models.mlp(), (12,))


def _act_hooks(qmodel, layers) -> dict[str, int]:
    """Bits of each calibrated activation quantizer of a fake-quantized model, by layer name."""
    modules = dict(qmodel.named_modules())
    out = {}
    for layer in layers:
        hooks = [h for h in modules[layer.name]._forward_pre_hooks.values() if isinstance(h, ActQuant)]
        if hooks:
            assert len(hooks) == 1 and not hooks[0].calibrating and hooks[0].lo is not None
            out[layer.name] = hooks[0].bits
    return out


def _recording_evaluators(monkeypatch) -> list[PtqEvaluator]:
    """The PtqEvaluators that measure anything from now on, to read what they `measured`."""
    evaluators, measure = [], PtqEvaluator.measure_many

    def recording(self, *args, **kwargs):
        if self not in evaluators:
            evaluators.append(self)
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(PtqEvaluator, "measure_many", recording)
    return evaluators


def test_an_activation_bit_is_worth_the_layers_marginal_value_of_a_weight_bit():
    rng = np.random.default_rng(0)
    s = rng.random(len(MLP_LAYERS))
    w_bits, a_bits = (4, 2, 3), (8, 4)  # the caller's order, not ascending
    problem = build_problem(MLP_LAYERS, s, 1.0, w_bits=w_bits, a_bits=a_bits, fixed={})
    for k, (w, a) in enumerate(problem.options):
        np.testing.assert_allclose(problem.value[:, k], (w + a) * s)  # eq. 3 on both operands
    table = rng.random((len(MLP_LAYERS), 3))  # values per weight choice, in the order of w_bits
    problem = build_problem(MLP_LAYERS, table, 1.0, w_bits=w_bits, a_bits=a_bits, fixed={})
    slope = (table[:, 0] - table[:, 1]) / (4 - 2)
    for k, (w, a) in enumerate(problem.options):
        np.testing.assert_allclose(problem.value[:, k], table[:, w_bits.index(w)] + slope * a)
    given = rng.random((len(MLP_LAYERS), 3, 2))  # (weight, activation) values: taken as they are
    problem = build_problem(MLP_LAYERS, given, 1.0, w_bits=w_bits, a_bits=a_bits, fixed={})
    for k, (w, a) in enumerate(problem.options):
        np.testing.assert_allclose(problem.value[:, k], given[:, w_bits.index(w), a_bits.index(a)])
    # One weight choice: sensitivities still give slope s_l, a table slope 0.
    one_w = build_problem(MLP_LAYERS, s, 1.0, w_bits=(4,), a_bits=(4, 8), fixed={})
    np.testing.assert_allclose(one_w.value, np.stack([8 * s, 12 * s], 1))
    one_w = build_problem(MLP_LAYERS, table[:, :1], 1.0, w_bits=(4,), a_bits=(4, 8), fixed={})
    np.testing.assert_allclose(one_w.value, np.repeat(table[:, :1], 2, 1))
    # One activation choice: values (and objectives) as before activation bits were chosen.
    one_a = build_problem(MLP_LAYERS, s, 1.0, w_bits=(2, 4), a_bits=(8,), fixed={0: 8})
    np.testing.assert_allclose(one_a.value, np.stack([2 * s[1:], 4 * s[1:]], 1))
    assert one_a.fixed_value == pytest.approx(8 * s[0])
    # A fixed layer's term follows the same rule.
    fixed = build_problem(MLP_LAYERS, s, 1.0, w_bits=(2, 4), a_bits=(4, 8), fixed={0: (8, 6)})
    assert fixed.fixed_value == pytest.approx((8 + 6) * s[0])


def test_under_a_bops_budget_the_solver_lowers_activation_bits_and_its_bops_are_the_cost_models():
    layers = layer_registry(ResNet20(), (1, 28, 28))
    s = np.random.default_rng(1).random(len(layers))
    free = range(1, len(layers) - 1)
    w2 = [8] + [2] * (len(layers) - 2) + [8]
    a8, a4 = [8] * len(layers), [8] + [4] * (len(layers) - 2) + [8]
    budget = (model_bops(layers, w2, a8) + model_bops(layers, w2, a4)) / 2  # below every layer at W2A8
    unconstrained = allocate(build_problem(layers, s, 1.0, w_bits=(2, 3, 4), a_bits=(4, 8)), "ilp")
    assert set(unconstrained.a_bits) == {8}  # activation bits have value: without a BOPs budget, the most
    result = allocate(build_problem(layers, s, 1.0, bops=budget, w_bits=(2, 3, 4), a_bits=(4, 8)), "ilp")
    assert result.optimal and result.bops <= budget
    assert {result.a_bits[i] for i in free} == {4, 8}
    assert (result.a_bits[0], result.a_bits[-1]) == (8, 8)
    assert result.bops == model_bops(layers, result.w_bits, result.a_bits)
    assert result.bops == sum(l.macs * w * a for l, w, a in zip(layers, result.w_bits, result.a_bits))


@pytest.mark.slow
def test_allocate_writes_per_layer_act_bits_that_quantize_fake_quantizes_layer_by_layer(
    trained_mlp, capsys, monkeypatch
):
    w2a8 = model_bops(MLP_LAYERS, [2, 2, 2], 8)
    budget_g = 0.75 * w2a8 / 1e9  # every layer at W2A8 is over it: some activations must go to 4 bits
    assert (
        main(
            [
                "allocate",
                *trained_mlp,
                *FAST,
                "--proxy",
                "fisher",
                "--size-mb",
                "1",
                "--bops-g",
                f"{budget_g:.9f}",
                "--act-bits",
                "4,8",
                "--fixed",
                "none",
                "--out",
                "a.json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "activation bits 4,8 per layer" in out and "A bits" in out and "activations A4–8" in out
    record = json.loads(Path("a.json").read_text())
    bits, act = record["bits"], record["act_bits"]
    assert isinstance(act, list) and set(act) == {4, 8}
    assert model_bops(MLP_LAYERS, bits, act) <= budget_g * 1e9 and record["bops"] == model_bops(MLP_LAYERS, bits, act)
    assert load_bit_config("a.json", [l.name for l in MLP_LAYERS]) == (bits, tuple(act))

    evaluators = _recording_evaluators(monkeypatch)
    assert main(["quantize", *trained_mlp, "--bits-file", "a.json"]) == 0
    out = capsys.readouterr().out
    assert "quantized, A4–8" in out
    assert f" {model_bops(MLP_LAYERS, bits, act) / 1e9:.4g} " in out  # the BOPs with the file's activation bits
    assert [set(e.measured) for e in evaluators] == [{(tuple(bits), tuple(act))}]
    # and a model quantized at those bits fake-quantizes each layer's input at its own bit-width
    model = user_models.fit(user_models.mlp(), *user_models.vectors())
    x = user_models.vectors(64, seed=1)[0]
    qmodel = quantize_model(model, MLP_LAYERS, bits, x, QuantSettings(tuple(act)))
    assert _act_hooks(qmodel, MLP_LAYERS) == {l.name: a for l, a in zip(MLP_LAYERS, act)}


def test_one_activation_choice_keeps_a_single_act_bits_and_the_row_label(trained_mlp, capsys):
    assert (
        main(
            [
                "allocate",
                *trained_mlp,
                *FAST,
                "--proxy",
                "fisher",
                "--size-mb",
                "1",
                "--act-bits",
                "4",
                "--out",
                "a.json",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "activations 4-bit" in out and "A bits" not in out
    record = json.loads(Path("a.json").read_text())
    assert record["act_bits"] == 4 and [r["a_bits"] for r in record["layers"]] == [4, 4, 4]  # fixed layers too
    assert main(["quantize", *trained_mlp, "--bits-file", "a.json"]) == 0
    assert "quantized, A4 " in capsys.readouterr().out


def test_pareto_measures_each_point_at_its_activation_bits(trained_mlp, capsys, monkeypatch):
    evaluators = _recording_evaluators(monkeypatch)
    assert (
        main(
            [
                "pareto",
                *trained_mlp,
                *FAST,
                "--proxies",
                "fisher",
                "--sizes",
                "0.001",
                "--act-bits",
                "4,8",
                "--evaluate",
                "ptq",
                "--eval-size",
                "48",
                "--json",
            ]
        )
        == 0
    )
    points = json.loads(capsys.readouterr().out)["points"]
    assert [p["proxy"] for p in points] == ["fisher", *(f"uniform W{w}A{a}" for w in (2, 3, 4) for a in (4, 8))]
    assert points[1]["a_bits"] == [8, 4, 8] and points[2]["a_bits"] == [8, 8, 8]  # fixed layers at the most
    assert {k for e in evaluators for k in e.measured} == {(tuple(p["w_bits"]), tuple(p["a_bits"])) for p in points}


def test_ptq_evaluator_measures_each_activation_configuration():
    model = user_models.fit(user_models.mlp(), *user_models.vectors())
    x, y = user_models.vectors(64, seed=1)
    evaluator = PtqEvaluator(model, MLP_LAYERS, x, x, y, QuantSettings(8, bn_recalibration=False))
    evaluator.measure([4, 4, 4])
    evaluator.measure([4, 4, 4], 8)  # the settings' activations: the same configuration
    evaluator.measure([4, 4, 4], [8, 2, 8])
    assert set(evaluator.measured) == {((4, 4, 4), (8, 8, 8)), ((4, 4, 4), (8, 2, 8))}


@pytest.mark.slow
def test_lsq_model_gets_per_layer_activation_levels_and_onnx_writes_per_layer_ranges(tmp_path):
    model, layers, train, evaluation = user_models.brightness_task()
    assert len(layers) == 2
    qmodel = lsq_model(model, layers, [4, 4], [3, 8], train[0])
    modules = dict(qmodel.named_modules())
    assert [modules[l.name].act_quantizer.qn + modules[l.name].act_quantizer.qp for l in layers] == [7, 255]
    floats = lsq_model(model, layers, [4, 4], [32, 4], train[0])
    assert not hasattr(dict(floats.named_modules())[layers[0].name], "act_quantizer")
    qdq = dict(qdq_model(qmodel, layers).named_modules())
    assert [qdq[l.name].act_quantizer.top for l in layers] == [7, 255]
    onnx = pytest.importorskip("onnx", reason="onnx is absent: pip install -e '.[onnx]'")
    export_onnx(qmodel, layers, (1, 8, 8), tmp_path / "m.onnx")
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    # Under 8 bits the input's range is a Clip before the uint8 QuantizeLinear: one Clip, for the 3-bit layer.
    assert [n.op_type for n in graph.node].count("Clip") == 1
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is absent: pip install -e '.[onnx]'")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = qmodel.eval()(evaluation[0]).numpy()
    np.testing.assert_allclose(session.run(None, {"input": evaluation[0].numpy()})[0], expected, atol=1e-4)


def test_export_reads_per_layer_act_bits_from_the_bits_file(trained_mlp, capsys):
    pytest.importorskip("onnxruntime", reason="onnxruntime is absent: pip install -e '.[onnx]'")
    Path("a.json").write_text(json.dumps({"bits": [8, 4, 8], "act_bits": [8, 4, 32]}))
    assert main(["export", *trained_mlp, "--bits-file", "a.json", "--onnx", "m.onnx", "--eval-size", "32"]) == 0
    assert "on the inputs of 2 (per tensor, uint8 holding 4/8-bit levels)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "act, needle",
    [
        ([8, 4], "has 2 activation bits ('act_bits') but the model has 3 quantizable layers"),
        ([8, 0, 8], "'act_bits' must be one whole bit-width from 1 to 32 for every layer, or a list"),
        ([8, 4.5, 8], "'act_bits' must be one whole bit-width"),
        ("8", "'act_bits' must be one whole bit-width"),
        (33, "'act_bits' must be one whole bit-width"),
    ],
)
def test_a_bits_file_whose_act_bits_do_not_fit_is_refused_in_one_line(trained_mlp, act, needle, one_line_error):
    Path("a.json").write_text(json.dumps({"bits": [8, 4, 8], "act_bits": act}))
    for command in (["quantize"], ["export", "--onnx", "m.onnx", "--eval-size", "0"]):
        assert main([*command, *trained_mlp, "--bits-file", "a.json"]) == 2
        one_line_error("a.json", needle)


def test_act_bit_choices_are_checked(trained_mlp, one_line_error):
    assert main(["allocate", *trained_mlp, "--proxy", "fisher", "--size-mb", "1", "--act-bits", "0,8"]) == 2
    one_line_error("--act-bits takes activation bit-widths from 1 to 32; got '0,8'")
    assert main(["allocate", *trained_mlp, "--proxy", "fisher", "--size-mb", "1", "--act-bits", "4,x"]) == 2
    one_line_error("--act-bits takes comma-separated bit-widths")
    assert not Path("alloc.json").exists()


def test_act_bits_label():
    assert act_bits_label([8, 8, 8]) == "A8" and act_bits_label((8, 4, 6)) == "A4–8"
