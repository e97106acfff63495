"""`evoproxy export --kernels int8`: BatchNorm folded into the layer without moving a weight level,
the graph that onnxruntime optimizes runs every layer with 2-8-bit weights and inputs as an int8
kernel while float layers stay float, its top-1 agrees with the fake-quantized PyTorch model, and
its one-line errors."""

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import user_models
from evoproxy.cli import main
from evoproxy.model import layer_registry, load_model, open_data
from evoproxy.quant import export_int8_onnx, lsq_model
from evoproxy.quant.onnx_int8 import INT8_OPS, _fold_bn, int8_model


@pytest.fixture(autouse=True)
def onnxruntime():
    pytest.importorskip("onnx", reason="onnx is absent: pip install -e '.[onnx]'")
    return pytest.importorskip("onnxruntime", reason="onnxruntime is absent: pip install -e '.[onnx]'")


def _brightness(bits):
    model, layers, train, evaluation = user_models.brightness_task()
    return model, layers, lsq_model(model, layers, bits, 8, train[0]).eval(), train, evaluation


def test_folding_batchnorm_keeps_the_weight_levels_and_the_layers_outputs():
    model, layers, qmodel, train, _ = _brightness([4, 8])
    conv, bn = qmodel[0], qmodel[1]
    bn.running_mean.uniform_(-1, 1)  # statistics far from the identity, one scale negative
    bn.weight.data[0] = -bn.weight.data[0]
    with torch.no_grad():
        want = bn(conv(train[0]))
        _fold_bn(conv, bn)
        got = conv(train[0])
        levels = conv.weight / conv.parametrizations.weight[0].step
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() == 7  # 4-bit levels, kept


def test_the_int8_model_has_no_batchnorm_and_an_output_pair_after_the_relu_and_the_linear():
    _, layers, qmodel, train, evaluation = _brightness([4, 8])
    gm = int8_model(qmodel, layers, train[0])
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gm.modules())
    assert [n.target for n in gm.graph.nodes if n.op == "call_module" and "output_qdq" in n.target] == [
        "_2_output_qdq",  # the ReLU (module 2) after the conv and its folded BatchNorm
        "_4_output_qdq",
    ]
    with torch.no_grad():
        got, want = gm(evaluation[0]), qmodel(evaluation[0])
    assert (got - want).abs().max() <= 0.05 * want.abs().max()  # 8-bit output ranges: a few levels


def _optimized_ops(tmp_path, path):
    import onnx

    from evoproxy.quant.onnx_runtime import ort_session

    ort_session(path, threads=1, optimized=tmp_path / "optimized.onnx")
    return [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]


def test_onnxruntime_runs_each_int8_layer_as_an_int8_kernel_and_float_layers_as_float(tmp_path):
    model, layers, qmodel, train, evaluation = _brightness([4, 8])
    check, ops = export_int8_onnx(qmodel, layers, (1, 8, 8), tmp_path / "m.onnx", train[0], evaluation[0])
    assert ops == _optimized_ops(tmp_path, tmp_path / "m.onnx")
    assert ops.count("QLinearConv") == 1 and ops.count("QGemm") == 1 and "BatchNormalization" not in ops
    onnx, ours = check.accuracies(evaluation[1])
    assert check.diff <= check.tolerance and abs(onnx - ours) <= 100 * check.diff
    # The Linear at 32-bit weights stays a float Gemm, the conv still an int8 kernel.
    qmodel = lsq_model(model, layers, [4, 32], 8, train[0]).eval()
    _, ops = export_int8_onnx(qmodel, layers, (1, 8, 8), tmp_path / "f.onnx", train[0])
    assert ops.count("QLinearConv") == 1 and "Gemm" in ops and not set(ops) & {"QGemm", "QLinearMatMul"}


def test_the_check_refuses_a_file_whose_classes_differ(tmp_path, monkeypatch):
    import evoproxy.quant.onnx_int8 as onnx_int8
    import evoproxy.quant.onnx_runtime as onnx_runtime

    _, layers, qmodel, train, evaluation = _brightness([4, 8])
    real = onnx_runtime.run_session

    def negated(session, images):
        return {k: -v for k, v in real(session, images).items()}

    monkeypatch.setattr(onnx_runtime, "run_session", negated)
    with pytest.raises(onnx_int8.EvoproxyError, match=r"top-1 class differs .*m\.onnx not written"):
        export_int8_onnx(qmodel, layers, (1, 8, 8), tmp_path / "m.onnx", train[0], evaluation[0])
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.filterwarnings("ignore:user_models.branchy runs with the weights")
def test_export_kernels_int8_on_an_mlp_and_its_one_line_errors(trained_mlp, capsys, one_line_error):
    Path("bits.json").write_text(json.dumps({"bits": [8, 4, 32]}))
    assert main(["export", *trained_mlp, "--bits-file", "bits.json", "--onnx", "m.onnx", "--kernels", "int8"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime runs 2 of the 2 layers with 2-8-bit weights and inputs as int8 kernels (2 QGemm)" in out
    found = re.search(r"onnxruntime ([\d.]+) %, PyTorch fake-quantized ([\d.]+) %", out)
    assert abs(float(found[1]) - float(found[2])) <= 2.0, out
    untraceable = ["--model", "user_models:branchy", "--data", "user_models:vectors"]
    assert main(["export", *untraceable, "--bits-file", "bits.json", "--onnx", "b.onnx", "--kernels", "int8"]) == 2
    one_line_error("--kernels int8 rewrites the model's torch.fx graph, which torch.fx cannot trace")
    assert not Path("b.onnx").exists()


@pytest.mark.slow  # the default ResNet-20 exported and checked on 500 images: about 40 s on 2 cores
def test_the_default_resnet_at_w8a8_runs_every_layer_as_an_int8_kernel(tmp_path):
    source = open_data()
    model, _ = load_model("default")
    layers = layer_registry(model, source.input_shape)
    calib = source.calibration()[0]
    images, labels = source.evaluation(500)
    bits = [8, *[4, 8] * ((len(layers) - 2) // 2), 8]
    qmodel = lsq_model(model, layers, bits, 8, calib).eval()
    check, ops = export_int8_onnx(qmodel, layers, source.input_shape, tmp_path / "m.onnx", calib, images)
    kernels = [op for op in ops if op in INT8_OPS]
    assert kernels.count("QLinearConv") == len(layers) - 1 and kernels.count("QGemm") == 1
    assert "Conv" not in ops and "BatchNormalization" not in ops
    assert ops.count("QLinearAdd") == 8  # every residual addition but the last, which feeds the pooling
    onnx, ours = check.accuracies(labels)
    assert abs(onnx - ours) <= 0.5 and check.diff <= 0.01
