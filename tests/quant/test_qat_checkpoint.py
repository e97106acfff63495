"""The QAT checkpoint's one schema check: every doctored checkpoint given to `evoproxy quantize
--method qat --resume` (or to `export --checkpoint`) is refused in one line naming the file, before
any training, and a checkpoint path that cannot be written is refused before the first epoch."""

import json
from pathlib import Path

import pytest
import torch

import user_models
from evoproxy.cli import main
from evoproxy.errors import ParameterError
from evoproxy.quant import QatSettings, lsq_model, train_qat

WEIGHT = "0.parametrizations.weight.original"


def _del(key):
    return lambda c: c.pop(key)


def _set(path, value):
    def doctor(ckpt):
        *parents, last = path
        target = ckpt
        for p in parents:
            target = target[p]
        target[last] = value(target[last]) if callable(value) else value

    return doctor


# Each doctored checkpoint, and a text its error must hold.
CASES = {
    "no identity tag": (_del("identity"), "lacks identity"),
    "identity tag without its model": (
        _set(["identity"], lambda t: {k: t[k] for k in ("quantizers", "settings")}),
        "damaged identity tag",
    ),
    "identity tag not a dict": (_set(["identity"], "qat"), "damaged identity tag"),
    "no state": (_del("state"), "lacks state"),
    "tensor of the wrong shape": (_set(["state", WEIGHT], torch.zeros(5, 5)), f"{WEIGHT} of shape (5, 5)"),
    "a state key too many": (_set(["state", "extra.weight"], torch.zeros(1)), "holds another QAT model"),
    "a string for a tensor": (_set(["state", WEIGHT], "w"), f"{WEIGHT} of shape str"),
    "NaN weights": (_set(["state", WEIGHT], lambda w: torch.full_like(w, float("nan"))), "non-finite values"),
    "infinite step": (_set(["state", "2.act_quantizer.step"], torch.tensor(float("inf"))), "non-finite values"),
    "damaged quantizer": (_set(["state", "2.act_quantizer._extra_state"], {"qn": "0"}), "damaged quantizer"),
    "empty optimizer state": (_set(["optimizer", "state"], {}), "empty optimizer state"),
    "no optimizer": (_set(["optimizer"], {}), "optimizer state of another model"),
    "optimizer of fewer parameters": (
        _set(["optimizer", "param_groups"], lambda g: [{**g[0], "params": g[0]["params"][:-1]}]),
        "optimizer state of another model",
    ),
    "momentum of the wrong shape": (
        _set(["optimizer", "state", 0, "momentum_buffer"], torch.zeros(3)),
        "optimizer momentum_buffer of shape (3,)",
    ),
    "NaN momentum": (
        _set(["optimizer", "state", 0, "momentum_buffer"], lambda m: m * float("nan")),
        "non-finite values (NaN or infinity) in the optimizer's momentum_buffer",
    ),
    "history row of the wrong shape": (_set(["history", 0], {"epoch": 1, "loss": 0.5}), "history row 1 with fields"),
    "history row not a dict": (_set(["history", 0], [1, 0.5, 90.0, 1.0]), "history row 1 with fields"),
    "history row with a NaN loss": (_set(["history", 1, "loss"], float("nan")), "history row 2"),
    "history shorter than its epochs": (_set(["history"], lambda h: h[:1]), "1 history rows for 2 finished epoch(s)"),
    "state a list": (_set(["state"], [1, 2]), "holds another QAT model"),
    "optimizer a list": (_set(["optimizer"], []), "optimizer"),
    "history not a list": (_set(["history"], "all"), "history"),
    "epoch as text": (_set(["epoch"], "2"), "has epoch '2'"),
    "negative epoch": (_set(["epoch"], -1), "has epoch -1"),
}


@pytest.fixture
def qat_run(trained_mlp):
    """The QAT flags of the trained MLP (in the cwd) and its 2-epoch checkpoint qat.pt, as
    `evoproxy quantize --method qat --checkpoint` writes it."""
    Path("bits.json").write_text(json.dumps({"bits": [3, 2, 3]}))
    flags = [*trained_mlp, "--bits-file", "bits.json", "--method", "qat", "--epochs", "2", "--batch-size", "32"]
    assert main(["quantize", *flags, "--checkpoint", "qat.pt"]) == 0
    return flags


def test_every_doctored_checkpoint_is_refused_in_one_line_before_training(qat_run, capsys, one_line_error):
    capsys.readouterr()
    clean = torch.load("qat.pt", weights_only=True)
    outcomes = {"clean error": 0, "traceback": 0, "silent accept": 0}
    for name, (doctor, needle) in CASES.items():
        ckpt = torch.load("qat.pt", weights_only=True)
        doctor(ckpt)
        torch.save(ckpt, "doctored.pt")
        code = main(["quantize", *qat_run, "--checkpoint", "doctored.pt", "--resume"])
        err = capsys.readouterr().err
        outcomes["traceback" if "Traceback" in err else "clean error" if code == 2 else "silent accept"] += 1
        lines = [l for l in err.splitlines() if not l.startswith("evoproxy: warning:")]
        assert code == 2 and len(lines) == 1, (name, err)  # one line, so no epoch was trained
        assert "doctored.pt" in lines[0] and needle in lines[0], (name, lines[0])
    assert outcomes == {"clean error": len(CASES), "traceback": 0, "silent accept": 0}
    # The same check guards export, and the clean checkpoint still resumes (nothing left to train).
    torch.save({**clean, "state": {**clean["state"], WEIGHT: clean["state"][WEIGHT] * float("nan")}}, "nan.pt")
    export = ["export", *qat_run[:8], "--onnx", "m.onnx", "--eval-size", "0", "--checkpoint", "nan.pt"]
    assert main(export) == 2
    one_line_error("QAT checkpoint nan.pt has non-finite values")
    assert not Path("m.onnx").exists()
    assert main(["quantize", *qat_run, "--checkpoint", "qat.pt", "--resume"]) == 0


def test_a_checkpoint_path_that_cannot_be_written_is_refused_before_training(trained_mlp, capsys, one_line_error):
    Path("bits.json").write_text(json.dumps({"bits": [3, 2, 3]}))
    Path("taken").mkdir()
    flags = [*trained_mlp, "--bits-file", "bits.json", "--method", "qat", "--batch-size", "32"]
    for path, why in (("no/qat.pt", "No such file or directory"), ("taken", "a folder is in its place")):
        assert main(["quantize", *flags, "--checkpoint", path]) == 2
        one_line_error(f"--checkpoint must be a file in an existing, writable folder ({why}), got '{path}'")


def test_train_qat_checks_its_checkpoint_path_before_the_first_step(tmp_path):
    model, layers, train, evaluation = user_models.brightness_task()
    qmodel = lsq_model(model, layers, [3, 2], 4, train[0])
    before = {k: v.clone() for k, v in qmodel.state_dict().items() if isinstance(v, torch.Tensor)}
    lines = []
    with pytest.raises(ParameterError, match="train_qat.checkpoint must be a file in an existing, writable folder"):
        train_qat(
            qmodel, model, train, evaluation, QatSettings(batch_size=48), tmp_path / "no" / "q.pt", log=lines.append
        )
    assert lines == [] and all(torch.equal(v, qmodel.state_dict()[k]) for k, v in before.items())
