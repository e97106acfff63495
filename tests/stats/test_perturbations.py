"""The measured output perturbations (MSE, KL, TAYLOR per layer, bit-width and sample): equal to
what quantizing one layer by hand does, computed only for proxies that read them, cached."""

import math

import pytest
import torch
from synthetic_stats import tiny_conv_net

from evoproxy.cli import main
from evoproxy.model import TinyLM
from evoproxy.errors import EvoproxyError
from evoproxy.proxy import FunctionProxy, Genome, get_proxy, needs_perturbations, perturbations_around
from evoproxy.quant import WeightFormat, quantize_weight
from evoproxy.stats import PERTURBATIONS, QBITS, StatsSettings, compute_stats, load_or_compute_stats

FAST = StatsSettings(hutchinson_samples=2, power_iters=2)
LEAN = StatsSettings(hutchinson_samples=2, power_iters=2, perturbations=False)


def _batch():
    torch.manual_seed(0)
    return tiny_conv_net(), torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))


@pytest.fixture(scope="module")
def measured():
    model, x, y = _batch()
    return model, x, y, compute_stats(model, x, y, "tiny", FAST)


@pytest.mark.parametrize("layer, bits", [(0, 2), (1, 3), (2, 4)])
def test_perturbations_equal_quantizing_the_layer_by_hand(measured, layer, bits):
    model, x, y, stats = measured
    model = model.eval()
    module = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][layer]
    seen = {}
    handle = module.register_forward_hook(lambda m, a, o: seen.update(x=a[0], y=o))
    reference = model(x)
    handle.remove()
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(reference, y, reduction="sum"), seen["y"])
    float_weight = module.weight.detach().clone()
    with torch.no_grad():
        module.weight.copy_(quantize_weight(float_weight, bits))
        quantized, layer_out = model(x), module(seen["x"])
        module.weight.copy_(float_weight)
    reference = reference.detach()
    mse = ((quantized - reference) ** 2).mean(1) / (reference**2).mean()
    kl = (torch.softmax(reference, 1) * (torch.log_softmax(reference, 1) - torch.log_softmax(quantized, 1))).sum(1)
    taylor = ((grad * (layer_out - seen["y"].detach())) ** 2).flatten(1).sum(1)
    got = stats.layers[layer]
    assert got.MSE[bits].shape == (8,) and got.MSE[bits].dtype == torch.float64
    assert torch.allclose(got.MSE[bits], mse.double(), rtol=1e-4)
    assert torch.allclose(got.KL[bits], kl.double(), rtol=1e-3, atol=1e-9)
    assert torch.allclose(got.TAYLOR[bits], taylor.double(), rtol=1e-4)


def test_every_layer_is_measured_at_every_bit_width_and_the_model_is_untouched(measured):
    model, x, y, stats = measured
    before = [p.clone() for p in model.parameters()]
    compute_stats(model, x, y, "tiny", FAST)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    for layer in stats.layers:
        for name in PERTURBATIONS:
            assert sorted(getattr(layer, name)) == list(QBITS)
        # coarser weights move the outputs more: 2 bits against 8 bits, on average over the batch
        assert float(layer.MSE[2].mean()) > float(layer.MSE[8].mean()) >= 0


@pytest.mark.parametrize("layer, bits", [(0, 2), (2, 4)])
def test_around_a_bit_width_the_other_layers_sit_at_it(measured, layer, bits):
    model, x, y, _ = measured
    model = model.eval()
    layers = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    stats = compute_stats(model, x, y, "tiny", StatsSettings(hutchinson_samples=2, power_iters=2, perturb_around=3))
    float_weights = [m.weight.detach().clone() for m in layers]
    with torch.no_grad():
        reference = model(x)
        for i, (m, w) in enumerate(zip(layers, float_weights)):
            m.weight.copy_(quantize_weight(w, bits if i == layer else 3))
        quantized = model(x)
        for m, w in zip(layers, float_weights):
            m.weight.copy_(w)
    kl = (torch.softmax(reference, 1) * (torch.log_softmax(reference, 1) - torch.log_softmax(quantized, 1))).sum(1)
    got = stats.layers[layer]
    assert torch.allclose(got.KL[bits], kl.double(), rtol=1e-3, atol=1e-9)
    assert torch.allclose(
        got.MSE[bits], (((quantized - reference) ** 2).mean(1) / (reference**2).mean()).double(), rtol=1e-4
    )
    # at its own bit-width every layer measures one model, the uniform one
    assert all(torch.allclose(s.KL[3], stats.layers[0].KL[3]) for s in stats.layers)
    assert torch.equal(got.TAYLOR[bits], measured[3].layers[layer].TAYLOR[bits])  # the layer's own, as before
    assert all(torch.equal(w, m.weight) for w, m in zip(float_weights, layers))


def test_group_format_is_what_is_measured():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    x, y = torch.randn(8, 64), torch.randint(0, 3, (8,))
    settings = StatsSettings(hutchinson_samples=2, power_iters=2, hessian=False)
    channel = compute_stats(model, x, y, "mlp", settings)
    grouped = compute_stats(model, x, y, "mlp", StatsSettings(**{**settings.__dict__, "group_size": 32}))
    # groups of 32 follow the weights more closely than one scale per row, at 2 bits
    assert float(grouped.layers[0].MSE[2].mean()) < float(channel.layers[0].MSE[2].mean())
    assert grouped.settings.weight_format == WeightFormat(32)


def test_a_language_model_is_measured_per_token_window():
    torch.manual_seed(0)
    model = TinyLM(dim=32, blocks=1, heads=2, hidden=64, context=16)
    tokens = torch.randint(0, 256, (4, 16))
    stats = compute_stats(model, tokens, tokens.roll(-1, 1), "lm", StatsSettings(hessian=False))
    for layer in stats.layers:
        assert all(getattr(layer, name)[3].shape == (4,) for name in PERTURBATIONS)
        assert all(bool(torch.isfinite(getattr(layer, name)[3]).all()) for name in PERTURBATIONS)


def test_without_perturbations_the_rest_is_the_same_and_tool_proxies_say_why(measured):
    model, x, y, full = measured
    lean = compute_stats(model, x, y, "tiny", LEAN)
    for a, b in zip(full.layers, lean.layers):
        assert torch.equal(a.W, b.W) and torch.equal(a.G, b.G) and torch.equal(a.H, b.H)
        assert all(torch.equal(a.Q[k], b.Q[k]) for k in a.Q)
        assert a.MSE and not b.MSE and not b.KL and not b.TAYLOR
    assert "output perturbations" in full.timings and "output perturbations" not in lean.timings
    with pytest.raises(Exception, match="sqnr needs the measured output perturbations"):
        get_proxy("sqnr").score(lean, [[2, 2, 2]])
    genome = Genome.from_expression(("sum", ("mul", ("no_op", ("mean", "MSE")), ("no_op", ("mean", "W")))), "measured")
    assert genome.evaluate(lean, (2, 3)).reason.startswith("the statistics hold no MSE at 2 bits")


def test_a_cached_entry_with_perturbations_serves_a_request_without_them(tmp_path):
    model, x, y = _batch()
    lean, hit = load_or_compute_stats(model, x, y, "tiny", LEAN, tmp_path)
    assert not hit and not lean.layers[0].MSE
    full, hit = load_or_compute_stats(model, x, y, "tiny", FAST, tmp_path)  # a lean entry does not serve this
    assert not hit and full.layers[0].MSE
    served, hit = load_or_compute_stats(model, x, y, "tiny", LEAN, tmp_path)
    assert hit and torch.equal(served.layers[1].KL[3], full.layers[1].KL[3])


def test_which_proxies_need_the_perturbations():
    assert all(needs_perturbations(get_proxy(n)) for n in ("output-mse", "sqnr", "kl", "taylor"))
    assert not any(needs_perturbations(get_proxy(n)) for n in ("fisher", "hawq", "hawq-v2", "position", "qe"))
    assert not needs_perturbations(get_proxy("evoproxy-zoo"))
    reads = Genome.from_expression(("sum", ("mul", ("no_op", ("mean", "KL")), ("no_op", ("mean", "W")))), "measured")
    assert needs_perturbations(reads) and not reads.needs_hessian
    assert needs_perturbations(FunctionProxy(lambda s: [1.0], "mine"))  # a user's function may read anything


def test_allocate_measures_perturbations_only_for_a_proxy_that_reads_them(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["allocate", "--model", "synthetic_stats:tiny_fmnist_net", "--batch-size", "8", "--size-mb", "0.001"]
    base += ["--fixed", "none", "--cache-dir", str(tmp_path / "cache")]
    assert main([*base, "--proxy", "fisher"]) == 0
    assert "output perturbations done" not in capsys.readouterr().err
    assert main([*base, "--proxy", "sqnr"]) == 0
    captured = capsys.readouterr()
    assert "output perturbations done" in captured.err and "sqnr" in captured.out


def test_the_stats_table_shows_the_tools_view_of_each_layer(measured):
    model, x, y, stats = measured
    row = stats.table()[1]
    assert row["sqnr_4bit"] == pytest.approx(-10 * math.log10(float(stats.layers[1].MSE[4].mean())))
    assert row["kl_2bit"] == pytest.approx(float(stats.layers[1].KL[2].mean()))
    lean = compute_stats(model, x, y, "tiny", LEAN).table()[1]
    assert math.isnan(lean["sqnr_4bit"]) and math.isnan(lean["kl_2bit"])


class _TiedHead(torch.nn.Module):
    """A residual block, and an output head that also reads the first layer's weight outside its
    call (a tied weight): what the reused float pass must recompute when that layer is quantized."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.mid, self.head = torch.nn.Linear(6, 6), torch.nn.Linear(6, 6), torch.nn.Linear(6, 3)

    def forward(self, x):
        h = self.embed(x)
        h = h + torch.relu(self.mid(h))
        return self.head(h) + (x @ self.embed.weight.t())[:, :3]


@pytest.mark.parametrize("model", [tiny_conv_net, _TiedHead], ids=["conv net", "residual and tied weight"])
def test_the_pass_that_reuses_float_values_measures_what_full_passes_do(model, monkeypatch):
    from evoproxy.quant.sweep import Untraceable
    from evoproxy.stats import perturbation

    torch.manual_seed(1)
    x = torch.randn(8, 1, 6, 6) if model is tiny_conv_net else torch.randn(8, 6)
    y = torch.randint(0, 3, (8,))
    torch.manual_seed(0)
    reused = compute_stats(model(), x, y, "m", FAST)

    def untraceable(m):
        raise Untraceable("full passes")

    monkeypatch.setattr(perturbation, "trace", untraceable)
    torch.manual_seed(0)
    full = compute_stats(model(), x, y, "m", FAST)
    for a, b in zip(reused.layers, full.layers):
        for p in PERTURBATIONS:
            assert all(torch.equal(getattr(a, p)[bits], getattr(b, p)[bits]) for bits in QBITS), (a.info.name, p)


def test_allocate_measures_around_the_bit_width_it_is_told_and_keeps_both_entries(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["allocate", "--model", "synthetic_stats:tiny_fmnist_net", "--batch-size", "8", "--size-mb", "0.001"]
    base += ["--fixed", "none", "--cache-dir", str(tmp_path / "cache"), "--proxy", "kl"]
    assert main([*base, "--perturb-around", "3"]) == 0
    assert "; perturbations measured around 3 bits" in capsys.readouterr().out
    assert main(base) == 0
    assert "output perturbations done" in capsys.readouterr().err  # the float entry is another one
    assert len(list((tmp_path / "cache").glob("stats-*.pt"))) == 2
    assert main([*base, "--perturb-around", "3"]) == 0 and "output perturbations" not in capsys.readouterr().err
    stats = ["stats", *base[1:5], "--cache-dir", str(tmp_path / "cache"), "--perturb-around", "3"]
    assert main(stats) == 0 and "KL@2b, others@3b" in capsys.readouterr().out  # the table names its measurement
    assert main([*base, "--perturb-around", "1"]) == 2
    assert "--perturb-around must be one of 2, 3, 4, 5, 6, 7, 8, got 1" in capsys.readouterr().err


def test_without_perturbations_the_bit_width_they_would_be_measured_around_is_no_setting():
    assert StatsSettings(perturbations=False, perturb_around=3) == StatsSettings(perturbations=False)


def test_a_proxy_evolved_around_a_bit_width_is_measured_so_and_a_contrary_flag_is_refused(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    reads_kl = Genome.from_expression(("sum", ("no_op", ("mean", "KL"))), "measured", "mine", perturb_around=3)
    reads_kl.save(tmp_path / "mine.json")
    assert Genome.load(tmp_path / "mine.json").perturb_around == 3
    base = ["allocate", "--model", "synthetic_stats:tiny_fmnist_net", "--batch-size", "8", "--size-mb", "0.001"]
    base += ["--fixed", "none", "--cache-dir", str(tmp_path / "cache"), "--proxy", "mine.json"]
    assert main(base) == 0 and "; perturbations measured around 3 bits" in capsys.readouterr().out
    assert main([*base, "--perturb-around", "4"]) == 2
    err = capsys.readouterr().err
    assert "cannot be measured around two bit-widths at once: mine 3 bits, --perturb-around 4 bits" in err


def test_which_bit_width_the_perturbations_are_measured_around():
    around = [Genome.from_expression(("sum", "KL"), name=f"g{b}", perturb_around=b) for b in (3, 4)]
    assert perturbations_around([get_proxy("kl")], None) is None
    assert perturbations_around([get_proxy("kl")], 4) == 4
    assert perturbations_around([around[0], get_proxy("kl")], None) == 3
    assert perturbations_around([around[0]], 3) == 3
    with pytest.raises(EvoproxyError, match="g3 3 bits, g4 4 bits"):
        perturbations_around(around, None)
    data = around[0].to_dict()
    for bad in (1, 9, "3", True):
        with pytest.raises(EvoproxyError, match="perturb_around"):
            Genome.from_dict({**data, "perturb_around": bad})
    assert "perturb_around" not in Genome.from_expression(("sum", "KL")).to_dict()
    assert "`evoproxy stats --perturb-around 3`" in around[0].to_python()  # the exported file says so too
