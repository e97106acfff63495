"""SEAM (evoproxy.allocators.seam): its large-margin loss is 0 for features on their class means far
beyond the margin and positive otherwise, the margin raises it for features classified right but
inside the margin, its gradient pulls a class's features together, and `evoproxy mpq --method
seam` writes a bits file within the budget that `evoproxy quantize` reads, with one-line errors."""

import json
from pathlib import Path

import torch

import user_models
from evoproxy.cli import main
from evoproxy.allocators import large_margin_loss
from evoproxy.model import layer_registry
from evoproxy.quant import model_size_mb

MEANS = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]], dtype=torch.float64)
UNIT = torch.zeros(3, 2, dtype=torch.float64)  # log-variances of Σ = I


def test_the_loss_is_zero_beyond_the_margin_and_positive_otherwise():
    labels = torch.tensor([0, 1, 2])
    assert large_margin_loss(MEANS.clone(), labels, MEANS, UNIT).item() == 0.0  # exp(−5000) underflows
    between = torch.tensor([[50.0, 0.0], [100.0, 0.0], [0.0, 100.0]], dtype=torch.float64)  # first on the boundary
    assert large_margin_loss(between, labels, MEANS, UNIT).item() > 0.5
    # Closer to its own mean than to class 1's (d 32 against 40.5), so m = 0 classifies it right; m = 0.3 puts
    # its own class at 1.3 × 32 = 41.6 > 40.5: inside the margin, and the loss shows it.
    inside = torch.tensor([[8.0, 0.0]], dtype=torch.float64)
    near = dict(means=torch.tensor([[0.0, 0.0], [17.0, 0.0], [0.0, 100.0]], dtype=torch.float64), log_var=UNIT, lam=0.0)
    plain = large_margin_loss(inside, torch.tensor([0]), margin=0.0, **near).item()
    margin = large_margin_loss(inside, torch.tensor([0]), margin=0.3, **near).item()
    assert 0 < plain < 1e-3 and margin > 0.5 and margin > 100 * plain


def test_the_gradient_pulls_a_class_together():
    g = torch.tensor([[-3.0, 1.0], [2.0, -2.0], [100.0, 0.0]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    large_margin_loss(g, labels, MEANS, UNIT).backward()
    moved = (g - 0.5 * g.grad).detach()
    assert (moved[0] - moved[1]).norm() < (g[0] - g[1]).detach().norm()  # the two of class 0 closer together
    assert (moved[:2].norm(dim=1) < g[:2].detach().norm(dim=1)).all()  # and each nearer its mean, the origin


def _budget() -> float:
    return round(model_size_mb(layer_registry(user_models.mlp(), (12,)), [8, 3, 8]), 6)


def test_mpq_seam_writes_a_bits_file_within_the_budget_that_quantize_accepts(trained_mlp, capsys):
    assert (
        main(
            [
                "mpq",
                "--method",
                "seam",
                *trained_mlp,
                "--size-mb",
                str(_budget()),
                "--epochs",
                "2",
                "--out",
                "alloc.json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "2 epoch(s) on 8 of 192 training images" in captured.out  # the paper's 4 % by default
    assert "λ 0.1, margin 0.3" in captured.out
    assert [l.split(":")[0] for l in captured.err.splitlines()] == ["[seam] epoch 1/2", "[seam] epoch 2/2"]
    record = json.loads(Path("alloc.json").read_text())
    assert record["proxy"] == "seam" and record["bits"][0] == record["bits"][2] == 8 and record["bits"][1] in (2, 3)
    assert record["size_mb"] <= _budget()
    assert record["seam"]["lam"] == 0.1 and record["seam"]["margin"] == 0.3 and record["seam"]["train_images"] == 8
    assert main(["quantize", *trained_mlp, "--bits-file", "alloc.json"]) == 0
    assert "quantized, A8" in capsys.readouterr().out


def test_mpq_seam_one_line_errors(trained_mlp, one_line_error):
    budget = str(_budget())
    assert main(["mpq", "--method", "seam", *trained_mlp, "--size-mb", budget, "--fixed", "first"]) == 2
    one_line_error("SEAM classifies the input features of the last layer", "keep it among the fixed layers")
    assert main(["mpq", "--method", "seam", *trained_mlp, "--size-mb", budget, "--margin", "-1"]) == 2
    one_line_error("--margin must be a finite number at least 0, got -1.0")
    assert main(["mpq", "--method", "edmips", *trained_mlp, "--size-mb", budget, "--lam", "0.2"]) == 2
    one_line_error("--lam is an option of --method seam, not of edmips")
    assert main(["mpq", "--method", "seam", *trained_mlp, "--size-mb", budget, "--train-fraction", "0"]) == 2
    one_line_error("--train-fraction must be above 0 and at most 1")
    assert (
        main(
            [
                "mpq",
                "--method",
                "seam",
                *trained_mlp,
                "--size-mb",
                budget,
                "--train-fraction",
                "0.5",
                "--train-images",
                "10",
            ]
        )
        == 2
    )
    one_line_error("give --train-images or --train-fraction, not both")
    assert not Path("alloc.json").exists()
