"""Prepared proxy inputs (evoproxy.proxy.prepare_inputs): a small model's all at once, a large
model's read from its statistics when a proxy reads them, to the same values."""

import random
from collections.abc import Mapping

import torch
from synthetic_stats import tiny_conv_stats

import evoproxy.proxy.inputs as prepared_inputs
from evoproxy.proxy import Genome, LayerInputs, get_proxy, load_space, prepare_inputs, sample_genome


def test_a_large_models_inputs_are_read_when_needed_and_score_as_prepared_ones(monkeypatch):
    eager_stats = tiny_conv_stats()
    eager = prepare_inputs(eager_stats)  # kept while eager_stats lives
    assert all(type(layer) is dict for layer in eager)
    monkeypatch.setattr(prepared_inputs, "PREPARED_BYTES", 0)  # every model is large
    stats = tiny_conv_stats()
    lazy = prepare_inputs(stats)
    assert all(isinstance(layer, LayerInputs) for layer in lazy)
    assert list(lazy[0]) == list(eager[0]) and "Q" in lazy[0] and "nothing" not in lazy[0]
    for name, value in eager[1].items():
        if isinstance(value, Mapping):  # per bit-width
            assert all(torch.equal(lazy[1][name][b], value[b]) for b in value), name
        else:
            assert torch.equal(lazy[1][name], value), name
    rng = random.Random(0)
    genomes = [sample_genome(load_space(space), rng) for space in ("branched", "bitaware") for _ in range(40)]
    genomes.append(Genome.from_expression(("sum", ("mul", ("neg", ("std", "H")), ("exp", "Q")))))
    for genome in genomes:
        a, b = genome.evaluate(eager), genome.evaluate(lazy)
        assert a.reason == b.reason and a.bits == b.bits, genome.formula()
        assert (a.values is None and b.values is None) or torch.equal(a.values, b.values), genome.formula()
    for name in ("fisher", "snip", "ompq", "qe", "hawq-v2"):
        proxy = get_proxy(name)
        assert torch.equal(proxy.sensitivities(stats), proxy.sensitivities(eager_stats)), name
