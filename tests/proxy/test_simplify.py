"""The simplification of a genome (issue 12, item 5): exact rewrites keep every value, pruning keeps
the fitness, a genome with nothing to take out comes back unchanged, and a run's report offers the
shorter proxy."""

import json

import numpy as np
import pytest
import sympy as sp
import torch

from evoproxy.cli import main
from evoproxy.errors import EvoproxyError, ParameterError
from evoproxy.proxy import Genome, get_proxy, load_space, prepare_inputs, rewrite, simplify, space_violation
from evoproxy.evolve import full_report, search_fitness
from evoproxy.evolve.fitness import CSPSettings, FitnessTask
from synthetic_stats import tiny_conv_stats

# (genome, what the exact rewrites leave); the element-wise ones are identities sympy proves.
ELEMENTWISE = [
    (("sum", ("abs", ("abs", "W"))), ("sum", ("abs", "W"))),
    (("sum", ("relu", ("relu", "G"))), ("sum", ("relu", "G"))),
    (("sum", ("abs", ("square", "G"))), ("sum", ("square", "G"))),
    (("sum", ("relu", ("exp", "W"))), ("sum", ("exp", "W"))),
    (("sum", ("sign", ("sign", "W"))), ("sum", ("sign", "W"))),
    (("sum", ("neg", ("neg", "W"))), ("sum", "W")),
    (("sum", ("square", ("neg", "W"))), ("sum", ("square", "W"))),
    (("sum", ("sqrt", ("abs", "G"))), ("sum", ("sqrt", "G"))),
    (("sum", ("abslog", ("neg", "W"))), ("sum", ("abslog", "W"))),
    (("sum", ("log", ("relu", "G"))), ("sum", ("log", "G"))),
    (("sum", ("mul", ("no_op", "G"), ("abs", ("abs", "W")))), ("sum", ("mul", "G", ("abs", "W")))),
]
# EMQ's equation 5 with −V for V, which abslog ignores: a genome of the branched space.
EMQ_WITH_NEG = ("sum", ("mul", ("abslog", ("neg", "V")), ("sqrt", ("l1_mean", "W"))))
TRUTH = ("sum", ("mul", ("abs", "W"), ("sqrt", "G")))  # what the stand-in bench's accuracy follows
WHOLE_TENSOR = [  # opaque to sympy: checked on the statistics only
    (("sum", ("l1_mean", ("neg", "W"))), ("l1_mean", "W")),  # and Σ of the scalar goes
    (("sum", ("mul", ("mean", ("max", "W")), "G")), ("sum", ("mul", ("max", "W"), "G"))),
    (("sum", ("max", "W")), ("max", "W")),  # the output's reduction of a scalar: the inner one aggregates
]


@pytest.fixture(scope="module")
def stats():
    return tiny_conv_stats()


@pytest.fixture(scope="module")
def fitness(stats):
    """Fitness on 60 random configurations of the tiny net's 3 layers whose 'accuracy' is TRUTH's
    score (a stand-in bench, on which TRUTH has fitness 1), with the run's rejection rules but the
    conflict rule."""
    bits = np.random.default_rng(0).integers(2, 9, size=(60, 3)).astype(float)
    task = FitnessTask(bits, bits @ Genome.from_expression(TRUTH).sensitivities(stats).numpy())
    inputs = prepare_inputs(stats)
    calls = []

    def judge(genome: Genome) -> float | None:
        calls.append(genome)
        outcome = task.judge(genome, inputs, CSPSettings(conflict=False))
        return outcome.fitness if outcome.ok else None

    judge.calls = calls
    return judge


@pytest.mark.parametrize(
    "expr, expected",
    ELEMENTWISE + WHOLE_TENSOR,
    ids=lambda e: Genome.from_expression(e).formula() if isinstance(e, tuple) and isinstance(e[0], str) else None,
)
def test_an_exact_identity_is_removed_and_every_value_is_unchanged(stats, expr, expected):
    genome, want = Genome.from_expression(expr), Genome.from_expression(expected)
    simplified, steps = rewrite(genome)
    assert simplified == want and simplified.complexity < genome.complexity and steps
    assert torch.allclose(simplified.sensitivities(stats), genome.sensitivities(stats), rtol=1e-12, atol=0)
    bits = torch.randint(2, 9, (20, 3), generator=torch.Generator().manual_seed(0)).double()
    assert torch.allclose(simplified.score(stats, bits), genome.score(stats, bits), rtol=1e-12, atol=0)


@pytest.mark.parametrize("expr, expected", ELEMENTWISE)
def test_the_elementwise_rewrites_are_identities_sympy_proves(expr, expected):
    assert sp.simplify(Genome.from_expression(expr).to_sympy() - Genome.from_expression(expected).to_sympy()) == 0


def test_a_rewrite_within_a_space_makes_a_no_op_and_keeps_the_genome_in_the_space(stats):
    space = load_space("branched")
    genome = Genome.from_expression(EMQ_WITH_NEG, space="branched")
    assert space_violation(genome, space) is None
    simplified, steps = rewrite(genome, space)
    assert space_violation(simplified, space) is None and simplified.space == "branched"
    assert simplified.names == ["V", "no_op", "abslog", "W", "l1_mean", "sqrt", "mul", "sum"]
    assert simplified.complexity == genome.complexity - 1 and steps == [
        "neg removed: neg under an operation that ignores the sign (exact)"
    ]
    assert torch.equal(simplified.sensitivities(stats), genome.sensitivities(stats))


@pytest.mark.parametrize(
    "expr, expected",
    [
        # f + 0·g: the second operand is exactly zero, so the branch goes
        (("sum", ("add", ("square", "W"), ("sub", ("abs", "G"), ("abs", "G")))), ("sum", ("square", "W"))),
        # f + f = 2f ranks every configuration as f does
        (("sum", ("add", ("abs", "W"), ("abs", "W"))), ("sum", ("abs", "W"))),
    ],
)
def test_a_redundant_branch_is_pruned_with_the_fitness_unchanged(fitness, expr, expected):
    calls = len(fitness.calls)
    result = simplify(Genome.from_expression(expr), fitness)
    assert result.genome == Genome.from_expression(expected)
    assert result.fitness_after == pytest.approx(result.fitness_before, abs=1e-12) and result.shorter
    assert result.evaluations == len(fitness.calls) - calls  # each distinct genome judged once
    assert result.in_space is None and result.to_dict()["complexity"] == result.genome.complexity


def test_a_pruned_branch_leaves_the_space_and_the_result_says_so(fitness):
    space = load_space("branched")
    genome = Genome.from_expression(("sum", ("add", ("no_op", ("abs", "W")), ("no_op", ("abs", "W")))), "branched")
    assert space_violation(genome, space) is None
    result = simplify(genome, fitness, space)
    assert result.genome == Genome.from_expression(("sum", ("abs", "W")))  # no_ops contracted outside the space
    assert result.in_space is False and result.outside == "its graph is not the branched skeleton"
    assert result.genome.space is None and result.fitness_after == pytest.approx(result.fitness_before, abs=1e-12)


def test_a_genome_with_no_redundancy_is_returned_unchanged(fitness):
    genome = Genome.from_expression(TRUTH)
    result = simplify(genome, fitness)
    assert result.genome is genome and not result.shorter and result.steps == ()
    assert result.fitness_before == pytest.approx(1.0) and result.fitness_after == result.fitness_before
    # itself, and |W|, sqrt(|G|) and mul each replaced by an operand (Σ must stay: its operand does not reduce)
    assert result.evaluations == 5


def test_a_tolerance_lets_the_fitness_drop_that_far_and_the_budget_is_kept(fitness):
    genome = Genome.from_expression(TRUTH)
    loose = simplify(genome, fitness, tolerance=0.5)
    assert loose.shorter and 0.5 <= loose.fitness_after < 1.0
    assert simplify(genome, fitness, tolerance=1.0, max_evaluations=2).evaluations <= 2
    with pytest.raises(EvoproxyError, match="tolerance"):
        simplify(genome, fitness, tolerance=-0.1)


@pytest.mark.parametrize("bad", [{"tolerance": float("inf")}, {"max_evaluations": 1}])
def test_settings_out_of_range_name_the_parameter(fitness, bad):
    with pytest.raises(ParameterError) as info:
        simplify(Genome.from_expression(TRUTH), fitness, **bad)
    assert (info.value.owner, info.value.param) == ("simplify", *bad)


def test_a_genome_the_fitness_rejects_is_only_rewritten(fitness):
    # |W| under sign is all ones on these statistics: rejected as invalid, so nothing to compare with
    genome = Genome.from_expression(("mean", ("sign", ("abs", ("abs", "W")))))
    result = simplify(genome, fitness)
    assert result.fitness_before is None and result.genome == Genome.from_expression(("mean", ("sign", ("abs", "W"))))


@pytest.mark.slow
@pytest.mark.usefixtures("shared_stats_cache")
def test_the_report_shows_the_simplified_formula_and_offers_it(tmp_path, capsys):
    # A run started from EMQ's equation 5 written with a redundant −: the fittest of its first population.
    start = Genome.from_expression(EMQ_WITH_NEG, space="branched")
    start.save(tmp_path / "start.json")
    assert (
        main(
            [
                "evolve",
                "--preset",
                "paper",
                "--population",
                "4",
                "--iterations",
                "0",
                "--samples",
                "30",
                "--select-top",
                "0",
                "--seed",
                "0",
                "--init",
                str(tmp_path / "start.json"),
                "--runs-dir",
                str(tmp_path),
                "--name",
                "r",
                "--no-report",
                "--log-every",
                "0",
            ]
        )
        == 0
    )
    run = tmp_path / "r"
    assert Genome.load(run / "best.json") == start
    text, data = full_report(run, transfer=[])
    simplified = data["simplified"]
    assert simplified["shorter"] and simplified["complexity"] < simplified["complexity_before"] == 8
    assert simplified["fitness"] >= simplified["fitness_before"] and simplified["in_space"] is not None
    assert simplified["formula"] in text and "the run's result stays its best proxy" in text
    assert "simplified (offered)" in text and set(simplified["held_out"]) == {"fmnist-resnet20-w234"}
    assert json.loads((run / "report.json").read_text())["simplified"]["formula"] == simplified["formula"]
    offered = get_proxy(str(run / "simplified.json"))
    assert offered.formula() == simplified["formula"] and offered.name == "r-simplified"
    assert Genome.load(run / "best.json") == start  # the run's result is left as it was
    fit, n = search_fitness(["fmnist-resnet20-w234"])
    assert simplified["configurations"] == n and fit(offered) == pytest.approx(simplified["fitness"])
    capsys.readouterr()
    assert main(["show", str(run), "--simplified"]) == 0
    out = capsys.readouterr().out
    assert simplified["formula"] in out and f"complexity 8 → {simplified['complexity']}" in out
    assert main(["show", str(run), "--simplified", "--tolerance", "-1"]) == 2
    assert "--tolerance must be" in capsys.readouterr().err
