"""Allocation values from any proxy (handcrafted, evolved genome, user function): its
sensitivities where it scores Σ_l b_l·s_l (EMQ eq. 3), else a value table read off its own
bit-dependent `score` (e.g. HAWQ-V2's Hessian-weighted perturbation), one entry per layer and
weight bit choice.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral

import numpy as np
import torch

from ..errors import EvoproxyWarning
from ..proxy import FunctionProxy, Genome, Proxy
from ..stats import ModelStats, quant_errors
from .problem import AllocationProblem, build_problem

# `score` implementations that are exactly Σ_l b_l·s_l of the proxy's sensitivities.
LINEAR_SCORES = (FunctionProxy.score, Genome.score)


def scores_linearly(proxy: Proxy) -> bool:
    """Whether `proxy` scores a configuration as Σ_l b_l·s_l, so its sensitivities are the values
    (not a genome that reads per-bit inputs: its score is Σ_l s_l(b_l))."""
    return getattr(type(proxy), "score", None) in LINEAR_SCORES and not getattr(proxy, "bit_aware", False)


def proxy_values(
    proxy: Proxy, stats: ModelStats, w_bits: Sequence[int], log: Callable[[str], None] | None = None
) -> np.ndarray:
    """What `build_problem` takes as scores for `proxy` on `stats` (L layers, n_w = len(w_bits)).

    A proxy that scores linearly gives its sensitivities, shape (L,). Any other gives an
    (L, n_w) table, columns in the order of `w_bits`: entry (l, k) is the proxy's score of the
    configuration with layer l at w_bits[k] and every other layer at min(w_bits), minus its score
    with every layer at min(w_bits). For a score that is a sum of per-layer terms (HAWQ-V2's)
    the table's row sums equal the score up to a constant, so the allocation maximises the score
    itself; for any other score it is the one-layer-at-a-time approximation. `log` gets progress
    while the score computes the quantization errors it reads (`quant_errors.reporting`). Warns
    (EvoproxyWarning) when every layer gets the same values: the proxy then tells the layers apart by nothing."""
    if scores_linearly(proxy):
        values = proxy.sensitivities(stats).detach().double().numpy()
    else:
        with quant_errors.reporting(len(stats.layers), log):
            values = _values_table(proxy, stats, w_bits)
    if len(values) > 1 and (values == values[0]).all():
        warnings.warn(
            f"proxy {proxy.name!r} gives every layer the same sensitivity, so the layers' sizes alone decide "
            "its allocation (the size-only one)",
            EvoproxyWarning,
            stacklevel=2,
        )
    return values


def _values_table(proxy: Proxy, stats: ModelStats, w_bits: Sequence[int]) -> np.ndarray:
    """The (L, n_w) table of `proxy_values` for a proxy that does not score linearly."""
    n, base = len(stats.layers), min(w_bits)
    configs = torch.full((len(w_bits), n, n), base, dtype=torch.float64)  # [k, l] = base, layer l at w_bits[k]
    for k, w in enumerate(w_bits):
        configs[k].fill_diagonal_(w)
    scores = proxy.score(stats, configs.reshape(-1, n)).detach().double().numpy().reshape(len(w_bits), n).T
    return scores - scores[:, [list(w_bits).index(base)]]


def proxy_problem(
    proxy: Proxy,
    stats: ModelStats,
    size_mb: float,
    *,
    bops: float | None = None,
    w_bits: Sequence[int] = (2, 3, 4),
    act_bits: int | Sequence[int] = 8,
    fixed: Mapping[int, int | tuple[int, int]] | None = None,
    log: Callable[[str], None] | None = None,
) -> AllocationProblem:
    """The allocation problem of `proxy` on the layers of `stats` (the model's layer registry):
    `w_bits` weight choices, `act_bits` activation choices (one bit-width: every free layer's),
    budgets and `fixed` as in `build_problem` (size in MB of 10^6 bytes, BOPs per sample), whose
    rule values the activation bits. Sizes count the weights in the format of the statistics'
    quantization error (`stats.settings.weight_format`), scales and zero-points included. `log`
    gets progress lines where the proxy's values take long (`proxy_values`)."""
    layers = [layer.info for layer in stats.layers]
    a_bits = (act_bits,) if isinstance(act_bits, Integral) else tuple(act_bits)
    return build_problem(
        layers,
        proxy_values(proxy, stats, w_bits, log),
        size_mb,
        bops=bops,
        w_bits=w_bits,
        a_bits=a_bits,
        fixed=fixed,
        weight_format=stats.settings.weight_format,
    )
