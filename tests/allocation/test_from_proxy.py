"""Allocation values from a proxy: a proxy that tells the layers apart by nothing is said so."""

import warnings

import pytest
from synthetic_stats import tiny_conv_stats

from evoproxy.allocation import allocate, proxy_problem
from evoproxy.errors import EvoproxyWarning
from evoproxy.proxy import FunctionProxy
from evoproxy.quant import model_size_mb


def test_a_proxy_giving_every_layer_the_same_sensitivity_warns_and_still_allocates():
    stats = tiny_conv_stats()
    layers = [layer.info for layer in stats.layers]
    size = (model_size_mb(layers, [2] * len(layers)) + model_size_mb(layers, [4] * len(layers))) / 2
    flat = FunctionProxy(lambda s: [0.5] * len(s.layers), "flat", needs_hessian=False)
    with pytest.warns(EvoproxyWarning) as caught:
        allocation = allocate(proxy_problem(flat, stats, size, fixed={}))
    assert len(caught) == 1 and "'flat' gives every layer the same sensitivity" in str(caught[0].message)
    assert "\n" not in str(caught[0].message)
    assert model_size_mb(layers, allocation.w_bits) <= size
    # A proxy that tells one layer from the others allocates without a word.
    ranked = FunctionProxy(lambda s: [0.5] * (len(s.layers) - 1) + [0.7], "ranked", needs_hessian=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", EvoproxyWarning)
        proxy_problem(ranked, stats, size, fixed={})
