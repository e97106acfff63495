"""Bit-aware proxies: the per-bit input Q (the squared weight quantization error at each
bit-width), genomes that read it and score a configuration Σ_l s_l(b_l), HAWQ-V2 as such a
genome, their fitness, allocation and export."""

import importlib.util
import random

import numpy as np
import pytest
import torch
from synthetic_stats import scalar_stats, tiny_conv_stats

from evoproxy import primitives
from evoproxy.allocation import proxy_values, scores_linearly
from evoproxy.bench import rho_mean
from evoproxy.errors import EvoproxyError
from evoproxy.proxy import HANDCRAFTED, Genome, get_genome, get_proxy, load_space, sample_genome
from evoproxy.quant import quantize_weight
from evoproxy.evolve import FitnessTask
from evoproxy.stats import QBITS


@pytest.fixture(scope="module")
def stats():
    return tiny_conv_stats()


def test_q_is_the_squared_quantization_error_of_each_bit_width(stats):
    layer = stats.layers[1]
    assert sorted(layer.Q) == list(QBITS)
    w = layer.W.double()
    for b in QBITS:
        assert torch.equal(layer.Q[b], (quantize_weight(w, b) - w) ** 2)
    totals = [float(layer.Q[b].sum()) for b in QBITS]
    assert totals == sorted(totals, reverse=True) and totals[-1] < 1e-3 * totals[0]  # fewer bits, more error


def test_hawq_v2_is_a_genome_of_the_bitaware_space(stats):
    genome = get_genome("hawq-v2")
    assert genome.bit_aware and genome.space == "bitaware"
    assert load_space("bitaware").choices  # the space exists; the genome lies in it:
    from evoproxy.proxy import space_violation

    assert space_violation(genome, load_space("bitaware")) is None
    bits = torch.tensor([[2, 3, 4], [8, 8, 8], [2, 8, 4], [4, 2, 2]])
    expected = HANDCRAFTED["hawq-v2"]().score(stats, bits)
    # Equal up to float32 rounding: the handcrafted form uses the stored trace, the genome mean(diag H).
    assert torch.allclose(genome.score(stats, bits), expected, rtol=1e-5, atol=0)


def test_a_bit_aware_score_is_the_sum_of_per_layer_values_at_each_layers_bits(stats):
    genome = Genome.from_expression(("sum", ("mul", ("no_op", ("sqrt", "H")), ("no_op", ("no_op", "Q")))))
    bits = torch.tensor([[2, 5, 8], [3, 3, 3]])
    result = genome.evaluate(stats, (2, 3, 5, 8))
    assert result.bits == (2, 3, 5, 8) and result.values.shape == (3, 4)
    manual = [
        sum(float((layer.H.double().abs().sqrt() * layer.Q[b]).sum()) for layer, b in zip(stats.layers, row))
        for row in bits.tolist()
    ]
    assert genome.score(stats, bits).tolist() == pytest.approx(manual, rel=1e-12)
    with pytest.raises(EvoproxyError, match="whole numbers"):
        genome.score(stats, [2.5, 3, 3])
    missing = genome.evaluate(stats, (1, 2))
    assert missing.values is None and "no Q at 1 bits" in missing.reason
    assert "no Q" in genome.evaluate(scalar_stats(3)).reason  # statistics made without Q


def test_fitness_of_a_bit_aware_genome_ranks_its_own_scores(stats):
    rng = np.random.default_rng(0)
    bits = rng.choice([2, 3, 4], size=(40, 3)).astype(float)
    bits[:, 0] = 8
    acc = rng.normal(size=40)
    genome = get_genome("hawq-v2")
    outcome = FitnessTask(bits, acc).judge(genome, stats)
    assert outcome.ok
    assert outcome.fitness == pytest.approx(
        rho_mean(genome.score(stats, torch.as_tensor(bits)).numpy(), acc), abs=1e-12
    )


def test_allocation_takes_a_bit_aware_genomes_value_table(stats):
    genome = get_genome("hawq-v2")
    assert not scores_linearly(genome) and scores_linearly(get_genome("fisher"))
    table = proxy_values(genome, stats, (2, 3, 4))
    direct = genome.evaluate(stats, (2, 3, 4)).values.numpy()
    assert table.shape == (3, 3)
    assert np.allclose(table, direct - direct[:, [0]], rtol=1e-9, atol=1e-12)  # value of each choice over 2 bits


def _import(source: str, path):
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_bit_aware_genomes_export_and_reload_to_the_same_scores(stats, tmp_path):
    space, rng = load_space("bitaware"), random.Random(0)
    bits = torch.tensor([8, 3, 2])
    checked = 0
    while checked < 15:
        genome = sample_genome(space, rng)
        if not genome.bit_aware or not genome.evaluate(stats).valid:
            continue
        checked += 1
        score = genome.score(stats, bits)
        module = _import(genome.to_python(), tmp_path / f"bitaware_{checked}.py")
        assert torch.allclose(module.score(stats, bits.tolist()), score, rtol=1e-12, atol=0), genome
        assert torch.equal(Genome.from_json(genome.to_json()).score(stats, bits), score)


def test_load_inputs_and_its_exported_copy_pass_the_statistics_q_on_unread_and_copy_a_plain_one(stats, tmp_path):
    exported = _import(get_genome("hawq-v2").to_python(), tmp_path / "hawq.py")
    plain = [{"Q": {2: torch.ones(2, dtype=torch.float32)}}]
    for load_inputs in (primitives.load_inputs, exported.load_inputs):
        assert all(x["Q"] is layer.Q for x, layer in zip(load_inputs(stats, ["Q"]), stats.layers))
        (copied,) = load_inputs(plain, ["Q"])
        assert copied["Q"] is not plain[0]["Q"] and copied["Q"][2].dtype == torch.float64


def test_the_shipped_evolved_proxy_is_a_bit_aware_genome(stats):
    zoo = get_proxy("evoproxy-zoo")
    assert isinstance(zoo, Genome) and zoo.bit_aware and zoo.name == "evoproxy-zoo"
    assert get_genome("evoproxy-zoo") == zoo
    bits = torch.tensor([[8, 2, 2], [8, 4, 4]])
    low, high = zoo.score(stats, bits).tolist()
    assert high > low  # more bits, less perturbation, a higher score
