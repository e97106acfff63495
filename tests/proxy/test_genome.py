"""Genomes: construction, evaluation and validity, formula / LaTeX, JSON, hashing, variation."""

import io
import json
import math
import random

import matplotlib
import networkx as nx
import pytest
import torch
from synthetic_stats import tiny_conv_stats

from evoproxy.errors import EvoproxyError
from evoproxy.proxy import (
    Genome,
    crossover,
    emq_paper,
    load_space,
    mutate,
    sample_genome,
    space_violation,
    validity_reason,
)

matplotlib.use("Agg")
from matplotlib import mathtext  # noqa: E402  (after choosing the non-interactive backend)


@pytest.fixture(scope="module")
def stats():
    return tiny_conv_stats()


def expr(e, space=None) -> Genome:
    return Genome.from_expression(e, space)


# -- EMQ equation 5 ------------------------------------------------------------------------------


def test_emq_equation_5_prints_as_in_the_paper():
    genome = emq_paper()
    assert genome.formula() == "Σ(log(|V|+ε) · sqrt(Σ|W|/(numel(W)+ε)))"
    assert genome.formula("paper") == "Σ(log(|∂R/∂θ|+ε) · sqrt(Σ|θ|/(numel(θ)+ε)))"
    latex = genome.to_latex("paper")
    assert r"\log{\left(\epsilon + \left|{\frac{\partial \mathcal{R}}{\partial \theta}}\right| \right)}" in latex
    assert r"\sqrt{\frac{\sum \left|\theta\right|}{\operatorname{numel}\left(\theta\right) + \epsilon}}" in latex
    for notation in ("short", "paper"):  # the LaTeX renders (matplotlib's mathtext)
        image = io.BytesIO()
        mathtext.math_to_image(f"${genome.to_latex(notation)}$", image, format="png")
        assert image.getvalue().startswith(b"\x89PNG")


def test_emq_equation_5_is_a_branched_genome_computing_the_formula(stats):
    genome = emq_paper()
    assert space_violation(genome, load_space("branched")) is None
    scale = math.exp(stats.synflow_log_scale)
    expected = [
        float(
            (torch.log(layer.V * scale + 1e-9) * math.sqrt(layer.W.abs().sum().item() / (layer.W.numel() + 1e-9))).sum()
        )
        for layer in stats.layers
    ]
    assert genome.sensitivities(stats).tolist() == pytest.approx(expected, rel=1e-6)


# -- evaluation and validity ---------------------------------------------------------------------


def test_evaluation_gives_reasons_not_exceptions(stats):
    mismatch = expr(("sum", ("add", "W", "A")))
    result = mismatch.evaluate(stats)
    assert result.values is None and result.reason.startswith("shape mismatch in add")
    with pytest.raises(EvoproxyError, match="cannot be evaluated"):
        mismatch.sensitivities(stats)
    constant = expr(("sum", ("softmax", "W")))  # softmax sums to 1 in every layer
    assert constant.evaluate(stats).reason == "constant across layers"
    assert constant.sensitivities(stats).shape == (3,)
    snip = expr(("sum", ("abs", "GxW")))
    assert snip.evaluate(stats).valid


def test_evaluation_does_not_touch_the_statistics(stats):
    before = [(layer.W.clone(), layer.V.clone()) for layer in stats.layers]
    expr(("sum", ("div", ("neg", "W"), ("abslog", "V")))).evaluate(stats)
    assert all(torch.equal(w, layer.W) and torch.equal(v, layer.V) for (w, v), layer in zip(before, stats.layers))


@pytest.mark.parametrize(
    "values, reason",
    [
        ([1.0, float("nan"), 2.0], "not finite (nan or inf)"),
        ([1.0, float("inf"), 2.0], "not finite (nan or inf)"),
        ([3.0, 3.0, 3.0], "constant across layers"),
        ([0.0, 1.0, -1.0], "every value is -1, 0 or 1"),
        ([1.0, 1.0 + 1e-14, 1.0 - 1e-14], "constant across layers"),
        ([0.0, 1.0 + 1e-14, -1.0], "every value is -1, 0 or 1"),
        ([0.0, 0.0, 1e-3], None),
        ([1e-12, 3e-12, -2e-12], None),
        ([1e-20, 1.0, -1.0], "every value is -1, 0 or 1"),
        ([1e308, 1e308, 1.0], "too large: the bit-configuration score overflows"),
        ([0.5, 1.0, -1.0], None),
    ],
)
def test_validity_reason(values, reason):
    assert validity_reason(torch.tensor(values, dtype=torch.float64)) == reason


def test_score_is_bits_times_sensitivities(stats):
    genome = expr(("sum", ("abs", "GxW")))
    s = genome.sensitivities(stats)
    bits = torch.tensor([[2, 4, 8], [8, 8, 8]])
    assert genome.score(stats, bits).tolist() == pytest.approx((bits.double() @ s).tolist())
    with pytest.raises(EvoproxyError, match="one bit-width per layer"):
        genome.score(stats, [4, 4])


# -- construction and JSON -----------------------------------------------------------------------


def test_genome_is_immutable_data():
    genome = emq_paper()
    with pytest.raises(nx.NetworkXError):
        genome.graph.add_node(99)
    data = json.loads(genome.to_json())
    assert data["format"] == "evoproxy-genome" and data["name"] == "emq-paper" and data["space"] == "branched"
    assert Genome.from_dict(data) == genome


def test_json_file_round_trip(tmp_path, stats):
    genome = emq_paper()
    genome.save(tmp_path / "g.json")
    loaded = Genome.load(tmp_path / "g.json")
    assert loaded == genome and loaded.name == "emq-paper" and loaded.wl_hash() == genome.wl_hash()
    assert torch.equal(loaded.sensitivities(stats), genome.sensitivities(stats))


def _data(nodes):
    return {"format": "evoproxy-genome", "version": 1, "nodes": nodes}


@pytest.mark.parametrize(
    "data, message",
    [
        (
            _data(
                [
                    {"id": 0, "role": "input", "name": "__import__('os').system('touch PWNED')", "operands": []},
                    {"id": 1, "role": "aggregate", "name": "sum", "operands": [0]},
                ]
            ),
            "unknown input",
        ),
        (
            _data(
                [
                    {"id": 0, "role": "input", "name": "W", "operands": []},
                    {"id": 1, "role": "aggregate", "name": "eval", "operands": [0]},
                ]
            ),
            "not a known reducing primitive",
        ),
        (
            _data(
                [
                    {"id": 0, "role": "input", "name": "W", "operands": []},
                    {"id": 1, "role": "aggregate", "name": "abs", "operands": [0]},
                ]
            ),
            "not a known reducing primitive",
        ),
        (
            _data(
                [
                    {"id": 0, "role": "input", "name": "W", "operands": []},
                    {"id": 1, "role": "binary", "name": "add", "operands": [0, 0]},
                    {"id": 2, "role": "aggregate", "name": "sum", "operands": [1]},
                ]
            ),
            "distinct ids",
        ),
        (
            _data(
                [
                    {"id": 0, "role": "input", "name": "W", "operands": []},
                    {"id": 1, "role": "unary", "name": "abs", "operands": [2]},
                    {"id": 2, "role": "unary", "name": "abs", "operands": [1]},
                ]
            ),
            "cycle|output node",
        ),
        (
            _data(
                [
                    {"id": 0, "role": "input", "name": "W", "operands": []},
                    {"id": 1, "role": "unary", "name": "sum", "operands": [0]},
                    {"id": 2, "role": "unary", "name": "softmax", "operands": [1]},
                    {"id": 3, "role": "aggregate", "name": "sum", "operands": [2]},
                ]
            ),
            "softmax does not accept a scalar",
        ),
        ({"format": "something else"}, "not an evoproxy genome"),
        ([1, 2], "not an evoproxy genome"),
    ],
)
def test_loading_bad_genomes_fails_cleanly_and_runs_nothing(data, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EvoproxyError, match=message) as info:
        Genome.from_json(json.dumps(data))
    assert "\n" not in str(info.value) and not (tmp_path / "PWNED").exists()


# -- size bounds ---------------------------------------------------------------------------------


def _doubling(k: int) -> dict:
    """W, then k times x → x + log(x): 2k + 2 nodes whose formula doubles with each step."""
    nodes = [{"id": 0, "role": "input", "name": "W", "operands": []}]
    for _ in range(k):
        x = len(nodes) - 1
        nodes += [
            {"id": x + 1, "role": "unary", "name": "log", "operands": [x]},
            {"id": x + 2, "role": "binary", "name": "add", "operands": [x, x + 1]},
        ]
    return _data(nodes + [{"id": len(nodes), "role": "aggregate", "name": "sum", "operands": [len(nodes) - 1]}])


def _chain(k: int) -> dict:
    nodes = [{"id": 0, "role": "input", "name": "W", "operands": []}]
    nodes += [{"id": i, "role": "unary", "name": "abs", "operands": [i - 1]} for i in range(1, k + 1)]
    return _data(nodes + [{"id": k + 1, "role": "aggregate", "name": "sum", "operands": [k]}])


@pytest.mark.parametrize(
    "text, message",
    [
        # 4 KB whose formula would have 2^31 terms: refused before anything formats or hashes it.
        (json.dumps(_doubling(30)), "proxy too large: more than 512 terms written out"),
        (json.dumps(_chain(600)), "proxy too large: 602 nodes \\(bound 512\\)"),
        (json.dumps(_chain(40)), "proxy too large: 42 operations deep \\(bound 32\\)"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        (" " * 300_000 + "{}", "genome JSON of 300002 characters, over the bound of 262144"),
        (
            json.dumps(_data([{"id": 0, "role": "input", "name": "W", "operands": [[[["x"] * 10_000]]]}])),
            "operands must be distinct ids",
        ),
        (json.dumps(_data([{"id": 0, "role": "input", "name": ["W"] * 10_000}])), "bad genome node .*\\.\\.\\."),
    ],
)
def test_genomes_beyond_the_size_bounds_are_refused_in_one_line(text, message):
    with pytest.raises(EvoproxyError, match=message) as info:
        Genome.from_json(text)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_a_genome_within_the_bounds_formats_and_hashes():
    genome = Genome.from_dict(_doubling(7))  # 383 terms
    assert len(genome.formula()) < 5_000 and len(genome.wl_hash()) == 32
    assert Genome.from_dict(_chain(30)).formula() == "Σ(|W|)"  # 32 deep: |·| of a non-negative value prints bare


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b" " * 300_000, "over the bound of 262144 bytes"),
    ],
)
def test_genome_files_that_are_not_text_or_too_large_are_refused(tmp_path, content, message):
    (tmp_path / "g.json").write_bytes(content)
    with pytest.raises(EvoproxyError, match=message):
        Genome.load(tmp_path / "g.json")


# -- hashing -------------------------------------------------------------------------------------


def test_wl_hash_identifies_equivalent_structures():
    h = lambda e: expr(e).wl_hash()  # noqa: E731
    base = ("sum", ("mul", ("abs", "G"), ("sqrt", "W")))
    assert h(base) == h(("sum", ("mul", ("sqrt", "W"), ("abs", "G"))))  # commutative operands swapped
    assert h(("sum", ("add", "G", "W"))) == h(("sum", ("add", "W", "G")))
    assert h(base) == h(("sum", ("mul", ("no_op", ("abs", "G")), ("sqrt", ("no_op", "W")))))  # no_op is identity
    assert h(base) != h(("sum", ("add", ("abs", "G"), ("sqrt", "W"))))  # another binary op
    assert h(base) != h(("sum", ("mul", ("abs", "H"), ("sqrt", "W"))))  # another input
    assert h(base) != h(("sum", ("mul", ("abs", "G"), ("sqrt", "G"))))
    assert h(base) != h(("mean", ("mul", ("abs", "G"), ("sqrt", "W"))))  # another aggregation
    assert h(base) != h(("sum", ("mul", ("sqrt", "G"), ("abs", "W"))))  # unary ops exchanged
    assert h(("sum", ("sub", "G", "W"))) != h(("sum", ("sub", "W", "G")))  # non-commutative: order matters
    assert h(("sum", ("div", "G", "W"))) != h(("sum", ("div", "W", "G")))
    assert h(("sum", ("abs", ("log", "W")))) != h(("sum", ("log", ("abs", "W"))))


# -- variation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("space_name", ["sequential", "branched", "dag"])
def test_sampling_is_seeded_and_inside_the_space(space_name):
    space = load_space(space_name)
    first = [sample_genome(space, random.Random(3)) for _ in range(2)]
    assert first[0] == first[1]
    rng = random.Random(0)
    assert all(space_violation(sample_genome(space, rng), space) is None for _ in range(100))


def test_osp_favours_no_op_and_add():
    space, counts = load_space("branched"), {}
    for osp in (True, False):
        rng = random.Random(0)
        names = [n for _ in range(400) for n in sample_genome(space, rng, osp).names]
        counts[osp] = names.count("no_op"), names.count("add")
    assert counts[True][0] > 1.5 * counts[False][0] and counts[True][1] > 1.5 * counts[False][1]


@pytest.mark.parametrize("space_name", ["sequential", "branched", "dag"])
def test_mutation_changes_one_node_and_stays_in_the_space(space_name):
    space, rng = load_space(space_name), random.Random(0)
    for _ in range(50):
        parent = sample_genome(space, rng)
        names = parent.names
        child = mutate(parent, space, rng)
        assert parent.names == names  # pure
        assert sum(a != b for a, b in zip(names, child.names)) == 1
        assert space_violation(child, space) is None


@pytest.mark.parametrize("space_name", ["sequential", "branched", "dag"])
def test_crossover_mixes_parents_position_by_position(space_name):
    space, rng = load_space(space_name), random.Random(0)
    for _ in range(50):
        a, b = sample_genome(space, rng), sample_genome(space, rng)
        names_a, names_b = a.names, b.names
        c1, c2 = crossover(a, b, space, rng)
        assert (a.names, b.names) == (names_a, names_b)  # pure
        for x, y, u, v in zip(names_a, names_b, c1.names, c2.names):
            assert {u, v} == {x, y}
        assert space_violation(c1, space) is None and space_violation(c2, space) is None


def test_variation_refuses_genomes_of_another_space():
    genome = emq_paper()
    with pytest.raises(EvoproxyError, match="sequential skeleton"):
        mutate(genome, load_space("sequential"), random.Random(0))


def test_latex_of_a_squared_opaque_operation_renders():
    # sympy passes the exponent to the printer of a function raised to a power
    g = Genome.from_expression(("sum", ("square", ("channel_sum", "GxW"))))
    assert g.to_latex().count("^{2}") == 1
    assert "sum_{c}" in g.to_latex()
