"""QAT with learned step sizes (LSQ): the step-size gradient, the start from the PTQ quantizer,
training that lowers the loss within the configuration's bits, checkpoints that reload and
resume exactly, and `evoproxy quantize --method qat` with its one-line errors."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

import user_models
from evoproxy.cli import main
from evoproxy.errors import EvoproxyError
from evoproxy.model import layer_registry, load_model, quantizable_modules
from evoproxy.quant import (
    LsqQuantizer,
    QatSettings,
    QuantSettings,
    load_qat_state,
    lsq_model,
    quantize_model,
    train_qat,
)

W_BITS, A_BITS = [3, 2], 4


@pytest.fixture
def task():
    return user_models.brightness_task()


def _loss(model, pair):
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(pair[0]), pair[1]).item()


def test_lsq_step_gradient_equals_its_formula():
    x = torch.tensor(
        [[-1.3, -0.2, 0.05, 0.4, 0.9, 2.5], [0.7, -0.45, -2.0, 0.1, 1.1, 0.3]], dtype=torch.float64, requires_grad=True
    )
    step = torch.tensor([[0.3], [0.5]], dtype=torch.float64)
    qn, qp = 2, 1  # unequal bounds, so that a sign slip shows
    quantizer = LsqQuantizer(step, qn, qp)
    upstream = torch.randn(2, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = quantizer(x)
    (out * upstream).sum().backward()
    v = x.detach() / step
    assert torch.equal(out.detach(), torch.clamp(torch.round(v), -qn, qp) * step)
    # LSQ eq. 3: ∂q/∂s is round(v) − v inside the range and the bound outside, scaled by g = 1/√(numel·Qp).
    dq_ds = torch.where(v <= -qn, -float(qn), torch.where(v >= qp, float(qp), torch.round(v) - v))
    g = 1 / math.sqrt(x.numel() * qp)
    assert torch.allclose(quantizer.step.grad, g * (upstream * dq_ds).sum(1, keepdim=True), rtol=1e-12, atol=0)
    inside = (v > -qn) & (v < qp)
    assert inside.any() and not inside.all()
    assert torch.equal(x.grad, upstream * inside)  # straight through inside the range, nothing outside


def test_a_qat_model_starts_where_round_to_nearest_ptq_ends(task):
    model, layers, train, evaluation = task
    before = {k: v.clone() for k, v in model.state_dict().items()}
    qmodel = lsq_model(model, layers, W_BITS, A_BITS, train[0]).eval()
    ptq = quantize_model(model, layers, W_BITS, train[0], QuantSettings(A_BITS))
    with torch.no_grad():
        assert torch.allclose(qmodel(evaluation[0]), ptq(evaluation[0]), atol=1e-5)
    # The layers keep their names (and so the registry) and the model is untouched.
    assert [l.name for l in layer_registry(qmodel, (1, 8, 8))] == [l.name for l in layers]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_qat_lowers_the_training_loss_and_keeps_the_configurations_bits(task):
    model, layers, train, evaluation = task
    qmodel = lsq_model(model, layers, W_BITS, A_BITS, train[0])
    start = _loss(qmodel, train)
    history = train_qat(qmodel, model, train, evaluation, QatSettings(epochs=3, batch_size=16), log=lambda m: None)
    assert [r.epoch for r in history] == [1, 2, 3]
    assert _loss(qmodel, train) < 0.9 * start
    modules = dict(quantizable_modules(qmodel))
    for layer, bits in zip(layers, W_BITS):
        module = modules[layer.name]
        w = module.weight.detach()
        assert not torch.equal(w, dict(quantizable_modules(model))[layer.name].weight)  # trained, and quantized
        assert max(len(torch.unique(row)) for row in w.reshape(len(w), -1)) <= 2**bits
        assert len(torch.unique(module.act_quantizer(torch.linspace(-50, 50, 9999)))) <= 2**A_BITS


def test_distillation_follows_the_full_precision_model_not_the_labels(task):
    model, layers, train, evaluation = task
    shuffled = (train[0], train[1][torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(1))])
    losses = {}
    for distill in (False, True):
        qmodel = lsq_model(model, layers, [8, 8], 8, train[0])
        losses[distill] = train_qat(
            qmodel, model, shuffled, evaluation, QatSettings(batch_size=48, distill=distill), log=lambda m: None
        )[0].loss
    # At 8 bits the QAT model is nearly the teacher: a small KL, while random labels cost ~ln 3.
    assert losses[True] < 0.05 < 0.5 < losses[False]


def test_a_checkpoint_reloads_to_identical_outputs(task, tmp_path):
    model, layers, train, evaluation = task
    qmodel = lsq_model(model, layers, W_BITS, A_BITS, train[0])
    train_qat(qmodel, model, train, evaluation, QatSettings(batch_size=16), tmp_path / "qat.pt", log=lambda m: None)
    fresh = lsq_model(model, layers, W_BITS, A_BITS, train[0]).eval()
    qmodel.eval()
    with torch.no_grad():
        assert not torch.equal(fresh(evaluation[0]), qmodel(evaluation[0]))
        assert load_qat_state(fresh, tmp_path / "qat.pt") == 1
        assert torch.equal(fresh(evaluation[0]), qmodel(evaluation[0]))


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_qat_killed_after_an_epoch_resumes_to_the_uninterrupted_result(task, tmp_path, optimizer):
    model, layers, train, evaluation = task
    settings = QatSettings(epochs=2, batch_size=16, optimizer=optimizer)
    whole = lsq_model(model, layers, W_BITS, A_BITS, train[0])
    expected = train_qat(whole, model, train, evaluation, settings, tmp_path / "whole.pt", log=lambda m: None)

    def killed_after_epoch_1(line):
        if line.startswith("epoch 1/2"):
            raise KeyboardInterrupt  # after the epoch's checkpoint was written

    with pytest.raises(KeyboardInterrupt):
        train_qat(
            lsq_model(model, layers, W_BITS, A_BITS, train[0]),
            model,
            train,
            evaluation,
            settings,
            tmp_path / "run.pt",
            log=killed_after_epoch_1,
        )
    lines = []
    resumed = lsq_model(model, layers, W_BITS, A_BITS, train[0])
    history = train_qat(resumed, model, train, evaluation, settings, tmp_path / "run.pt", resume=True, log=lines.append)
    assert [l.split(":")[0] for l in lines] == ["epoch 2/2"]
    assert [(r.epoch, r.loss, r.accuracy) for r in history] == [(r.epoch, r.loss, r.accuracy) for r in expected]
    got, want = resumed.state_dict(), whole.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want if isinstance(want[k], torch.Tensor))


def test_resume_refuses_a_checkpoint_of_other_settings_or_bits(task, tmp_path):
    model, layers, train, evaluation = task
    quiet = dict(log=lambda m: None)
    train_qat(
        lsq_model(model, layers, W_BITS, A_BITS, train[0]),
        model,
        train,
        evaluation,
        QatSettings(batch_size=48),
        tmp_path / "qat.pt",
        **quiet,
    )
    with pytest.raises(EvoproxyError, match=r"other QAT settings, epochs 1 \(now 2\)"):
        train_qat(
            lsq_model(model, layers, W_BITS, A_BITS, train[0]),
            model,
            train,
            evaluation,
            QatSettings(epochs=2, batch_size=48),
            tmp_path / "qat.pt",
            resume=True,
            **quiet,
        )
    with pytest.raises(EvoproxyError, match="another bit configuration"):
        train_qat(
            lsq_model(model, layers, [4, 2], A_BITS, train[0]),
            model,
            train,
            evaluation,
            QatSettings(batch_size=48),
            tmp_path / "qat.pt",
            resume=True,
            **quiet,
        )
    with pytest.raises(EvoproxyError, match="does not exist"):
        train_qat(
            lsq_model(model, layers, W_BITS, A_BITS, train[0]),
            model,
            train,
            evaluation,
            QatSettings(batch_size=48),
            tmp_path / "none.pt",
            resume=True,
            **quiet,
        )


@pytest.fixture
def mlp_files(trained_mlp):
    """The trained MLP's flags, with bits.json for it in the cwd."""
    Path("bits.json").write_text(json.dumps({"bits": [3, 2, 3]}))
    return trained_mlp


def test_quantize_qat_prints_ptq_and_qat_beside_full_precision_and_resumes(mlp_files, capsys):
    flags = [
        *mlp_files,
        "--bits-file",
        "bits.json",
        "--method",
        "qat",
        "--epochs",
        "2",
        "--batch-size",
        "32",
        "--checkpoint",
        "qat.pt",
    ]
    assert main(["quantize", *flags]) == 0
    captured = capsys.readouterr()
    assert [l.split(":")[0] for l in captured.err.splitlines()] == ["[qat] epoch 1/2", "[qat] epoch 2/2"]
    rows = [l.split("  ")[0] for l in captured.out.splitlines() if l.startswith(("full precision", "RTN PTQ,", "QAT,"))]
    assert rows == ["full precision", "RTN PTQ, A8", "QAT, A8"]
    assert "QAT: 2 epoch(s) on 192 training images, sgd lr 0.01" in captured.out
    assert Path("qat.pt").is_file() and not list(Path(".").glob(".qat.pt.*"))  # renamed into place
    # Resuming a finished run trains nothing and reports the same accuracy.
    assert main(["quantize", *flags, "--resume"]) == 0
    again = capsys.readouterr()
    assert again.err == "" and [l for l in again.out.splitlines() if l.startswith("QAT,")] == [
        l for l in captured.out.splitlines() if l.startswith("QAT,")
    ]


def test_quantize_qat_one_line_errors(mlp_files, capsys, one_line_error):
    Path("short.json").write_text(json.dumps({"bits": [4, 4]}))
    assert main(["quantize", *mlp_files, "--bits-file", "short.json", "--method", "qat"]) == 2
    one_line_error("short.json has 2 bits but the model has 3 quantizable layers")
    assert main(["quantize", *mlp_files, "--bits-file", "bits.json", "--epochs", "2", "--distill"]) == 2
    one_line_error("--epochs, --distill apply to --method qat only")
    assert main(["quantize", *mlp_files, "--bits-file", "bits.json", "--method", "qat", "--lr", "-1"]) == 2
    one_line_error("--lr must be a finite number above 0")
    assert main(["quantize", *mlp_files, "--bits-file", "bits.json", "--method", "qat", "--resume"]) == 2
    one_line_error("--checkpoint must be given, the file to resume from")


def test_quantize_qat_on_the_default_data_says_how_to_get_the_training_split(
    tmp_path, monkeypatch, capsys, one_line_error
):
    monkeypatch.chdir(tmp_path)  # conftest points EVOPROXY_FMNIST_DIR at an empty folder
    model, _ = load_model("default")
    Path("bits.json").write_text(json.dumps({"bits": [4] * len(layer_registry(model, (1, 28, 28)))}))
    assert main(["quantize", "--bits-file", "bits.json", "--method", "qat"]) == 2
    one_line_error("train-images-idx3-ubyte", "apt-get install dataset-fashion-mnist")


def test_a_long_epoch_reports_its_progress_and_the_time_left(monkeypatch):
    from evoproxy import pace
    from evoproxy.quant import qat

    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)  # every batch is "long" after the first
    images, labels = torch.zeros(40, 3), torch.zeros(40, dtype=torch.long)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    lines: list[str] = []
    batches = list(qat.epoch_batches(images, labels, opt, 8, 2, 1, 0, 0.1, "cpu", lines.append))
    assert len(batches) == 5 and len(lines) == 4
    assert lines[0].startswith("epoch 2/2: batch 1/5 (") and lines[-1].startswith("epoch 2/2: batch 4/5 (")
    assert all(line.endswith(" s left)") for line in lines)
