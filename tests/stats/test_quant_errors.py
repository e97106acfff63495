"""Q computed from W when read (evoproxy.stats.quant_errors): the cache entry no longer holds it,
proxies score from it exactly as from stored tensors, and what is kept between reads is bounded."""

import gc
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from synthetic_stats import tiny_conv_net

from evoproxy import pace
from evoproxy.allocation import proxy_values
from evoproxy.proxy import HANDCRAFTED, Genome, prepare_inputs
from evoproxy.quant import WeightFormat, weight_quantization_error
from evoproxy.stats import QBITS, QuantizationErrors, StatsSettings, load_or_compute_stats, quant_errors

SETTINGS = StatsSettings(hutchinson_samples=4, power_iters=3, perturbations=False)
# the main command's proxy (README): Σ((-std(H)) · exp(Q))
MAIN = Genome.from_expression(("sum", ("mul", ("neg", ("std", "H")), ("exp", "Q"))))


def _cached(tmp_path, settings=SETTINGS):
    torch.manual_seed(0)
    model, x, y = tiny_conv_net(), torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    load_or_compute_stats(model, x, y, "tiny", settings, tmp_path)
    stats, hit = load_or_compute_stats(model, x, y, "tiny", settings, tmp_path)
    assert hit
    return stats, torch.load(stats.cache_entry["path"], weights_only=True)


def _stored(stats):
    """`stats` with Q as the tensors the cache entry held before: every bit-width computed at once."""
    fmt = stats.settings.weight_format
    layers = [replace(l, Q={b: weight_quantization_error(l.W, b, fmt) for b in QBITS}) for l in stats.layers]
    return replace(stats, layers=layers)


@pytest.mark.parametrize("fmt", [WeightFormat(), WeightFormat(asymmetric=True)], ids=["per channel", "asymmetric"])
def test_the_cache_entry_holds_no_q_and_the_read_q_is_the_quantization_error(tmp_path, fmt):
    settings = replace(SETTINGS, group_size=fmt.group_size, asymmetric=fmt.asymmetric)
    stats, blob = _cached(tmp_path, settings)
    assert all(d["Q"] == list(QBITS) for d in blob["layers"])  # the bit-widths only, no tensor
    for layer in stats.layers:
        assert isinstance(layer.Q, QuantizationErrors) and sorted(layer.Q) == list(QBITS)
        for b in QBITS:
            assert torch.equal(layer.Q[b], weight_quantization_error(layer.W, b, fmt))


def test_scores_from_q_read_when_needed_equal_those_from_stored_q(tmp_path):
    stats, _ = _cached(tmp_path)
    stored = _stored(stats)
    bits = torch.tensor([[2, 3, 4], [8, 8, 8], [2, 8, 5], [4, 2, 7]])
    assert torch.equal(MAIN.evaluate(stats).values, MAIN.evaluate(stored).values)
    assert torch.equal(MAIN.score(stats, bits), MAIN.score(stored, bits))
    hawq_v2 = HANDCRAFTED["hawq-v2"]()
    assert torch.equal(hawq_v2.score(stats, bits), hawq_v2.score(stored, bits))


def test_a_proxy_computes_q_only_at_the_bit_widths_it_reads(tmp_path, monkeypatch):
    stats, _ = _cached(tmp_path)
    computed = []
    monkeypatch.setattr(
        quant_errors, "weight_quantization_error", lambda w, b, fmt: computed.append(b) or torch.zeros(w.shape)
    )
    assert prepare_inputs(stats)[0]["Q"] is stats.layers[0].Q  # kept lazy, not read into a dict
    assert 3 in stats.layers[0].Q and computed == []
    MAIN.evaluate(stats, (3, 5))
    assert sorted(computed) == [3, 3, 3, 5, 5, 5]  # each layer once per bit-width
    MAIN.evaluate(stats, (3, 5))
    assert len(computed) == 6  # then read from the memo


def test_allocating_by_a_bit_aware_proxy_reports_its_progress_through_the_quantization_errors(tmp_path, monkeypatch):
    stats, _ = _cached(tmp_path)
    quiet = proxy_values(HANDCRAFTED["hawq-v2"](), _stored(stats), (2, 3, 4))
    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)  # every layer is "long" after the first
    lines: list[str] = []
    values = proxy_values(HANDCRAFTED["hawq-v2"](), stats, (2, 3, 4), lines.append)
    assert np.array_equal(values, quiet)  # the same values, with progress
    assert [l.split(" (")[0] for l in lines] == ["quantization errors: layer 1/3", "quantization errors: layer 2/3"]
    lines.clear()
    proxy_values(HANDCRAFTED["hawq-v2"](), stats, (2, 3, 4), lines.append)
    assert lines == []  # read from the memo: nothing computed, nothing to report
    quant_errors.QuantizationErrors(stats.layers[0].W)[2]
    assert lines == []  # outside the allocation, no lines


def test_rank_reports_its_progress_through_the_quantization_errors_on_stderr(trained_mlp, monkeypatch, capsys):
    import json

    from evoproxy.cli import main

    assert main(["bench", "build", *trained_mlp, "--configs", "3", "--eval-size", "40", "--out", "b.jsonl"]) == 0
    monkeypatch.setattr(pace, "PROGRESS_SECONDS", 0.0)  # every layer is "long" after the first
    capsys.readouterr()
    rank = ["rank", "--bench", "b.jsonl", "--proxies", "hawq-v2", "--split", "all", "--samples", "0", "--repeats", "1"]
    assert main(rank) == 0
    out, err = capsys.readouterr()
    lines = [l.split(" (")[0] for l in err.splitlines() if "quantization errors" in l]
    assert lines == ["[stats] quantization errors: layer 1/3", "[stats] quantization errors: layer 2/3"]
    assert "quantization errors" not in out
    assert main([*rank, "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["results"][0]["proxy"] == "hawq-v2" and "quantization errors" not in err


def test_the_memo_is_bounded_and_forgets_statistics_that_are_gone(tmp_path, monkeypatch):
    stats, _ = _cached(tmp_path)
    sizes = [l.W.numel() * 8 for l in stats.layers]
    monkeypatch.setattr(quant_errors, "_memo", type(quant_errors._memo)())
    monkeypatch.setattr(quant_errors, "_memo_bytes", 0)
    monkeypatch.setattr(quant_errors, "MEMO_BYTES", max(sizes) * 2)
    first = [l.Q[2].clone() for l in stats.layers]
    for b in QBITS:
        for layer in stats.layers:
            layer.Q[b]
            assert quant_errors._memo_bytes <= quant_errors.MEMO_BYTES
    assert quant_errors._memo_bytes == sum(t.numel() * 8 for t in quant_errors._memo.values())
    assert all(torch.equal(l.Q[2], q) for l, q in zip(stats.layers, first))  # computed again, the same
    del stats, first, layer
    gc.collect()
    assert not quant_errors._memo and quant_errors._memo_bytes == 0


def test_a_copy_sent_to_another_process_reads_the_same_q():
    q = QuantizationErrors(torch.randn(4, 3, 3, 3), WeightFormat(asymmetric=True), (2, 4))
    copy = pickle.loads(pickle.dumps(q))
    assert list(copy) == [2, 4] and copy.fmt == q.fmt and torch.equal(copy[4], q[4])
    with pytest.raises(KeyError):
        q[3]
