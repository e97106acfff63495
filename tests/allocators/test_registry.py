"""The allocators' registry (evoproxy.allocators.ALLOCATORS): a method added as its package
docstring says (a settings class, a search, one registry entry) runs through `evoproxy allocate
--method` on a shipped model with its own flag, its own errors and its own table, and is gone
once removed; and a Python user who splits the data with a method's entry gets the command
line's split and bits file."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

import user_models
from evoproxy.allocation import allocate, build_problem
from evoproxy.allocators import (
    ALLOCATORS,
    Allocator,
    SearchResult,
    SeamSettings,
    TrainingSettings,
    setting,
)
from evoproxy.cli import main
from evoproxy.model import DataSettings, calibration_batch, layer_registry, load_model, open_data
from evoproxy.params import Interval
from evoproxy.quant import model_size_mb


@dataclass(frozen=True, kw_only=True)
class ToySettings(TrainingSettings):
    """Every free layer at `toy_bits` weight bits, projected onto the budget when over it."""

    toy_bits: int = setting(4, "weight bits of every free layer before the projection")

    CONSTRAINTS = {**TrainingSettings.CONSTRAINTS, "toy_bits": Interval(2, 8, integer=True)}


def search_toy(model, problem, data, settings: ToySettings, log) -> SearchResult:
    """The nearest choice to `settings.toy_bits` for every free layer, and the configuration
    nearest to that within the budgets."""
    start = time.perf_counter()
    log(f"{len(data.train[0])} training images")
    w = problem.options[:, 0].astype(float)
    scored = replace(problem, value=np.tile(-((w - settings.toy_bits) ** 2), (len(problem.free), 1)))
    choice = np.full(len(problem.free), np.abs(w - settings.toy_bits).argmin())
    found = scored.allocation(choice, "toy", True, 0.0)
    allocation = found if scored.fits(choice) else replace(allocate(scored, "ilp"), method="toy")
    return SearchResult(
        "toy",
        problem,
        settings,
        allocation,
        found,
        time.perf_counter() - start,
        [float(b) for b in allocation.w_bits],
    )


TOY = Allocator("Toy", ToySettings, search_toy, "every free layer at the same bits.", train_fraction=0.5)


def test_a_method_registered_in_one_line_runs_through_allocate(tmp_path, monkeypatch, capsys, one_line_error):
    monkeypatch.chdir(tmp_path)
    images, labels = calibration_batch(64)  # shipped images, prepared as the shipped model expects
    np.savez("images.npz", images=images.numpy(), labels=labels.numpy())  # 51 training images, 13 test ones
    layers = layer_registry(load_model("default")[0], (1, 28, 28))
    budget = round(model_size_mb(layers, [8] + [2] * (len(layers) - 2) + [8]) + 1e-3, 6)  # W4 everywhere is over
    run = ["allocate", "--method", "toy", "--data", "images.npz", "--size-mb", str(budget)]

    monkeypatch.setitem(ALLOCATORS, "toy", TOY)
    with pytest.raises(SystemExit):
        main(["allocate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # unwrapped
    assert "--toy-bits TOY_BITS toy: weight bits of every free layer before the projection (default 4)" in help_text
    assert main(run) == 0
    out, err = capsys.readouterr()
    assert out.startswith(
        "Toy on resnet20-fmnist: weight bits 2,3,4 for 20 layers, activations 8-bit; 1 epoch(s) on 26 of 51 "
        "training images\n"
    )
    assert "found bits: " in out and "over the budget: projected onto it (nearest configuration)" in out
    assert err == "[toy] 26 training images\n"
    record = json.loads(Path("alloc.json").read_text())
    assert record["proxy"] == "toy" and record["bits"][0] == record["bits"][-1] == 8
    assert model_size_mb(layers, record["bits"]) <= budget and set(record["bits"][1:-1]) >= {3, 4}
    assert record["toy"]["toy_bits"] == 4 and record["toy"]["projected"] and record["toy"]["train_images"] == 26
    assert main([*run, "--toy-bits", "1"]) == 2
    one_line_error("--toy-bits must be a whole number between 2 and 8, got 1")
    assert main(["allocate", "--method", "edmips", "--data", "images.npz", "--size-mb", "1", "--toy-bits", "3"]) == 2
    one_line_error("--toy-bits is an option of --method toy, not of edmips")

    monkeypatch.undo()
    assert "toy" not in ALLOCATORS
    with pytest.raises(SystemExit):
        main(run)
    assert "invalid choice: 'toy'" in capsys.readouterr().err


def test_a_methods_entry_splits_the_data_and_searches_as_the_command_line_does(trained_mlp, capsys):
    layers = layer_registry(user_models.mlp(), (12,))
    budget = round(model_size_mb(layers, [8, 3, 8]), 6)
    flags = ["--size-mb", str(budget), "--seed", "3", "--batch-size", "4", "--out", "cli.json"]
    assert main(["mpq", "--method", "seam", *trained_mlp, *flags]) == 0
    capsys.readouterr()
    cli = json.loads(Path("cli.json").read_text())

    seam = ALLOCATORS["seam"]
    model, name = load_model("user_models:mlp", "mlp.pt")
    source = open_data("user_models:vectors", DataSettings())
    data = seam.search_data(source.training(), source.calibration()[0], seed=3)  # SEAM's own 4 %
    assert len(data.train[0]) == round(0.04 * len(source.training()[0])) == cli["seam"].pop("train_images")
    assert len(data.validation[0]) == 0
    problem = build_problem(layers, np.zeros(3), budget, fixed={0: (8, 8), 2: (8, 8)})  # the CLI's first,last
    result = seam.search(model, problem, data, SeamSettings(seed=3, batch_size=4), lambda line: None)
    python = result.record(model=name)
    for record in (cli, python):
        record.pop("seconds"), record["seam"].pop("search_seconds")
    assert python == cli
