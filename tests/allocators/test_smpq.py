"""SMPQ (evoproxy.allocators.smpq): the Monte Carlo permutation estimate gives an additive game's
contributions exactly and a 3-player game's exact Shapley values, truncation credits the rest of
an order 0 and saves evaluations, and `evoproxy mpq --method smpq` writes a bits file within the
budget that `evoproxy quantize` reads, with its number of value evaluations, and one-line errors."""

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

import user_models
from evoproxy.cli import main
from evoproxy.allocators import shapley_permutations
from evoproxy.model import layer_registry
from evoproxy.quant import model_size_mb


def test_an_additive_game_gives_each_player_its_own_contribution():
    c = np.array([0.5, -0.2, 0.0, 1.5])
    psi, calls = shapley_permutations(lambda mask: float(c[mask].sum()) + 3.0, 4, 5, np.random.default_rng(0))
    assert np.allclose(psi, c, atol=1e-12) and calls == 1 + 5 * 4


def test_the_estimate_matches_the_exact_shapley_values_of_a_three_player_game():
    # Players 0 and 1 are worth 1 only together (0.6 each alone is not enough), player 2 adds 0.3 to any coalition.
    def value(mask) -> float:
        return (1.0 if mask[0] and mask[1] else 0.0) + 0.3 * mask[2] + 0.2 * (mask[0] and mask[2])

    exact = np.zeros(3)
    for order in itertools.permutations(range(3)):
        mask = np.zeros(3, dtype=bool)
        for i in order:
            before = value(mask)
            mask[i] = True
            exact[i] += (value(mask) - before) / math.factorial(3)
    assert np.allclose(exact, [0.6, 0.5, 0.4])  # the 0.2 of {0, 2} split evenly
    psi, _ = shapley_permutations(value, 3, 3000, np.random.default_rng(1))
    assert np.allclose(psi, exact, atol=0.02)


def test_truncation_credits_the_rest_of_an_order_nothing_and_saves_evaluations():
    value = lambda mask: float(mask[0]) + 0.01 * mask[1:].sum()  # noqa: E731 — without player 0 the game is lost
    full, _ = shapley_permutations(value, 4, 50, np.random.default_rng(2))
    cut, calls = shapley_permutations(value, 4, 50, np.random.default_rng(2), truncation=0.5)
    assert np.allclose(full, [1.0, 0.01, 0.01, 0.01])
    assert cut[0] == 1.0 and (cut[1:] < 0.01).all() and (cut[1:] > 0).all()  # 0 for players after player 0
    assert calls < 1 + 50 * 4


def test_a_round_reports_its_removals_and_estimates_what_it_estimates_quietly(monkeypatch):
    from evoproxy import pace

    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)  # every removal is "long" after the first
    value = lambda mask: float(mask[0]) + 0.01 * mask[1:].sum()  # noqa: E731
    lines: list[str] = []
    told = shapley_permutations(value, 4, 3, np.random.default_rng(2), truncation=0.5, log=lines.append)
    quiet = shapley_permutations(value, 4, 3, np.random.default_rng(2), truncation=0.5)
    assert np.array_equal(told[0], quiet[0]) and told[1] == quiet[1]
    assert [line.split(" (")[0] for line in lines] == [f"Shapley round: removal {i}/12" for i in range(1, 12)]


def _budget() -> float:
    return round(model_size_mb(layer_registry(user_models.mlp(), (12,)), [8, 3, 8]), 6)


def test_mpq_smpq_writes_a_bits_file_within_the_budget_with_its_value_evaluations(trained_mlp, capsys):
    assert (
        main(
            [
                "mpq",
                "--method",
                "smpq",
                *trained_mlp,
                "--size-mb",
                str(_budget()),
                "--epochs",
                "2",
                "--val-images",
                "64",
                "--samples",
                "3",
                "--batch-size",
                "32",
                "--out",
                "alloc.json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "2 epoch(s) on 128 of 192 training images" in captured.out and "valued on 64 held-out images" in captured.out
    assert [l.split(":")[0] for l in captured.err.splitlines()] == ["[smpq] epoch 1/2", "[smpq] epoch 2/2"]
    record = json.loads(Path("alloc.json").read_text())
    evaluations = record["smpq"]["value_evaluations"]
    # One free layer with 3 options: each round values the full supernet once and at most 3 coalitions per order.
    assert 2 * (1 + 1) <= evaluations <= 2 * (1 + 3 * 3)
    assert f"{evaluations} value evaluations" in captured.out.splitlines()[-2]
    assert record["proxy"] == "smpq" and record["bits"][0] == record["bits"][2] == 8 and record["bits"][1] in (2, 3)
    assert record["size_mb"] <= _budget() and record["smpq"]["validation_images"] == 64
    assert main(["quantize", *trained_mlp, "--bits-file", "alloc.json"]) == 0
    assert "quantized, A8" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--method", "smpq", "--samples", "0"], "--samples must be a whole number at least 1"),
        (["--method", "smpq", "--beta", "1"], "--beta must be a number at least 0 and below 1, got 1.0"),
        (["--method", "smpq", "--truncation", "nan"], "--truncation must be a finite number above 0, got nan"),
        (["--method", "smpq", "--val-images", "192"], "--val-images must be from 0 to below 192"),
        (
            ["--method", "smpq", "--val-images", "100", "--train-images", "100"],
            "--train-images must be between 1 and 92",
        ),
        (["--method", "smpq", "--val-images", "0"], "SMPQ needs validation images"),
        (["--method", "edmips", "--samples", "3", "--xi", "1"], "--samples, --xi are options of --method smpq"),
    ],
)
def test_mpq_smpq_one_line_errors(trained_mlp, one_line_error, flags, message):
    assert main(["mpq", *trained_mlp, "--size-mb", str(_budget()), *flags]) == 2
    one_line_error(message)
    assert not Path("alloc.json").exists()
