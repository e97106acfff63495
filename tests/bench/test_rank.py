import itertools

import numpy as np
import pytest
from synthetic_stats import tiny_conv_stats

from evoproxy.bench import Entry, rank_proxy, rho_mean, subsets
from evoproxy.errors import ParameterError
from evoproxy.proxy import HANDCRAFTED


@pytest.fixture(scope="module")
def stats_and_entries():
    stats = tiny_conv_stats()
    rng = np.random.default_rng(0)
    configs = list(itertools.product((2, 3, 4), repeat=3))  # all 27 configurations of the 3 layers
    return stats, [Entry(bits, float(sum(bits) + rng.normal(0, 1.5)), 0.0, 0.0) for bits in configs]


def test_rank_gives_the_paper_protocol_and_the_whole_split_figure(stats_and_entries):
    stats, entries = stats_and_entries
    proxy = HANDCRAFTED["mean-bits"]()
    r = rank_proxy(proxy, stats, entries, samples=10, repeats=4, seed=1)
    acc = np.array([e.value for e in entries])
    draws = [rho_mean(r.scores[idx], acc[idx]) for idx in subsets(len(entries), 10, 4, 1)]
    assert r.rho_mean == pytest.approx(np.nanmean(draws))  # mean over draws of each ρ@k, then over k
    assert r.rho_all == pytest.approx(rho_mean(r.scores, acc))
    assert r.to_dict()["rho_all"] == r.rho_all
    # With every configuration in the single "draw", the two figures are the same number.
    assert rank_proxy(proxy, stats, entries, samples=0).rho_mean == pytest.approx(r.rho_all)


@pytest.mark.parametrize("bad", [{"samples": -1}, {"repeats": 0}, {"seed": -1}])
def test_draws_out_of_range_name_the_parameter(stats_and_entries, bad):
    stats, entries = stats_and_entries
    with pytest.raises(ParameterError) as info:
        rank_proxy(HANDCRAFTED["fisher"](), stats, entries, **bad)
    assert (info.value.owner, info.value.param) == ("rank_proxy", *bad)
