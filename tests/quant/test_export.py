"""ONNX export with QuantizeLinear/DequantizeLinear pairs: the file, run in onnxruntime, scores what
the fake-quantized PyTorch model scores (round-to-nearest PTQ on the default model, QAT on a tiny
one); every quantized layer's weight and input pass through a QDQ pair whose integers hold the
configuration's bits; `evoproxy export` and its one-line errors."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import user_models
from evoproxy.cli import main
from evoproxy.model import accuracy, layer_registry, load_model, open_data, quantizable_modules
from evoproxy.quant import (
    QatSettings,
    QuantSettings,
    export_onnx,
    lsq_model,
    onnxruntime_accuracy,
    quantize_model,
    train_qat,
)


@pytest.fixture
def onnx():
    """The onnx module, with onnxruntime beside it (the `onnx` extra), or the test is skipped."""
    pytest.importorskip("onnxruntime", reason="onnxruntime is absent: pip install -e '.[onnx]'")
    return pytest.importorskip("onnx", reason="onnx is absent: pip install -e '.[onnx]'")


def _qdq_layers(onnx, path) -> dict[str, dict]:
    """Per quantized weight of the ONNX file `path` (by its initializer's name): the integer levels
    its QuantizeLinear gives, and the integer types of its own and of its layer's input QDQ pair."""
    from onnx import numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    initializer = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.output]}

    def qdq(tensor):
        """The QuantizeLinear node of the QDQ pair that gives `tensor`, or None."""
        dq = producer.get(tensor)
        if dq is None or dq.op_type != "DequantizeLinear":
            return None
        q = producer.get(dq.input[0])
        return q if q is not None and q.op_type == "QuantizeLinear" and q.input[1] == dq.input[1] else None

    def weight(node):
        """The tensor of the layer's weight: a MatMul's (a Linear on more than 2 dimensions) is transposed."""
        t = producer.get(node.input[1])
        return t.input[0] if t is not None and t.op_type == "Transpose" else node.input[1]

    found = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm", "MatMul") and (wq := qdq(weight(node))) is not None:
            w, scale = initializer[wq.input[0]], initializer[wq.input[1]]
            axis = next(a.i for a in wq.attribute if a.name == "axis")
            xq = qdq(node.input[0])
            found[wq.input[0]] = {
                "levels": w / scale.reshape(-1, *[1] * (w.ndim - 1)),
                "axis": axis,
                "weight_type": types[wq.output[0]],
                "input_type": types[xq.output[0]] if xq is not None else None,
            }
    return found


def _check_qdq(onnx, path, layers, bits) -> None:
    """Every layer's weight is per-channel int8 with levels within its bits, and its input uint8."""
    found = _qdq_layers(onnx, path)
    assert set(found) == {f"{l.name}.parametrizations.weight.original" for l in layers}
    for layer, b in zip(layers, bits):
        pair = found[f"{layer.name}.parametrizations.weight.original"]
        levels, q = pair["levels"], 2 ** (b - 1) - 1
        assert np.allclose(levels, np.round(levels), atol=1e-3)  # the initializer holds the quantized weight
        assert np.abs(np.round(levels)).max() == q  # every level within b bits, the peak on ±q
        assert pair["axis"] == 0 and pair["weight_type"] == onnx.TensorProto.INT8
        assert pair["input_type"] == onnx.TensorProto.UINT8


@pytest.mark.slow
def test_the_ptq_model_in_onnxruntime_scores_what_the_fake_quantized_model_scores(onnx, tmp_path):
    source = open_data()
    model, _ = load_model("default")
    layers = layer_registry(model, source.input_shape)
    bits = [8, *([2, 3, 4] * len(layers))[: len(layers) - 2], 8]
    calib = source.calibration()[0]
    images, labels = source.evaluation(500)
    export_onnx(lsq_model(model, layers, bits, 8, calib), layers, source.input_shape, tmp_path / "ptq.onnx")
    reference = accuracy(quantize_model(model, layers, bits, calib, QuantSettings(8)), images, labels)
    assert abs(onnxruntime_accuracy(tmp_path / "ptq.onnx", images, labels) - reference) <= 0.2
    assert reference < accuracy(model, images, labels) - 0.5  # 2-bit layers: quantization shows
    _check_qdq(onnx, tmp_path / "ptq.onnx", layers, bits)


def test_the_qat_model_in_onnxruntime_gives_the_qat_models_outputs_at_4_bit_activations(onnx, tmp_path):
    import onnxruntime

    model, layers, train, evaluation = user_models.brightness_task()
    w_bits, a_bits = [3, 2], 4
    qmodel = lsq_model(model, layers, w_bits, a_bits, train[0])
    train_qat(qmodel, model, train, evaluation, QatSettings(epochs=2, batch_size=16), log=lambda m: None)
    qmodel.eval()
    x = torch.cat([evaluation[0], 4 * evaluation[0]])  # and inputs beyond the calibrated ranges, which clip
    with torch.no_grad():
        before = qmodel(x)
    export_onnx(qmodel, layers, (1, 8, 8), tmp_path / "qat.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "qat.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert torch.equal(qmodel(x), before)  # the export left the QAT model as it was
    np.testing.assert_allclose(got, before.numpy(), atol=1e-4)
    assert onnxruntime_accuracy(tmp_path / "qat.onnx", *evaluation) == accuracy(qmodel, *evaluation)
    _check_qdq(onnx, tmp_path / "qat.onnx", layers, w_bits)
    # 4-bit activations: a Clip to the 16 levels before each uint8 QuantizeLinear.
    nodes = onnx.load(str(tmp_path / "qat.onnx")).graph.node
    producer = {out: node for node in nodes for out in node.output}
    inputs = [producer[n.input[0]] for n in nodes if n.op_type == "QuantizeLinear" and n.input[0] in producer]
    assert len(inputs) == len(layers) and all(n.op_type == "Clip" for n in inputs)


@pytest.fixture
def mlp_files(trained_mlp):
    """The trained MLP's flags, with bits.json for it in the cwd."""
    Path("bits.json").write_text(json.dumps({"bits": [3, 2, 3]}))
    return trained_mlp


def _qat_checkpoint(bits: list[int], path: str) -> None:
    """QAT of the trained MLP (in the cwd) for 2 epochs, its checkpoint written to `path` as
    `evoproxy quantize --method qat --checkpoint` writes it."""
    model, _ = load_model("user_models:mlp", "mlp.pt")
    images, labels = user_models.vectors()
    qmodel = lsq_model(model, layer_registry(model, (12,)), bits, 8, images[:64])
    train_qat(
        qmodel,
        model,
        (images, labels),
        (images, labels),
        QatSettings(epochs=2, batch_size=32),
        path,
        log=lambda m: None,
    )


def _accuracies(out: str) -> tuple[float, float]:
    found = re.search(r"onnxruntime ([\d.]+) %, PyTorch fake-quantized ([\d.]+) %", out)
    assert found, out
    return float(found[1]), float(found[2])


def test_export_writes_the_ptq_and_the_qat_model_and_checks_them(onnx, mlp_files, capsys):
    _qat_checkpoint([3, 2, 3], "qat.pt")
    assert main(["export", *mlp_files, "--bits-file", "bits.json", "--onnx", "ptq.onnx"]) == 0
    ptq_out = capsys.readouterr().out
    assert "round-to-nearest PTQ model" in ptq_out and "int8 holding 2/3-bit levels" in ptq_out
    assert main(["export", *mlp_files, "--bits-file", "bits.json", "--checkpoint", "qat.pt", "--onnx", "qat.onnx"]) == 0
    qat_out = capsys.readouterr().out
    assert "QAT model of qat.pt (2 epoch(s))" in qat_out
    for out in (ptq_out, qat_out):
        ours, theirs = _accuracies(out)
        assert abs(ours - theirs) <= 0.2
    assert Path("ptq.onnx").read_bytes() != Path("qat.onnx").read_bytes()  # the trained weights and steps


def test_export_runs_each_runtime_once_on_the_check_images(onnx, mlp_files, capsys, monkeypatch):
    """The output check's outputs give the two top-1 figures: onnxruntime and PyTorch see each check
    image once (before, both ran a second time for the figures)."""
    import onnxruntime

    import evoproxy.quant

    seen = {"onnxruntime": 0, "PyTorch": 0}
    run, lsq = onnxruntime.InferenceSession.run, evoproxy.quant.lsq_model

    def counted_run(self, names, feed, *args):
        seen["onnxruntime"] += len(feed["input"])
        return run(self, names, feed, *args)

    def counted_lsq(*args, **kwargs):
        qmodel = lsq(*args, **kwargs)  # calibrated: only the export's forward passes are counted

        def count(module, inputs):  # the exporter's tracing of its copy excepted
            if not torch.onnx.is_in_onnx_export():
                seen["PyTorch"] += len(inputs[0])

        qmodel.register_forward_pre_hook(count)
        return qmodel

    monkeypatch.setattr(onnxruntime.InferenceSession, "run", counted_run)
    monkeypatch.setattr(evoproxy.quant, "lsq_model", counted_lsq)
    assert main(["export", *mlp_files, "--bits-file", "bits.json", "--onnx", "m.onnx", "--eval-size", "40"]) == 0
    out = capsys.readouterr().out
    assert "top-1 on 40 test images" in out and seen == {"onnxruntime": 40, "PyTorch": 40}, (seen, out)
    ours, theirs = _accuracies(out)
    assert abs(ours - theirs) <= 2.5  # one image in 40


@pytest.mark.parametrize("kernels", ["float", "int8"])
def test_export_reports_its_check_in_both_runtimes_batch_by_batch(onnx, mlp_files, capsys, monkeypatch, kernels):
    from evoproxy import pace
    from evoproxy.quant import onnx_runtime

    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)  # every batch is "long" after the first
    monkeypatch.setattr(onnx_runtime, "EVAL_BATCH", 16)  # the 48 test vectors in 3 batches
    bits = ["--bits-file", "bits.json", "--onnx", "m.onnx", "--kernels", kernels]
    assert main(["export", *mlp_files, *bits]) == 0
    out, err = capsys.readouterr()
    for runtime in ("PyTorch", "onnxruntime"):
        assert [line.split(" (")[0] for line in err.splitlines() if f"] {runtime} check" in line] == [
            f"[export] {runtime} check: batch {i}/3" for i in (1, 2)
        ], err
    assert "top-1 on 48 test images" in out
    if kernels == "int8":  # and the output ranges' pass over the 192 calibration vectors
        assert "[export] output ranges: batch 1/2 (" in err


def test_export_one_line_errors(mlp_files, capsys, one_line_error):
    export = ["export", *mlp_files, "--onnx", "m.onnx", "--eval-size", "0"]
    Path("short.json").write_text(json.dumps({"bits": [4, 4]}))
    assert main([*export, "--bits-file", "short.json"]) == 2
    one_line_error("short.json has 2 bits but the model has 3 quantizable layers")
    Path("w16.json").write_text(json.dumps({"bits": [4, 16, 4]}))
    assert main([*export, "--bits-file", "w16.json"]) == 2
    one_line_error("layer '2' has 16-bit weights, which do not fit ONNX QuantizeLinear's int8")
    Path("a16.json").write_text(json.dumps({"bits": [4, 4, 4], "act_bits": 16}))
    assert main([*export, "--bits-file", "a16.json"]) == 2
    one_line_error("16-bit activations, which do not fit ONNX QuantizeLinear's uint8")
    assert main(["export", *mlp_files, "--bits-file", "bits.json", "--onnx", "no/m.onnx"]) == 2
    one_line_error("--onnx no/m.onnx needs an existing, writable folder")
    assert not Path("m.onnx").exists()
    # A QAT checkpoint of other bits would load (same layers) and bring its own bits: refused.
    _qat_checkpoint([3, 2, 3], "qat.pt")
    Path("other.json").write_text(json.dumps({"bits": [3, 3, 3]}))
    assert main([*export, "--bits-file", "other.json", "--checkpoint", "qat.pt"]) == 2
    one_line_error("qat.pt was trained with other bits")


def test_a_qat_mlp_exports_to_onnxruntime_with_its_float_biases(onnx, tmp_path):
    """onnxruntime rounds the float bias of a Conv or Gemm between QDQ pairs to int32 at s_x·s_w;
    exported as an Add after the layer, the bias stays the PyTorch model's."""
    import onnxruntime

    from evoproxy.quant import output_tolerance

    model = user_models.fit(user_models.mlp(), *user_models.vectors())
    layers = layer_registry(model, (12,))
    images, labels = user_models.vectors()
    qmodel = lsq_model(model, layers, [3, 2, 3], 4, images[:64])
    train_qat(qmodel, model, (images, labels), (images, labels), QatSettings(batch_size=32), log=lambda m: None)
    test, _ = user_models.vectors(100, seed=1)
    check = export_onnx(qmodel, layers, (12,), tmp_path / "qat.onnx", check_images=test)
    with torch.no_grad():
        want = qmodel.eval()(test)
    got = onnxruntime.InferenceSession(str(tmp_path / "qat.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": test.numpy()}
    )[0]
    assert torch.equal(check.onnx_outputs, torch.from_numpy(got)) and torch.equal(check.torch_outputs, want)
    assert check.diff == np.abs(got - want.numpy()).max() <= output_tolerance(qmodel, want) == check.tolerance
    assert check.flips is None  # within the tolerance: no layer-by-layer check
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4 * want.abs().max().item())  # float rounding only


def test_layers_kept_at_32_bit_weights_with_quantized_inputs_stay_float_in_onnxruntime(onnx, tmp_path):
    """onnxruntime 1.21 rewrote into int8 the float weights of a Conv or Gemm whose input comes straight
    from a DequantizeLinear: the logits of this MLP moved by 0.34 of 18, and its export was refused. A
    Clip between them keeps such weights float in every version: outputs differ by float rounding only."""
    model = user_models.fit(user_models.mlp(), *user_models.vectors())
    images, _ = user_models.vectors()
    test, _ = user_models.vectors(100, seed=1)
    conv, conv_layers, train, evaluation = user_models.brightness_task()
    cases = [
        (model, layer_registry(model, (12,)), [3, 32, 3], 8, images[:64], test, (12,)),
        (model, layer_registry(model, (12,)), [32, 32, 32], 4, images[:64], test, (12,)),
        (conv, conv_layers, [32, 2], 8, train[0], evaluation[0], (1, 8, 8)),
    ]
    for net, layers, bits, acts, calib, x, shape in cases:
        qmodel = lsq_model(net, layers, bits, acts, calib)
        check = export_onnx(qmodel, layers, shape, tmp_path / "m.onnx", check_images=x)
        assert check.diff <= 1e-5 * check.torch_outputs.abs().max().item(), (bits, acts, check.diff)
        graph = onnx.load(str(tmp_path / "m.onnx")).graph
        producer = {out: node for node in graph.node for out in node.output}
        floats = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
        kept = [n for n in graph.node if n.op_type in ("Conv", "Gemm") and n.input[1] in floats]
        assert len(kept) == bits.count(32), (bits, [n.op_type for n in graph.node])
        for node in kept:  # a Clip on the DequantizeLinear's output, never the DequantizeLinear itself
            clip = producer[node.input[0]]
            assert clip.op_type == "Clip" and producer[clip.input[0]].op_type == "DequantizeLinear", node.name


def test_export_refuses_to_write_a_file_whose_outputs_differ(onnx, tmp_path, monkeypatch):
    from evoproxy.errors import EvoproxyError
    from evoproxy.quant import onnx_export

    model, layers, train, evaluation = user_models.brightness_task()
    qmodel = lsq_model(model, layers, [3, 2], 4, train[0])
    real = onnx_export.qdq_model

    def shifted(*args):
        out = real(*args)
        out[-1].bias_after += 100.0  # the head's bias, far off in every output
        return out

    monkeypatch.setattr(onnx_export, "qdq_model", shifted)
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "m.onnx").write_bytes(b"old")
    with pytest.raises(
        EvoproxyError, match=r"outputs differ from the PyTorch model's by up to 100 on 48 images, beyond"
    ):
        export_onnx(qmodel, layers, (1, 8, 8), folder / "m.onnx", check_images=evaluation[0])
    assert (folder / "m.onnx").read_bytes() == b"old" and [p.name for p in folder.iterdir()] == ["m.onnx"]


class _Nudged(torch.nn.Module):
    """`inner` on its input times 1 + 4·10⁻⁶: what float rounding upstream does to a value."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x * (1 + 4e-6))


def _on_level_boundaries(qmodel, layers, shape=(2, 1, 8, 8)) -> torch.Tensor:
    """Images (two 8×8 ones by default) whose pixels lie just below half-way between two levels of the
    first layer's input quantizer: PyTorch rounds them down, the same pixels 4·10⁻⁶ larger round up."""
    quantizer = dict(quantizable_modules(qmodel))[layers[0].name].act_quantizer
    levels = torch.randint(0, min(200, quantizer.qp), shape, generator=torch.Generator().manual_seed(1))
    return (levels + 0.5) * quantizer.step.item() * (1 - 1e-6)


def _ptq(model=None):
    """`model` (for 8×8 grey images; default the ShuffleNetV2- and SE-style net) at 4-bit weights and
    8-bit inputs, and its layers."""
    model = model or user_models.shuffle_se()
    layers = layer_registry(model, (1, 8, 8))
    calib = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return lsq_model(model, layers, [4] * len(layers), 8, calib).eval(), layers


def test_rounding_flips_that_the_network_carries_to_its_outputs_do_not_refuse_the_file(onnx, tmp_path, monkeypatch):
    """Every pixel flips to the next level in onnxruntime only (nudged as float rounding would) and
    the logits, near zero as an untrained model's, move beyond two levels. Layer by layer (chunk,
    concatenation, channel shuffle, squeeze-and-excitation, Hardswish) the file computes what
    PyTorch computes, so it is written and the flips are counted."""
    from evoproxy.quant import onnx_export
    from evoproxy.quant.onnx_runtime import _activation_pairs

    qmodel, layers = _ptq()
    images = _on_level_boundaries(qmodel, layers)
    with torch.no_grad():
        qmodel[-1].bias -= qmodel(images).mean(0)
    real = onnx_export.qdq_model
    monkeypatch.setattr(onnx_export, "qdq_model", lambda *args: _Nudged(real(*args)))
    check = export_onnx(qmodel, layers, (1, 8, 8), tmp_path / "m.onnx", check_images=images)
    assert check.diff > check.tolerance  # refused before the layer-by-layer check
    assert check.flips >= images.numel() and check.values > 10 * images.numel()
    # The branches read one tensor, quantized alike: torch.onnx writes their pairs once.
    assert len(_activation_pairs(onnx.load(str(tmp_path / "m.onnx")).graph)) == len(layers) - 1


def test_export_prints_the_rounding_flips_where_onnxruntime_and_pytorch_disagree(onnx, mlp_files, capsys, monkeypatch):
    """The check images lie on level boundaries of the first quantizer and onnxruntime's input is
    nudged as float rounding would nudge it: the two runtimes disagree, and the command says how many
    activation values flipped to the neighbouring level, and that the file is written all the same."""
    import evoproxy.quant
    from evoproxy.quant import onnx_export

    real_qdq, real_export = onnx_export.qdq_model, evoproxy.quant.export_onnx
    monkeypatch.setattr(onnx_export, "qdq_model", lambda *args: _Nudged(real_qdq(*args)))

    def on_boundaries(qmodel, layers, shape, path, images, log):
        return real_export(qmodel, layers, shape, path, _on_level_boundaries(qmodel, layers, images.shape), log)

    monkeypatch.setattr(evoproxy.quant, "export_onnx", on_boundaries)
    assert main(["export", *mlp_files, "--bits-file", "bits.json", "--onnx", "m.onnx", "--eval-size", "8"]) == 0
    out = capsys.readouterr().out
    flips = re.search(r"onnxruntime's float sums put (\d+) of (\d+) activation values checked layer by layer", out)
    assert flips and int(flips[1]) >= 8 * 12 and "beyond two levels of the coarsest activation quantizer" in out, out
    assert Path("m.onnx").is_file()


def test_a_fault_between_quantizers_is_refused_naming_the_layer_whose_input_differs(onnx, tmp_path, monkeypatch):
    from evoproxy.errors import EvoproxyError
    from evoproxy.quant import onnx_export

    qmodel, layers = _ptq()
    real = onnx_export.qdq_model

    def faulty(*args):
        out = real(*args)
        out[3].branch[0].bias_after += 0.3  # the first unit's branch: its depthwise layer's input moves
        return out

    monkeypatch.setattr(onnx_export, "qdq_model", faulty)
    with pytest.raises(EvoproxyError, match=r"beyond the tolerance .*, and layer '3\.branch\.3''s input differs"):
        export_onnx(qmodel, layers, (1, 8, 8), tmp_path / "m.onnx", check_images=torch.rand(4, 1, 8, 8))
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("name", list(user_models.COMMON_BLOCKS))
def test_the_blocks_of_common_architectures_export_and_are_checked_layer_by_layer(onnx, tmp_path, monkeypatch, name):
    """EfficientNet's (SiLU, Sigmoid gate), ConvNeXt's (channels-last LayerNorm, GELU, layer scale), a vision
    transformer's (class token, attention, LayerNorm), DenseNet's (concatenation) and ResNeXt's (grouped
    convolution) blocks are written with a QDQ pair on every layer and compute what PyTorch computes; with
    every pixel on a level boundary that onnxruntime alone rounds up, they are still written, checked
    layer by layer."""
    from evoproxy.quant import onnx_export

    qmodel, layers = _ptq(user_models.common_block(name))
    images = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    check = export_onnx(qmodel, layers, (1, 8, 8), tmp_path / "m.onnx", check_images=images)
    assert check.diff <= check.tolerance and check.flips is None
    _check_qdq(onnx, tmp_path / "m.onnx", layers, [4] * len(layers))
    boundary = _on_level_boundaries(qmodel, layers)
    with torch.no_grad():  # logits near zero, as an untrained model's: the flips move them beyond two levels
        dict(quantizable_modules(qmodel))[layers[-1].name].bias -= qmodel(boundary).mean(0)
    real = onnx_export.qdq_model
    monkeypatch.setattr(onnx_export, "qdq_model", lambda *args: _Nudged(real(*args)))
    check = export_onnx(qmodel, layers, (1, 8, 8), tmp_path / "m.onnx", check_images=boundary)
    assert check.diff > check.tolerance and check.flips >= boundary.numel()


@pytest.mark.parametrize("name", list(user_models.COMMON_BLOCKS))
def test_a_wrong_graph_of_a_common_architecture_is_refused(onnx, tmp_path, monkeypatch, name):
    from evoproxy.errors import EvoproxyError
    from evoproxy.quant import onnx_export

    qmodel, layers = _ptq(user_models.common_block(name))
    real = onnx_export.qdq_model

    def negated(*args):
        out = real(*args)
        with torch.no_grad():  # a middle layer's weights, negated: the same levels, the wrong sign
            dict(quantizable_modules(out))[layers[len(layers) // 2].name].parametrizations.weight.original.neg_()
        return out

    monkeypatch.setattr(onnx_export, "qdq_model", negated)
    with pytest.raises(EvoproxyError, match=r"beyond the tolerance .*: .*m\.onnx not written"):
        export_onnx(qmodel, layers, (1, 8, 8), tmp_path / "m.onnx", check_images=torch.rand(16, 1, 8, 8))
    assert not (tmp_path / "m.onnx").exists()


class _BatchAsNumber(torch.nn.Module):
    """`inner` with the batch size read as a number, which the trace keeps: its logits reshaped to
    (len(x), −1), or (`column`) beside a column of zeros made as torch.zeros(len(x), 1)."""

    def __init__(self, inner: torch.nn.Module, column: bool):
        super().__init__()
        self.inner, self.column = inner, column

    def forward(self, x):
        if self.column:
            return torch.cat([self.inner(x), torch.zeros(len(x), 1)], 1)
        return self.inner(x).reshape(len(x), -1)


@pytest.mark.parametrize(
    "column, said",
    [
        (False, r"outputs on 4 images have the shape \(1, 12\), the PyTorch model's \(4, 3\); "),
        (True, r"onnxruntime cannot run the exported model on 4 images \(Fail: .*Concat.*\), only on one: "),
    ],
    ids=["wrong shape", "fails"],
)
def test_a_batch_size_traced_as_a_constant_is_refused_naming_the_fix(onnx, tmp_path, column, said):
    """torch.onnx traces a batch of one: written with len(x), not x.shape[0], the file gives the outputs of
    4 images as one row, or fails on them in onnxruntime, which the check says in one line."""
    from evoproxy.errors import EvoproxyError

    qmodel, layers = _ptq(_BatchAsNumber(user_models.common_block("resnext"), column))
    with pytest.raises(EvoproxyError, match=said + r"torch\.onnx traces a batch of one .*read it as x\.shape\[0\]"):
        export_onnx(qmodel, layers, (1, 8, 8), tmp_path / "m.onnx", check_images=torch.rand(4, 1, 8, 8))
    assert not (tmp_path / "m.onnx").exists()
