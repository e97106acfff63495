"""Handcrafted proxies, user functions and genomes behind the one Proxy interface."""

import math

import pytest
import torch
from synthetic_stats import tiny_conv_stats

from evoproxy.errors import EvoproxyError
from evoproxy.proxy import FunctionProxy, Genome, Proxy, available_proxies, get_genome, get_proxy
from evoproxy.proxy.handcrafted import EMQ_EQUATION_5, ompq, quantization_error


@pytest.fixture(scope="module")
def stats():
    return tiny_conv_stats()


def test_every_named_proxy_fits_the_interface(stats):
    assert set(available_proxies()) == {
        "bparams",
        "hawq",
        "hawq-v2",
        "ompq",
        "qe",
        "snip",
        "synflow",
        "fisher",
        "plain",
        "mean-bits",
        "emq-paper",
        "output-mse",
        "sqnr",
        "kl",
        "taylor",
        "position",
        "evoproxy-zoo",
    }
    for name in available_proxies():
        proxy = get_proxy(name)
        assert isinstance(proxy, Proxy) and proxy.name == name
        s = proxy.sensitivities(stats)
        assert s.shape == (3,) and s.dtype == torch.float64 and torch.isfinite(s).all()
        assert proxy.score(stats, [[2, 4, 8], [8, 8, 8]]).shape == (2,)


def _layer(stats, name):
    return [float(v) for v in get_proxy(name).sensitivities(stats)]


def test_formulas_match_hand_computation(stats):
    layers = stats.layers
    scale = math.exp(stats.synflow_log_scale)
    assert _layer(stats, "bparams") == [30.0, 112.0, 15.0]  # weights + biases
    assert _layer(stats, "mean-bits") == [1.0, 1.0, 1.0]
    assert _layer(stats, "hawq") == [l.hessian_eig for l in layers]
    assert _layer(stats, "hawq-v2") == pytest.approx([l.hessian_trace / l.W.numel() for l in layers])
    assert _layer(stats, "snip") == pytest.approx([float((l.G * l.W).abs().sum()) for l in layers], rel=1e-6)
    assert _layer(stats, "plain") == pytest.approx([float((l.G.double() * l.W.double()).sum()) for l in layers])
    assert _layer(stats, "synflow") == pytest.approx([float((l.V * scale * l.W.abs()).sum()) for l in layers])
    fisher = [
        0.5 * sum(float((l.G[c].double() * l.W[c].double()).sum()) ** 2 for c in range(l.W.shape[0])) for l in layers
    ]
    assert _layer(stats, "fisher") == pytest.approx(fisher)
    qe = [math.log(l.W[0].numel() * float(l.W.double().var(unbiased=False))) for l in layers]
    assert _layer(stats, "qe") == pytest.approx(qe)


def test_ompq_follows_its_linear_program_weights(stats):
    s = ompq(stats)
    assert ((s > 0) & (s <= 1)).all()
    scaled = [{**{k: getattr(l, k) for k in "WGHV"}, "A": 7.0 * l.A} for l in stats.layers]
    assert torch.allclose(ompq(scaled), s)  # orthogonality ignores the features' scale
    # Identical features: every ORM is 1, so every importance is exp(-β (L-1)), and so is each mean.
    same = [{**{k: getattr(l, k) for k in "WGHV"}, "A": stats.layers[0].A} for l in stats.layers]
    assert ompq(same, beta=2.0).tolist() == pytest.approx([math.exp(-2.0 * 2)] * 3)


def test_hawq_v2_scores_quantization_perturbation(stats):
    proxy = get_proxy("hawq-v2")
    traces = proxy.sensitivities(stats)
    bits = torch.tensor([[4, 4, 4], [8, 8, 8], [2, 8, 8]])
    scores = proxy.score(stats, bits)
    expected = [
        -sum(float(traces[l]) * quantization_error(stats.layers[l].W, int(b)) for l, b in enumerate(row))
        for row in bits
    ]
    assert scores.tolist() == pytest.approx(expected)
    assert float(proxy.score(stats, [8, 8, 8])) == pytest.approx(expected[1])
    with pytest.raises(EvoproxyError, match="at least 2"):
        proxy.score(stats, [1, 8, 8])


def test_quantization_error_shrinks_with_bits():
    w = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    errors = [quantization_error(w, b) for b in (2, 4, 8, 16)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 1e-6 * errors[0]
    assert quantization_error(torch.zeros(5), 4) == 0.0


def test_emq_paper_is_the_equation_5_genome():
    genome = get_proxy("emq-paper")
    assert isinstance(genome, Genome) and genome == Genome.from_expression(EMQ_EQUATION_5)


def test_user_functions_and_genome_files_are_proxies(stats, tmp_path):
    user = get_proxy("synthetic_stats:weight_norms")
    assert user.sensitivities(stats).tolist() == pytest.approx([float(l.W.norm()) for l in stats.layers])
    assert float(user.score(stats, [1, 1, 1])) == pytest.approx(sum(float(l.W.norm()) for l in stats.layers))
    path = tmp_path / "mine.json"
    get_proxy("emq-paper").save(path)
    assert torch.equal(get_proxy(str(path)).sensitivities(stats), get_proxy("emq-paper").sensitivities(stats))


@pytest.mark.parametrize(
    "name, message",
    [
        ("hawq3", "unknown proxy 'hawq3': did you mean 'hawq'\\? use one of"),
        ("fishr", "unknown proxy 'fishr': did you mean 'fisher'\\?"),
        ("zzzz", "unknown proxy 'zzzz': use one of"),
        ("runs/typo", "no such run directory 'runs/typo'"),
        ("synthetic_stats:nothing_here", "has no callable .nothing_here."),
        # A model factory given as a proxy: refused by its signature before it is called.
        ("synthetic_stats:tiny_fmnist_net", "must take one argument, the model's statistics .*; it takes \\(\\)"),
        ("no_such_module_xyz:f", "cannot import"),
        ("missing.json", "does not exist"),
    ],
)
def test_bad_proxy_references(stats, name, message):
    with pytest.raises(EvoproxyError, match=message) as info:
        get_proxy(name).sensitivities(stats)
    assert "\n" not in str(info.value)


def test_a_run_directory_without_its_result_says_so(tmp_path):
    with pytest.raises(EvoproxyError, match="run directory .* has no best.json yet"):
        get_proxy(str(tmp_path))


def test_get_genome_suggests_the_genome_meant():
    with pytest.raises(EvoproxyError, match="'hawq-v' is not a genome: did you mean 'hawq-v2'\\?"):
        get_genome("hawq-v")


@pytest.mark.parametrize(
    "fn, message",
    [
        (lambda s: [1.0, 2.0], "returned 2 values for 3 layers"),
        (lambda s: "high", "one number per layer"),
        (lambda s: 1 / 0, "proxy mine raised ZeroDivisionError: division by zero"),
    ],
)
def test_user_functions_must_return_one_number_per_layer(stats, fn, message):
    with pytest.raises(EvoproxyError, match=message):
        FunctionProxy(fn, "mine").sensitivities(stats)


def test_fisher_genome_form_is_twice_fisher_and_lies_in_the_branched_space(stats):
    from evoproxy.proxy import get_genome, load_space, space_violation
    from evoproxy.proxy.handcrafted import genome_form

    genome = get_genome("fisher")
    assert space_violation(genome, load_space("branched")) is None
    assert torch.allclose(genome.sensitivities(stats), 2 * get_proxy("fisher").sensitivities(stats), rtol=1e-12)
    assert get_genome("emq-paper").wl_hash() == genome_form("emq-paper").wl_hash()
    with pytest.raises(EvoproxyError, match="'snip' is not a genome"):
        get_genome("snip")


@pytest.mark.slow
def test_a_proxy_module_in_the_current_folder_needs_no_pythonpath(tmp_path):
    import subprocess
    import sys

    (tmp_path / "myproxies.py").write_text("def ones(stats):\n    return [1.0] * len(stats.layers)\n")
    code = "from evoproxy.proxy import get_proxy; print(get_proxy('myproxies:ones').name)"
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    # Run as the console script is: sys.path[0] is not the current folder.
    out = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "myproxies:ones"
