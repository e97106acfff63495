"""Declarative search spaces: the shipped three, user files, errors, and that adding an operation
or a space needs no engine change."""

import random
from collections import Counter

import pytest
import torch
from synthetic_stats import scalar_stats, tiny_conv_stats

from evoproxy import primitives
from evoproxy.errors import EvoproxyError
from evoproxy.proxy import AGGREGATE, BINARY, INPUT, UNARY, available_spaces, load_space, sample_genome, space_violation

SPACE = """
name = "tiny"
inputs = ["W", "G"]
n_inputs = 2
n_nodes = 1
chain_length = 1
tail_length = 0
unary = ["no_op", "abs", "sum"]
binary = ["mul"]
aggregations = ["mean"]
"""


def _write(tmp_path, text: str | bytes):
    path = tmp_path / "space.toml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_shipped_spaces_have_the_paper_structures():
    assert available_spaces() == ["bitaware", "branched", "dag", "measured", "sequential", "structural"]
    roles = {
        name: Counter(role for _, role in load_space(name).skeleton().nodes(data="role")) for name in available_spaces()
    }
    assert roles["sequential"] == {INPUT: 1, UNARY: 4, AGGREGATE: 1}
    assert roles["branched"] == roles["bitaware"] == roles["measured"] == roles["structural"]
    assert roles["branched"] == {INPUT: 2, UNARY: 4, BINARY: 1, AGGREGATE: 1}
    assert set(load_space("bitaware").choices[INPUT]) == set(load_space("branched").choices[INPUT]) | {"Q"}
    measured = set(load_space("measured").choices[INPUT])
    assert measured == set(load_space("bitaware").choices[INPUT]) | {"MSE", "KL", "TAYLOR"}
    assert set(load_space("structural").choices[INPUT]) == measured | {"NORM", "DEPTH", "FANIN", "GROUPED", "HEAD"}
    # DAG: 3 nodes combining 2, 3 and 4 predecessors, one unary op per edge.
    assert roles["dag"] == {INPUT: 2, UNARY: 9, BINARY: 6, AGGREGATE: 1}
    branched = load_space("branched")
    assert set(branched.choices[UNARY]) == {n for n, op in primitives.OPS.items() if op.arity == 1}
    assert set(branched.choices[AGGREGATE]) == {n for n, op in primitives.OPS.items() if op.reduces}


def test_a_space_file_restricts_sampling(tmp_path):
    space = load_space(_write(tmp_path, SPACE))
    rng = random.Random(0)
    for _ in range(100):
        genome = sample_genome(space, rng)
        assert space_violation(genome, space) is None
        assert set(genome.names) <= {"W", "G", "no_op", "abs", "sum", "mul", "mean"}


def test_osp_weights_from_the_file_steer_sampling(tmp_path):
    space = load_space(_write(tmp_path, SPACE + "[osp]\nabs = 20.0\n"))
    counts = {}
    for osp in (True, False):
        rng = random.Random(0)
        counts[osp] = Counter(n for _ in range(300) for n in sample_genome(space, rng, osp).names)["abs"]
    # abs is one of three unary options at two nodes: about 200 of 600 draws uniformly,
    # about 20/22 of them with OSP (sum, a reduction, stays possible).
    assert counts[True] > 450 and 120 < counts[False] < 280


@pytest.mark.parametrize(
    "text, message",
    [
        (SPACE.replace('"abs"', '"absolute"'), "unknown unary operation absolute"),
        (SPACE.replace("chain_length = 1", "chain_length = -1"), "chain_length"),
        (SPACE.replace("n_nodes = 1", "n_nodes = 0"), "exactly one input"),
        (SPACE.replace('aggregations = ["mean"]', 'aggregations = ["abs"]'), "unknown aggregation abs"),
        (SPACE + "[osp]\nabs = -1\n", "positive finite weights"),
        (SPACE + "[osp]\nabs = nan\n", "positive finite weights"),
        (SPACE + "[osp]\nabs = inf\n", "positive finite weights"),
        # EMQ's DAG with 300 intermediate nodes: refused from its counts, before a skeleton is built.
        (SPACE.replace("n_nodes = 1", "n_nodes = 300"), "too large, 90603 nodes \\(bound 512\\)"),
        (SPACE.replace("n_nodes = 1", "n_nodes = 1000000000000000000"), "too large, .* nodes \\(bound 512\\)"),
        # Eight DAG nodes are few nodes, but each value feeds every later node: the formula doubles per node.
        (SPACE.replace("n_nodes = 1", "n_nodes = 8"), "more than 512 terms written out"),
        (SPACE.replace("tail_length = 0", "tail_length = 40"), "44 operations deep \\(bound 32\\)"),
        (
            SPACE.replace("n_inputs = 2", "n_inputs = 1")
            .replace("chain_length = 1", "chain_length = 0")
            .replace("n_nodes = 1", "n_nodes = 2"),
            "combine a value with itself",
        ),
        ("a = " + "[" * 5000, "nested too deeply"),
        (b"\xff\xfe name", "not valid TOML"),
        (SPACE.replace("chain_length", "chain_lenght"), "unknown key.*chain_lenght"),
        (SPACE.replace("n_inputs = 2", "n_inputs = "), "not valid TOML"),
    ],
)
def test_bad_space_files_give_one_line_errors(tmp_path, text, message):
    with pytest.raises(EvoproxyError, match=message) as info:
        load_space(_write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_the_largest_space_within_the_bounds_samples_genomes_within_them(tmp_path):
    space = load_space(_write(tmp_path, SPACE.replace("n_nodes = 1", "n_nodes = 7")))  # 7 DAG nodes: 447 terms
    genome = sample_genome(space, random.Random(0))
    assert len(genome.names) == 66 and len(genome.formula()) < 20_000


def test_unknown_space_name():
    with pytest.raises(EvoproxyError, match="sequential, branched|branched, dag"):
        load_space("tree")


def test_adding_an_operation_is_one_definition():
    @primitives.primitive("cube_test", template="{0}³", sympy=lambda x: x**3, domain="all reals")
    def cube_test(x: torch.Tensor) -> torch.Tensor:
        return x * x * x

    try:
        space = load_space("sequential")  # "all" unary ops: the new one included
        assert "cube_test" in space.choices[UNARY]
        rng = random.Random(0)
        genome = next(g for g in (sample_genome(space, rng) for _ in range(2000)) if "cube_test" in g.names)
        stats = tiny_conv_stats()
        result = genome.evaluate(stats)
        assert result.values is not None
        assert "³" in genome.formula() and "def cube_test" in genome.to_python()
    finally:
        del primitives.OPS["cube_test"]


def test_structure_inputs_are_scalars_that_samples_never_reduce_and_hand_made_statistics_lack():
    from evoproxy.proxy import Genome, prepare_inputs
    from evoproxy.proxy.graph import infer_kinds

    space, rng = load_space("structural"), random.Random(0)
    structure = {"NORM", "DEPTH", "FANIN", "GROUPED", "HEAD"}
    samples = [sample_genome(space, rng) for _ in range(500)]
    reading = [g for g in samples if structure & set(g.names)]
    assert len(reading) > 100 and all(not isinstance(infer_kinds(g.graph, g.names), str) for g in samples)
    for g in reading:
        kinds = infer_kinds(g.graph, g.names)
        assert all(kinds[n] == primitives.SCALAR for n, name in enumerate(g.names) if name in structure)
    # Statistics made by hand hold no structure: a proxy that reads it is invalid there, not wrong.
    genome = next(g for g in reading if not {"Q", "MSE", "KL", "TAYLOR"} & set(g.names))
    assert "NORM" not in prepare_inputs(scalar_stats())[0] and "NORM" in prepare_inputs(tiny_conv_stats())[0]
    with pytest.raises(EvoproxyError):
        Genome.from_json(genome.to_json()).sensitivities(scalar_stats())
