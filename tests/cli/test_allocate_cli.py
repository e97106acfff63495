import json
import re
import textwrap

import numpy as np
import pytest
import torch

from evoproxy.allocation import allocate, load_bit_config, proxy_problem, proxy_values
from evoproxy.cli import main
from evoproxy.model import calibration_batch, load_model
from evoproxy.proxy import emq_paper, get_proxy
from evoproxy.quant import model_bops, model_size_mb
from evoproxy.stats import StatsSettings, load_or_compute_stats

# Small statistics settings; the module fixture computes them once into a cache the CLI reads.
FAST = ["--batch-size", "8", "--hutchinson-samples", "4", "--power-iters", "3"]
FAST_SETTINGS = StatsSettings(hutchinson_samples=4, power_iters=3)


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """(cache folder, statistics, layers) of the default model under FAST, computed once."""
    folder = tmp_path_factory.mktemp("stats")
    model, name = load_model("default")
    stats, _ = load_or_compute_stats(model, *calibration_batch(8), name, FAST_SETTINGS, folder)
    return folder, stats, [layer.info for layer in stats.layers]


def _cli(*args, cache) -> int:
    return main([*args, *FAST, "--cache-dir", str(cache)])


@pytest.mark.slow
def test_user_function_and_genome_files_allocate_like_their_builtin_twins(cached, tmp_path, monkeypatch):
    _, stats, _ = cached
    (tmp_path / "user_snip_proxy.py").write_text(
        textwrap.dedent('''
        def snip(stats):
            """SNIP as a user would write it: Σ|∂L/∂θ ⊙ θ| per layer."""
            return [float((l.G.double() * l.W.double()).abs().sum()) for l in stats.layers]
    ''')
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "runs" / "found"
    run.mkdir(parents=True)
    emq_paper().save(run / "best.json")
    for ref, builtin in [
        ("user_snip_proxy:snip", "snip"),
        (str(run / "best.json"), "emq-paper"),
        (str(run), "emq-paper"),
    ]:
        mine, theirs = (allocate(proxy_problem(get_proxy(r), stats, 0.09)) for r in (ref, builtin))
        assert mine.w_bits == theirs.w_bits, ref
        assert len(set(mine.w_bits[1:-1])) > 1  # a mixed-precision answer, not a uniform one


def test_bit_aware_proxy_values_reproduce_its_own_score(cached):
    _, stats, layers = cached
    hawq_v2 = get_proxy("hawq-v2")
    table = proxy_values(hawq_v2, stats, (4, 2, 3))  # columns in the caller's order
    assert table.shape == (len(layers), 3) and (table[:, 1] == 0).all()
    configs = np.random.default_rng(0).choice([2, 3, 4], size=(30, len(layers)))
    from_table = table[np.arange(len(layers)), np.array([1, 2, 0])[configs - 2]].sum(1)
    offset = from_table - hawq_v2.score(stats, torch.as_tensor(configs)).numpy()
    assert np.allclose(offset, offset[0], rtol=0, atol=1e-9 * np.abs(from_table).max())
    fisher = get_proxy("fisher")
    assert np.array_equal(proxy_values(fisher, stats, (2, 3, 4)), fisher.sensitivities(stats).numpy())


def test_allocate_writes_bits_within_budget_with_fixed_layers(cached, tmp_path, capsys):
    cache, _, layers = cached
    out, png = tmp_path / "alloc.json", tmp_path / "bits.png"
    assert (
        _cli(
            "allocate",
            "--proxy",
            "fisher",
            "--size-mb",
            "0.09",
            "--bops-g",
            "0.7",
            "--fixed",
            "first,last,layers.4.conv1",
            "--out",
            str(out),
            "--plot",
            str(png),
            cache=cache,
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "proven optimal" in text and "layers.8.conv2" in text and "(budget 0.09 MB)" in text
    record = json.loads(out.read_text())
    bits = record["bits"]
    assert bits[0] == bits[10] == bits[-1] == 8 and set(bits) - {8} <= {2, 3, 4}
    assert model_size_mb(layers, bits) <= 0.09 and model_bops(layers, bits, 8) <= 0.7e9
    assert record["size_mb"] == pytest.approx(model_size_mb(layers, bits)) and record["optimal"] is True
    assert [row["name"] for row in record["layers"]] == [l.name for l in layers]
    assert load_bit_config(out, [l.name for l in layers]) == (bits, (8,) * len(layers))
    assert png.stat().st_size > 0


def test_infeasible_budget_exits_2_naming_the_smallest_size(cached, tmp_path, capsys):
    cache, _, layers = cached
    out = tmp_path / "alloc.json"
    assert _cli("allocate", "--proxy", "fisher", "--size-mb", "0.05", "--out", str(out), cache=cache) == 2
    err = capsys.readouterr().err
    smallest = model_size_mb(layers, [8] + [2] * (len(layers) - 2) + [8])
    assert err.count("\n") == 1 and f"smallest feasible size {smallest:.6f} MB" in err
    assert not out.exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--size-mb", "1e308"], "--size-mb must be a number of MB above 0 and at most 1e\\+12, got 1e\\+308"),
        (["--size-mb", "nan"], "--size-mb must be a number of MB above 0"),
        (["--size-mb=-inf"], "--size-mb must be a number of MB above 0"),
        (["--size-mb", "0.09", "--bops-g", "inf"], "--bops-g must be a number of G bit operations above 0 and at most"),
        (["--size-mb", "0.09", "--bops-g", "0"], "--bops-g must be a number of G bit operations above 0"),
        (["--size-mb", "0.09", "--out", "no-such-folder/alloc.json"], "--out .* needs an existing, writable folder"),
        (["--size-mb", "0.09", "--plot", "no-such-folder/bits.png"], "--plot .* needs an existing, writable folder"),
        (["--size-mb", "0.09", "--out", "."], "--out \\. is a folder"),
        (["--size-mb", "0.09", "--bits", "1,2"], "--bits takes weight bit-widths from 2 to 32"),
        (["--size-mb", "0.09", "--fixed-bits", "1"], "fixed bits of layer 0 must be whole numbers from 2 to 32"),
    ],
)
def test_allocate_refuses_bad_flags_in_one_line_and_writes_nothing(
    cached, tmp_path, monkeypatch, capsys, flags, message
):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert _cli("allocate", "--proxy", "fisher", *flags, cache=cached[0]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err
    assert list((tmp_path / "work").iterdir()) == []


def test_pareto_refuses_budgets_that_are_not_sizes(capsys):
    assert main(["pareto", "--proxies", "fisher", "--sizes", "0.1,1e308"]) == 2
    assert "--sizes must be a number of MB each above 0 and at most 1e+12" in capsys.readouterr().err


@pytest.mark.slow
def test_quantize_at_8_bits_stays_within_half_a_point(tmp_path, capsys):
    bits_file = tmp_path / "w8.json"
    bits_file.write_text(json.dumps({"bits": [8] * 22}))
    # Without BatchNorm re-estimation the difference is the 8-bit quantization's alone.
    assert main(["quantize", "--bits-file", str(bits_file), "--eval-size", "500", "--no-bn-recal"]) == 0
    text = capsys.readouterr().out
    change = float(re.search(r"accuracy change ([-+][\d.]+) points", text).group(1))
    assert abs(change) <= 0.5
    assert "full precision" in text and "0.2706" in text  # 8-bit size of the 22 layers in MB


def test_pareto_lists_every_proxy_and_size_and_the_uniform_baselines(cached, capsys):
    cache, _, layers = cached
    assert _cli("pareto", "--proxies", "bparams,mean-bits", "--sizes", "0.1,0.08", "--json", cache=cache) == 0
    points = json.loads(capsys.readouterr().out)["points"]
    mixed = [(p["proxy"], p["budget_mb"]) for p in points if p["kind"] == "mixed"]
    assert mixed == [("bparams", 0.08), ("bparams", 0.1), ("mean-bits", 0.08), ("mean-bits", 0.1)]
    assert all(p["size_mb"] <= p["budget_mb"] and p["accuracy"] is None for p in points if p["kind"] == "mixed")
    uniform = [p for p in points if p["kind"] == "uniform"]
    assert [p["proxy"] for p in uniform] == ["uniform W2", "uniform W3", "uniform W4"]
    assert [p["w_bits"][1:-1] for p in uniform] == [[w] * (len(layers) - 2) for w in (2, 3, 4)]
    assert _cli("pareto", "--proxies", "bparams", "--sizes", "0.08", cache=cache) == 0
    assert re.search(r"uniform W4\s+uniform\s+-", capsys.readouterr().out)


@pytest.mark.slow
def test_pareto_evaluates_each_configuration_by_ptq(cached, tmp_path, capsys):
    cache, _, _ = cached
    png = tmp_path / "pareto.png"
    assert (
        _cli(
            "pareto",
            "--proxies",
            "fisher",
            "--sizes",
            "0.09",
            "--bits",
            "2,4",
            "--evaluate",
            "ptq",
            "--eval-size",
            "100",
            "--plot",
            str(png),
            "--json",
            cache=cache,
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert [(p["proxy"], p["kind"]) for p in report["points"]] == [
        ("fisher", "mixed"),
        ("uniform W2", "uniform"),
        ("uniform W4", "uniform"),
    ]
    assert all(0 <= p["accuracy"] <= 100 for p in report["points"]) and report["fp_accuracy"] > 80
    assert png.stat().st_size > 0


def test_bad_bits_are_refused_before_any_statistics(tmp_path, capsys):
    for command in (
        ["allocate", "--proxy", "fisher", "--size-mb", "0.09"],
        ["pareto", "--proxies", "fisher", "--sizes", "0.09"],
    ):
        assert main([*command, "--bits", "1,2", "--cache-dir", str(tmp_path / "cache")]) == 2
        assert "--bits takes weight bit-widths from 2 to 32" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()  # refused before the statistics were computed or cached
