"""AdaQAT (evoproxy.allocators.adaqat): ⌈N⌉ on the grid of bit choices, the finite-difference step's
sign (the loss pushes N up when bits fall and λ = 0, a large λ pushes it down), the freeze rule on
an oscillating sequence, the network quantizing at the selected bits, the policy within the size and
BOPs budgets (projected to the nearest configuration when over), determinism, and `evoproxy mpq
--method adaqat` end to end with one-line errors."""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import user_models
from evoproxy.allocation import build_problem
from evoproxy.cli import main
from evoproxy.errors import EvoproxyError
from evoproxy.allocators import AdaqatSettings, FractionalBits, SearchData, adaqat_network, search_adaqat
from evoproxy.model import layer_registry, quantizable_modules
from evoproxy.quant import model_bops, model_size_mb

QUIET = {"log": lambda message: None}


def _hard_vectors(n: int = 192):
    """user_models.vectors with the classes closer, so that fewer bits cost the MLP some loss."""
    x, y = user_models.vectors(n)
    return x * 0.25, y


def _trained():
    x, y = _hard_vectors()
    return user_models.fit(user_models.mlp(), x, y)


def _problem(size_mb: float = 1.0, a_bits=(8,), bops: float | None = None):
    """Every layer of user_models.mlp free, weights at 2, 3 or 4 bits, activations among `a_bits`."""
    layers = layer_registry(user_models.mlp(), (12,))
    return build_problem(layers, np.zeros(len(layers)), size_mb, bops=bops, w_bits=(2, 3, 4), a_bits=a_bits, fixed={})


def _search(problem, **settings):
    x, y = _hard_vectors()
    data = SearchData((x, y), (x[:0], y[:0]), x)
    return search_adaqat(_trained(), problem, data, AdaqatSettings(**{"batch_size": 32, **settings}), **QUIET)


def test_bits_are_n_rounded_up_on_the_grid_of_choices():
    n = FractionalBits(2.0, (2, 3, 4), lr=1.0, oscillations=10)
    for value, bits, other in (
        (1.0, 2, 3),
        (1.5, 2, 3),
        (2.0, 2, 3),
        (2.01, 3, 2),
        (3.0, 3, 2),
        (3.5, 4, 3),
        (4.0, 4, 3),
    ):
        n.value = value
        assert (n.bits, n.other()) == (bits, other)  # at the bottom the difference looks one step up
    grid = FractionalBits(4.5, (2, 4, 8), lr=1.0, oscillations=10)
    assert (grid.bits, grid.other()) == (8, 4)
    grid.value = 3.0
    assert (grid.bits, grid.other()) == (4, 2)
    single = FractionalBits(8.0, (8,), lr=1.0, oscillations=10)
    assert single.frozen and single.other() is None and single.bits == 8
    with pytest.raises(EvoproxyError, match=r"Mine.init must be from 1 \(one below the fewest bit choice\) to 4"):
        FractionalBits(4.5, (2, 3, 4), lr=1.0, oscillations=10, owner="Mine", param="init")


def test_the_network_quantizes_at_the_selected_bits_and_the_search_at_the_ceiling():
    model = _trained()
    problem = _problem(a_bits=(2, 4, 8))
    x = _hard_vectors()[0]
    net, w_select, a_select = adaqat_network(model, problem, x)
    assert len(w_select) == len(a_select) == 3
    layer = dict(quantizable_modules(net))[problem.layers[1].name]
    with torch.no_grad():
        for bits in (2, 3, 4):
            w_select[1].bits = bits
            levels = max(len(torch.unique(row)) for row in layer.weight)
            assert 2 ** (bits - 1) < levels <= 2**bits - 1  # symmetric levels −q..q with q = 2^(b−1) − 1
        outputs = []
        for a in (2, 8):
            for s in a_select:
                s.bits = a
            outputs.append(net(x))
        assert not torch.allclose(*outputs)
    # N that hardly moves: the bits found are ⌈N⌉ (2.3 → 3, 2.2 → 4 on the grid 2, 4, 8).
    result = _search(problem, init_w_bits=2.3, init_a_bits=2.2, w_lr=1e-6, a_lr=1e-6)
    assert result.found.w_bits == (3, 3, 3) and set(result.found.a_bits) == {4}
    assert result.details["n_w"][0] == pytest.approx(2.3, abs=1e-3)


@pytest.mark.parametrize("per_layer", [False, True])
def test_the_loss_pushes_n_up_when_bits_fall_and_a_large_lambda_pushes_it_down(per_layer):
    model, (x, y) = _trained(), _hard_vectors()
    net, w_select, a_select = adaqat_network(model, _problem(a_bits=(2, 3, 8)), x)

    def loss(w_bits, a):
        for s, w in zip(w_select, w_bits):
            s.bits = w
        for s in a_select:
            s.bits = a
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(net(x), y).item()

    # A model whose loss rises as bits fall: each layer from 3 to 2 bits, the inputs from 3 to 2.
    assert all(loss([2 if g == f else 3 for g in range(3)], 8) > loss([3, 3, 3], 8) for f in range(3))
    assert loss([3, 3, 3], 2) > loss([3, 3, 3], 3)
    kept = _search(_problem(a_bits=(2, 3, 8)), lam=0.0, init_w_bits=2.5, init_a_bits=2.5, epochs=2, per_layer=per_layer)
    assert all(n > 2.5 for n in kept.details["n_w"]) and kept.details["n_a"] > 2.5
    squeezed = _search(
        _problem(a_bits=(2, 3, 8)), lam=50.0, init_w_bits=2.5, init_a_bits=2.5, epochs=2, per_layer=per_layer
    )
    assert all(n < 2.5 for n in squeezed.details["n_w"]) and squeezed.details["n_a"] < 2.5
    assert squeezed.found.w_bits == (2, 2, 2) and squeezed.found.bops < kept.found.bops
    assert [h.epoch for h in kept.history] == [1, 2] and len(kept.history[0].n_w) == (3 if per_layer else 1)


def test_the_freeze_rule_fixes_the_larger_of_the_last_two_bits_after_the_set_reversals():
    n = FractionalBits(3.5, (2, 3, 4), lr=1.0, oscillations=3)
    seen = []
    for slope in (0.5, 0.5, -1.0, 1.0, -1.0, 1.0):  # 3.0 (4→3), 2.5, 3.5 (↑ 1), 2.5 (↓ 2), 3.5 (↑ 3): frozen
        assert not n.frozen
        n.step(slope)
        seen.append(n.bits)
        if n.reversals == 3:
            break
    assert seen == [3, 3, 4, 3, 4] and n.frozen and n.frozen_at == 5 and n.bits == 4
    n.step(10.0)
    assert n.bits == 4 and n.other() is None
    steady = FractionalBits(4.0, (2, 3, 4), lr=0.1, oscillations=1)
    for _ in range(30):
        steady.step(1.0)  # always down: no reversal, never frozen; N stops one below the fewest bits
    assert not steady.frozen and steady.value == 1.0 and steady.bits == 2


def test_the_search_freezes_an_oscillating_bit_width():
    # Activations at 1 to 4 bits: at 2 → 1 the loss rises steeply, at 3 → 2 less than λ saves, so
    # ⌈N_a⌉ swings between 2 and 3 until the rule fixes it at 3. Weights have one choice: frozen.
    layers = layer_registry(user_models.mlp(), (12,))
    problem = build_problem(layers, np.zeros(3), 1.0, w_bits=(4,), a_bits=(1, 2, 3, 4), fixed={})
    result = _search(problem, lam=2.0, init_a_bits=3.5, a_lr=2.0, epochs=4, oscillations=3)
    assert result.details["a_frozen_at_step"] is not None and result.details["w_frozen_at_step"] == [None, None, None]
    assert set(result.found.a_bits) == {3} and all(h.w_frozen for h in result.history)
    frozen = [h.n_a for h in result.history if h.a_frozen]
    assert frozen and len(set(frozen)) == 1  # N_a stands still once frozen


def test_found_bits_over_the_budget_are_projected_to_the_nearest_configuration_within_it():
    layers = layer_registry(user_models.mlp(), (12,))
    budget = round(model_size_mb(layers, [2, 2, 2]) + 1e-4, 6)  # room for a few layers' extra bits, not all
    result = _search(_problem(budget), lam=0.0)  # λ = 0: the loss alone keeps the most bits
    assert result.found.w_bits == (4, 4, 4) and result.found.size_mb > budget
    assert result.projected and result.allocation.size_mb <= budget
    assert model_size_mb(layers, result.allocation.w_bits) <= budget
    fitting = [bits for bits in itertools.product((2, 3, 4), repeat=3) if model_size_mb(layers, bits) <= budget]
    nearest = min(sum((4 - b) ** 2 for b in bits) for bits in fitting)
    assert len(fitting) > 1 and sum((4 - b) ** 2 for b in result.allocation.w_bits) == nearest
    record = result.record(model="mlp")
    assert record["adaqat"]["projected"] and record["adaqat"]["found_bits"] == [4, 4, 4]
    assert record["bits"] == list(result.allocation.w_bits) and record["act_bits"] == 8
    loose = _search(_problem(1.0), lam=0.0)
    assert not loose.projected and loose.allocation.w_bits == loose.found.w_bits == (4, 4, 4)


def test_a_bops_budget_lowers_the_activation_bits_when_the_weights_cannot_meet_it():
    layers = layer_registry(user_models.mlp(), (12,))
    bops = model_bops(layers, [2, 2, 2], 4)  # the found A8 cannot meet it at any weight bits; A4 can
    result = _search(_problem(1.0, a_bits=(2, 4, 8), bops=bops), lam=0.0)
    assert set(result.found.a_bits) == {8} and result.projected
    assert set(result.allocation.a_bits) == {4} and result.allocation.bops <= bops


def test_the_search_is_deterministic():
    records = []
    for _ in range(2):
        record = _search(_problem(a_bits=(2, 4, 8)), lam=1.0, epochs=2).record(model="mlp")
        record["adaqat"].pop("search_seconds")
        record.pop("seconds")
        records.append(record)
    assert records[0] == records[1]


def test_mpq_adaqat_writes_a_bits_file_with_its_activation_bits_that_quantize_accepts(trained_mlp, capsys):
    layers = layer_registry(user_models.mlp(), (12,))
    budget = round(model_size_mb(layers, [8, 3, 8]), 6)  # first and last fixed at 8: the middle layer gets ≤ 3
    assert (
        main(
            [
                "mpq",
                "--method",
                "adaqat",
                *trained_mlp,
                "--size-mb",
                str(budget),
                "--epochs",
                "2",
                "--batch-size",
                "32",
                "--act-bits",
                "4,6,8",
                "--bitops-lambda",
                "0.5",
                "--out",
                "alloc.json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert [l.split(":")[0] for l in lines] == ["[adaqat] epoch 1/2", "[adaqat] epoch 2/2"]
    assert all("N_w" in l and "N_a" in l and "task loss" in l and "BitOPs" in l for l in lines)
    assert "wrote alloc.json" in captured.out and "search" in captured.out
    record = json.loads(Path("alloc.json").read_text())
    assert record["proxy"] == "adaqat" and record["bits"][0] == record["bits"][2] == 8
    assert record["bits"][1] in (2, 3) and model_size_mb(layers, record["bits"]) <= budget
    assert record["act_bits"] in (4, 6, 8) and record["adaqat"]["lam"] == 0.5
    assert record["adaqat"]["found_act_bits"] == record["act_bits"] and record["adaqat"]["train_images"] == 192
    assert main(["quantize", *trained_mlp, "--bits-file", "alloc.json"]) == 0
    assert f"quantized, A{record['act_bits']}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--method", "edmips", "--bitops-lambda", "1"],
            "--bitops-lambda is an option of --method adaqat, not of edmips",
        ),
        (["--method", "adaqat", "--gamma", "1"], "--gamma is an option of --method edmips, seam, smpq, not of adaqat"),
        (["--method", "adaqat", "--w-lr", "0"], "--w-lr must be a finite number above 0, got 0.0"),
        (["--method", "adaqat", "--oscillations", "0"], "--oscillations must be a whole number at least 1"),
        (
            ["--method", "adaqat", "--init-w-bits", "9"],
            "--init-w-bits must be from 1 (one below the fewest bit choice)",
        ),
        (["--method", "adaqat", "--act-bits", "4,x"], "--act-bits takes comma-separated bit-widths"),
    ],
)
def test_mpq_adaqat_one_line_errors(trained_mlp, one_line_error, flags, message):
    assert main(["mpq", *trained_mlp, "--size-mb", "1", *flags]) == 2
    one_line_error(message)
    assert not Path("alloc.json").exists()
