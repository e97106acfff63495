"""The tools' scores as proxies (output-mse, sqnr, kl, taylor from the measured perturbations;
llama.cpp's positional rule): their values, their configuration scores, allocation from them."""

import math

import pytest
import torch
from synthetic_stats import tiny_conv_stats

from evoproxy.allocation import proxy_values
from evoproxy.errors import EvoproxyError
from evoproxy.model import LayerInfo
from evoproxy.proxy import get_proxy
from evoproxy.stats import LayerStats, ModelStats, StatsSettings


@pytest.fixture(scope="module")
def stats():
    return tiny_conv_stats()


def _mean(stats, field, layer, bits):
    return float(getattr(stats.layers[layer], field)[bits].mean())


def test_each_tool_scores_the_sum_of_its_layers_measured_values(stats):
    config = [2, 4, 8]
    expected = {
        "output-mse": -sum(_mean(stats, "MSE", l, b) for l, b in enumerate(config)),
        "sqnr": sum(-10 * math.log10(_mean(stats, "MSE", l, b)) for l, b in enumerate(config)),
        "kl": -sum(_mean(stats, "KL", l, b) for l, b in enumerate(config)),
        "taylor": -sum(_mean(stats, "TAYLOR", l, b) for l, b in enumerate(config)),
    }
    for name, value in expected.items():
        assert float(get_proxy(name).score(stats, config)) == pytest.approx(value, rel=1e-9)
        assert get_proxy(name).score(stats, [config, [2, 2, 2]]).shape == (2,)


def test_sensitivities_are_the_damage_at_the_lowest_bit_width(stats):
    assert get_proxy("kl").sensitivities(stats).tolist() == pytest.approx([_mean(stats, "KL", l, 2) for l in range(3)])
    sqnr = get_proxy("sqnr").sensitivities(stats).tolist()
    assert sqnr == pytest.approx([10 * math.log10(_mean(stats, "MSE", l, 2)) for l in range(3)])


def test_a_bit_width_that_was_not_measured_is_refused(stats):
    with pytest.raises(EvoproxyError, match="scores bit-widths 2, 3, 4, 5, 6, 7, 8 only"):
        get_proxy("taylor").score(stats, [2, 4, 16])


def test_a_perturbation_below_the_floor_counts_as_120_db():
    zero = {b: torch.zeros(4, dtype=torch.float64) for b in (2, 4)}
    layers = [
        LayerStats(LayerInfo(i, f"l{i}", "conv", (1, 1, 1, 1), 1, 1), *[torch.ones(1)] * 5, 1.0, 1.0, MSE=zero)
        for i in range(2)
    ]
    stats = ModelStats("zeros", "w", "b", StatsSettings(), layers, 0.0, 1)
    assert float(get_proxy("sqnr").score(stats, [2, 4])) == pytest.approx(240.0)


def test_allocation_reads_the_tools_table(stats):
    values = proxy_values(get_proxy("output-mse"), stats, (2, 4, 8))
    assert values.shape == (3, 3)
    for layer in range(3):  # gain over 2 bits of moving the layer alone to 4 and 8 bits
        base = _mean(stats, "MSE", layer, 2)
        assert values[layer].tolist() == pytest.approx(
            [0.0, base - _mean(stats, "MSE", layer, 4), base - _mean(stats, "MSE", layer, 8)]
        )


@pytest.mark.parametrize(
    "n, more",
    [
        (8, [0, 3, 6, 7]),  # n/8 = 1: first, last, and every third from layer 1 + 2
        (20, [0, 1, 4, 7, 10, 13, 16, 17, 18, 19]),  # llama.cpp with 20 layers: 0-1, 17-19, 4, 7, 10, 13, 16
    ],
)
def test_position_follows_llama_cpps_use_more_bits(n, more):
    layers = [LayerStats(LayerInfo(i, f"l{i}", "conv", (1,), 1, 1), *[torch.ones(1)] * 5, 1.0, 1.0) for i in range(n)]
    stats = ModelStats("n", "w", "b", StatsSettings(), layers, 0.0, 1)
    values = get_proxy("position").sensitivities(stats)
    assert [i for i, v in enumerate(values) if v == 2.0] == more
    assert set(values.tolist()) == {1.0, 2.0}
