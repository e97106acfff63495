"""Statistics computed as needed: without the Hessian for proxies that do not read it (most of
the cost saved), the first run's time estimate, and what is kept of each layer's activation."""

import math

import torch

from evoproxy.cli import main
from evoproxy.proxy import FunctionProxy, genome_form, get_proxy, needs_hessian
from evoproxy.stats import StatsSettings, compute_stats, load_or_compute_stats
from synthetic_stats import tiny_conv_net

FAST = StatsSettings(hutchinson_samples=4, power_iters=3)


def _batch():
    torch.manual_seed(0)
    return tiny_conv_net(), torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))


def test_without_the_hessian_the_other_statistics_are_the_same():
    model, x, y = _batch()
    full = compute_stats(model, x, y, "tiny", FAST)
    lean = compute_stats(model, x, y, "tiny", StatsSettings(hutchinson_samples=4, power_iters=3, hessian=False))
    for a, b in zip(full.layers, lean.layers):
        assert torch.equal(a.W, b.W) and torch.equal(a.G, b.G) and torch.equal(a.A, b.A) and torch.equal(a.V, b.V)
        assert all(torch.equal(a.Q[k], b.Q[k]) for k in a.Q)
        assert torch.isnan(b.H).all() and math.isnan(b.hessian_trace) and math.isnan(b.hessian_eig)
        assert torch.isfinite(a.H).all()
    assert "H diag+trace" in full.timings and "H diag+trace" not in lean.timings


def test_a_cached_entry_with_the_hessian_serves_a_request_without_it(tmp_path):
    model, x, y = _batch()
    lean_settings = StatsSettings(hutchinson_samples=4, power_iters=3, hessian=False)
    lean, hit = load_or_compute_stats(model, x, y, "tiny", lean_settings, tmp_path)
    assert not hit and math.isnan(lean.layers[0].hessian_trace)
    full, hit = load_or_compute_stats(model, x, y, "tiny", FAST, tmp_path)  # a lean entry does not serve this
    assert not hit and math.isfinite(full.layers[0].hessian_trace)
    served, hit = load_or_compute_stats(model, x, y, "tiny", lean_settings, tmp_path)
    assert hit and served.layers[0].hessian_trace == full.layers[0].hessian_trace


def test_which_proxies_need_the_hessian():
    assert [needs_hessian(get_proxy(n)) for n in ("fisher", "snip", "synflow", "mean-bits", "bparams", "qe")] == [
        False
    ] * 6
    assert all(needs_hessian(get_proxy(n)) for n in ("hawq", "hawq-v2", "evoproxy-zoo"))
    assert needs_hessian(genome_form("hawq-v2")) and not needs_hessian(genome_form("fisher"))
    assert needs_hessian(FunctionProxy(lambda s: [1.0], "mine"))  # a user's function may read anything


def test_allocate_computes_the_hessian_only_for_a_proxy_that_reads_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = [
        "allocate",
        "--model",
        "synthetic_stats:tiny_fmnist_net",
        "--batch-size",
        "8",
        "--hutchinson-samples",
        "4",
        "--power-iters",
        "3",
        "--size-mb",
        "0.001",
        "--fixed",
        "none",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main([*base, "--proxy", "fisher"]) == 0
    err = capsys.readouterr().err
    assert "gradients and activations done" in err and "Hutchinson" not in err
    assert main([*base, "--proxy", "hawq-v2"]) == 0
    err = capsys.readouterr().err
    assert "s per Hutchinson sample; at most 4 samples" in err and "Hutchinson diagonal and trace done" in err
    assert main([*base, "--proxy", "snip"]) == 0  # now served by the entry that has the Hessian
    assert "gradients and activations done" not in capsys.readouterr().err


def test_conv1d_outputs_are_subsampled_along_their_length_and_linear_outputs_kept():
    import user_models

    x, y = user_models.signals(16)
    stats = compute_stats(
        user_models.conv1d(), x, y, "c1", StatsSettings(hutchinson_samples=2, power_iters=2, act_max_elems=1024)
    )
    first, depthwise, head = (layer.A for layer in stats.layers)
    assert first.shape == (16, 8, 8) and depthwise.shape == (16, 8, 8)  # length 32 every 4th: 1024 elements
    assert head.shape == (16, 3)
