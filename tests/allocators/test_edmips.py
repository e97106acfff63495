"""The competing allocators (evoproxy.allocators). EdMIPS: the expected size is the cost model's at
one-hot preferences and differentiable, the supernet mixes its candidates' LSQ quantizers, a few
epochs lower the task loss and the expected size, γ drives α toward fewer bits, the policy meets
the budget (projected onto it when the argmax does not), and `evoproxy mpq` writes a file that
`evoproxy quantize` reads, with one-line errors."""

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
from evoproxy.allocators import (
    EdmipsSettings,
    SearchData,
    edmips_supernet,
    expected_cost,
    expected_size_mb,
    option_probabilities,
    search_edmips,
)
from evoproxy.model import layer_registry, quantizable_modules
from evoproxy.quant import model_bops, model_size_mb
from synthetic_stats import tiny_conv_net


def _hard_vectors(n: int = 192):
    """user_models.vectors with the classes closer, so that a tiny MLP keeps some loss to lose."""
    x, y = user_models.vectors(n)
    return x * 0.25, y


def _data(train) -> SearchData:
    """`train` (images, labels) to search on, its images to calibrate on, no validation images."""
    return SearchData(train, (train[0][:0], train[1][:0]), train[0])


def _act_probabilities(result) -> np.ndarray:
    """(F, n_a) each free layer's probability per activation bit choice, from the result's layer details."""
    return np.array([list(result.layer_details[i]["act_probabilities"].values()) for i in result.problem.free])


def _mlp_problem(size_mb: float = 1.0, fixed: dict | None = None):
    """An untrained user_models.mlp and its problem: 2, 3 or 4 bits for every layer not in `fixed`."""
    model = user_models.mlp()
    layers = layer_registry(model, (12,))
    return model, build_problem(layers, np.zeros(len(layers)), size_mb, w_bits=(2, 3, 4), fixed=fixed or {})


def test_expected_size_is_the_cost_models_at_one_hot_and_differentiable():
    model = tiny_conv_net()
    layers = layer_registry(model, (1, 6, 6))
    problem = build_problem(layers, np.zeros(3), 1.0, w_bits=(4, 2, 3), fixed={0: 8})
    for choice in ([0, 0], [2, 1], [1, 2]):
        p = torch.nn.functional.one_hot(torch.tensor(choice), 3).double()
        bits = [8] + [int(problem.options[k, 0]) for k in choice]
        assert expected_size_mb(problem, p).item() == pytest.approx(model_size_mb(layers, bits), rel=1e-12)
    alpha = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    expected_size_mb(problem, alpha.softmax(1)).backward()
    # At uniform α: ∂E/∂α_fk = p_k (c_fk − Σ_j p_j c_fj) with p = 1/3 and c the options' sizes in MB.
    cost = torch.as_tensor(problem.size_bits, dtype=torch.float64) / 8e6
    assert torch.allclose(alpha.grad, (cost - cost.mean(1, keepdim=True)) / 3, rtol=1e-12, atol=1e-18)
    assert (alpha.grad[:, 2] > 0).all()  # more bits, more size


def test_the_supernet_mixes_the_candidates_lsq_quantizers_and_leaves_the_model_alone():
    model, problem = _mlp_problem(fixed={0: 8})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    supernet, mixers = edmips_supernet(model, problem, _hard_vectors()[0])
    assert len(mixers) == 2 and all(m.alpha.shape == (3,) for m in mixers)
    modules = dict(quantizable_modules(supernet))
    layer = modules[problem.layers[1].name]
    raw = layer.parametrizations.weight.original
    mixer = mixers[0]  # of layer 1, the first free one
    with torch.no_grad():
        candidates = [q(raw) for q in mixer.quantizers]
        for bits, wq in zip((2, 3, 4), candidates):
            assert max(len(torch.unique(row)) for row in wq) <= 2**bits - 1  # symmetric levels −q..q
        assert torch.allclose(layer.weight, sum(candidates) / 3, atol=1e-7)  # α starts uniform
        mixer.alpha.copy_(torch.tensor([0.0, 30.0, 0.0]))
        assert torch.allclose(layer.weight, candidates[1], atol=1e-6) and not torch.equal(layer.weight, raw)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_a_few_epochs_lower_the_task_loss_and_the_expected_size():
    model, problem = _mlp_problem()
    lines = []
    data = user_models.vectors()
    history = search_edmips(
        model, problem, _data(data), EdmipsSettings(epochs=6, gamma=1.0, batch_size=32, lr=0.05), log=lines.append
    ).history
    assert [l.split(":")[0] for l in lines] == [f"epoch {e}/6" for e in range(1, 7)]
    assert history[-1].task_loss < 0.8 * history[0].task_loss
    assert history[-1].expected_size_mb < history[0].expected_size_mb


@pytest.mark.slow
def test_gamma_moves_the_policy_to_fewer_bits():
    model = user_models.fit(user_models.mlp(), *_hard_vectors())
    results = {}
    for gamma in (0.0, 5.0):
        _, problem = _mlp_problem()
        results[gamma] = search_edmips(
            model,
            problem,
            _data(_hard_vectors()),
            EdmipsSettings(epochs=4, gamma=gamma, batch_size=32),
            log=lambda m: None,
        )
    low, high = results[0.0], results[5.0]
    assert sum(high.allocation.w_bits) < sum(low.allocation.w_bits)
    assert high.allocation.size_mb < low.allocation.size_mb
    two = {g: [r.layer_details[i]["probabilities"]["2"] for i in r.problem.free] for g, r in results.items()}
    assert all(h > l for h, l in zip(two[5.0], two[0.0]))  # every layer prefers 2 bits more


def test_an_argmax_over_the_budget_is_projected_onto_it():
    model = user_models.fit(user_models.mlp(), *_hard_vectors())
    layers = layer_registry(model, (12,))
    smallest = model_size_mb(layers, [2, 2, 2])
    _, problem = _mlp_problem(size_mb=smallest + 1e-4)  # room for a few layers' extra bits, not all
    result = search_edmips(
        model,
        problem,
        _data(_hard_vectors()),
        EdmipsSettings(epochs=2, gamma=0.0, batch_size=32),
        log=lambda m: None,
    )
    assert result.found.size_mb > problem.size_budget_mb  # γ = 0: accuracy alone asks for more bits
    assert result.projected and result.allocation.size_mb <= problem.size_budget_mb
    assert model_size_mb(layers, result.allocation.w_bits) <= problem.size_budget_mb
    # The projection is the most probable configuration within the budget: no fitting one is likelier.
    log_p = np.log([list(result.layer_details[i]["probabilities"].values()) for i in problem.free])
    fitting = [
        bits
        for bits in itertools.product(problem.w_choices, repeat=3)
        if model_size_mb(layers, bits) <= problem.size_budget_mb
    ]
    best = max(fitting, key=lambda bits: sum(log_p[f, problem.w_choices.index(b)] for f, b in enumerate(bits)))
    assert len(fitting) > 1 and result.allocation.w_bits == best


def test_an_infeasible_budget_is_refused_before_training():
    model, problem = _mlp_problem(size_mb=1e-5)
    with pytest.raises(EvoproxyError, match="below the smallest feasible size"):
        search_edmips(model, problem, _data((torch.empty(0), torch.empty(0))))
    with pytest.raises(EvoproxyError, match="EdmipsSettings.gamma must be a finite number at least 0, got nan"):
        EdmipsSettings(gamma=float("nan"))


def test_mpq_writes_a_bits_file_within_the_budget_that_quantize_accepts(trained_mlp, capsys):
    layers = layer_registry(user_models.mlp(), (12,))
    budget = round(model_size_mb(layers, [8, 3, 8]), 6)  # first and last fixed at 8: the middle layer gets ≤ 3
    assert (
        main(
            [
                "mpq",
                "--method",
                "edmips",
                *trained_mlp,
                "--size-mb",
                str(budget),
                "--epochs",
                "2",
                "--batch-size",
                "32",
                "--gamma",
                "0",
                "--out",
                "alloc.json",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert [l.split(":")[0] for l in captured.err.splitlines()] == ["[edmips] epoch 1/2", "[edmips] epoch 2/2"]
    assert "wrote alloc.json" in captured.out
    record = json.loads(Path("alloc.json").read_text())
    assert record["proxy"] == "edmips" and record["bits"][0] == record["bits"][2] == 8
    assert record["bits"][1] in (2, 3) and model_size_mb(layers, record["bits"]) <= budget
    assert record["size_mb"] <= budget and set(record["layers"][1]["probabilities"]) == {"2", "3", "4"}
    assert main(["quantize", *trained_mlp, "--bits-file", "alloc.json"]) == 0
    assert "quantized, A8" in capsys.readouterr().out


def test_mpq_one_line_errors(trained_mlp, one_line_error):
    assert main(["mpq", *trained_mlp, "--size-mb", "0.0001"]) == 2  # below first and last at 8 bits
    one_line_error("size budget 0.0001 MB is below the smallest feasible size")
    assert main(["mpq", *trained_mlp, "--size-mb", "1", "--epochs", "0"]) == 2
    one_line_error("--epochs must be a whole number at least 1, got 0")
    assert main(["mpq", *trained_mlp, "--size-mb", "1", "--train-images", "100000"]) == 2
    one_line_error("--train-images must be between 1 and")
    assert not Path("alloc.json").exists()


def test_mpq_on_the_default_data_says_how_to_get_the_training_split(tmp_path, monkeypatch, one_line_error):
    monkeypatch.chdir(tmp_path)  # conftest points EVOPROXY_FMNIST_DIR at an empty folder
    assert main(["mpq", "--size-mb", "0.1"]) == 2
    one_line_error("train-images-idx3-ubyte", "apt-get install dataset-fashion-mnist")
    assert not Path("alloc.json").exists()


def test_allocate_method_searches_as_mpq_does(trained_mlp, capsys):
    """`allocate --method edmips` is the same search as `mpq --method edmips`: same flags, same bits file."""
    flags = [*trained_mlp, "--size-mb", "1", "--epochs", "2", "--batch-size", "32", "--seed", "3"]
    assert main(["allocate", "--method", "edmips", *flags, "--out", "a.json"]) == 0
    assert main(["mpq", "--method", "edmips", *flags, "--out", "m.json"]) == 0
    assert "[edmips] epoch 2/2" in capsys.readouterr().err
    a, m = (json.loads(Path(f).read_text()) for f in ("a.json", "m.json"))
    assert a["proxy"] == "edmips" and a["bits"] == m["bits"] and a["layers"] == m["layers"]


def test_a_methods_policy_meets_a_bops_budget(trained_mlp):
    layers = layer_registry(user_models.mlp(), (12,))
    bops = model_bops(layers, [8, 2, 8], 8)  # the middle layer must fall to 2 bits whatever α prefers
    assert (
        main(
            [
                "allocate",
                "--method",
                "edmips",
                *trained_mlp,
                "--size-mb",
                "1",
                "--bops-g",
                str(bops / 1e9),
                "--epochs",
                "1",
                "--batch-size",
                "32",
            ]
        )
        == 0
    )
    record = json.loads(Path("alloc.json").read_text())
    assert record["bits"] == [8, 2, 8] and model_bops(layers, record["bits"], 8) <= bops


def test_allocate_keeps_proxies_and_methods_apart(trained_mlp, one_line_error):
    assert main(["allocate", *trained_mlp, "--size-mb", "1"]) == 2
    one_line_error("--method ilp allocates by a proxy: give --proxy")
    assert main(["allocate", "--method", "seam", "--proxy", "fisher", *trained_mlp, "--size-mb", "1"]) == 2
    one_line_error("--method seam searches without a proxy")
    assert main(["allocate", "--proxy", "fisher", *trained_mlp, "--size-mb", "1", "--epochs", "2", "--lam", "1"]) == 2
    one_line_error("--epochs, --lam are options of the search methods", "not of the solver ilp")
    assert not Path("alloc.json").exists()


def _act_problem(bops: float | None = None):
    """user_models.mlp's problem with weights 2, 3 or 4 and activations 4 or 8 bits for the middle
    layer, the first and last fixed at 8 and 8."""
    layers = layer_registry(user_models.mlp(), (12,))
    return build_problem(
        layers, np.zeros(3), 1.0, bops=bops, w_bits=(2, 3, 4), a_bits=(4, 8), fixed={0: (8, 8), 2: (8, 8)}
    )


def test_the_supernet_mixes_activation_bits_and_the_options_probabilities_are_the_product():
    model, problem = user_models.mlp(), _act_problem(bops=1e9)
    x = _hard_vectors()[0]
    supernet, mixers = edmips_supernet(model, problem, x)
    assert [len(m.alpha) for m in mixers] == [3, 2]  # the middle layer's weight, then its input
    layer = dict(quantizable_modules(supernet))[problem.layers[1].name]
    assert layer.act_quantizer is mixers[1]
    inputs = torch.relu(supernet[0](x))  # what the middle layer reads
    with torch.no_grad():
        four, eight = (q(inputs) for q in mixers[1].quantizers)
        assert len(torch.unique(four)) <= 16 < len(torch.unique(eight)) <= 256
        mixers[1].alpha.copy_(torch.tensor([30.0, 0.0]))
        assert torch.allclose(layer.act_quantizer(inputs), four, atol=1e-6)
        mixers[0].alpha.copy_(torch.tensor([30.0, 0.0, 0.0]))
        p = option_probabilities(problem, mixers)
    assert p.shape == (1, 6) and torch.allclose(p.sum(), torch.tensor(1.0))
    assert torch.allclose(p[0], torch.outer(mixers[0].probabilities(), mixers[1].probabilities()).flatten())
    assert tuple(problem.options[p[0].argmax().item()]) == (2, 4)
    # At one-hot preferences the expected cost is the cost model's, relative to the most bits'.
    layers, most = problem.layers, [8, 4, 8]
    want = model_size_mb(layers, [8, 2, 8]) / model_size_mb(layers, most) + model_bops(
        layers, [8, 2, 8], [8, 4, 8]
    ) / model_bops(layers, most, 8)
    assert expected_cost(problem, p.double().round()).item() == pytest.approx(want, rel=1e-9)


@pytest.mark.slow
def test_gamma_under_a_bops_budget_moves_activation_bits_down():
    model = user_models.fit(user_models.mlp(), *_hard_vectors())
    layers = layer_registry(model, (12,))
    results = {
        gamma: search_edmips(
            model,
            _act_problem(bops=model_bops(layers, [8, 4, 8], 8)),
            _data(_hard_vectors()),
            EdmipsSettings(epochs=4, gamma=gamma, batch_size=32),
            log=lambda m: None,
        )
        for gamma in (0.0, 5.0)
    }
    low, high = (_act_probabilities(results[g]) for g in (0.0, 5.0))
    assert high[0, 0] > low[0, 0]  # the middle layer prefers 4-bit inputs more


def test_methods_search_activation_bits_within_a_bops_budget(trained_mlp, capsys):
    layers = layer_registry(user_models.mlp(), (12,))
    bops = model_bops(layers, [8, 3, 8], [8, 4, 8])  # under [8, 2, 8] at A8: the middle layer's input must drop to 4
    for method in ("edmips", "smpq"):
        assert (
            main(
                [
                    "allocate",
                    "--method",
                    method,
                    *trained_mlp,
                    "--size-mb",
                    "1",
                    "--bops-g",
                    str(bops / 1e9),
                    "--act-bits",
                    "4,8",
                    "--epochs",
                    "1",
                    "--batch-size",
                    "32",
                    "--out",
                    f"{method}.json",
                    *(["--val-images", "64", "--samples", "2"] if method == "smpq" else []),
                ]
            )
            == 0
        )
        out = capsys.readouterr().out
        assert "activations 4,8 per layer" in out and "softmax(β) over 4,8" in out
        record = json.loads(Path(f"{method}.json").read_text())
        assert record["act_bits"][1] == 4 and record["act_bits"][0] == record["act_bits"][2] == 8
        assert model_bops(layers, record["bits"], record["act_bits"]) <= bops
        assert set(record["layers"][1]["act_probabilities"]) == {"4", "8"}
    assert main(["quantize", *trained_mlp, "--bits-file", "smpq.json"]) == 0
    assert "quantized, A4–8" in capsys.readouterr().out
