"""The statistics cache that runs read: every entry has its sha256 beside it and is trusted only
when they match (a doctored or damaged entry is recomputed with a warning), and entries are
written through unguessable temporary files, so a link planted in the folder is never followed."""

import hashlib
import os
import warnings

import pytest
import torch
from torch import nn

from evoproxy.errors import EvoproxyError, EvoproxyWarning
from evoproxy.stats import StatsSettings, load_or_compute_stats, stats_cache_path

FAST = StatsSettings(hutchinson_samples=4, power_iters=3, act_max_elems=512)


def _model_and_batch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(72, 3)).eval()
    g = torch.Generator().manual_seed(0)
    return model, torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)


def test_an_entry_is_written_with_its_checksum_and_nothing_else(tmp_path):
    model, x, y = _model_and_batch()
    _, hit = load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c")
    path = stats_cache_path(model, x, y, FAST, tmp_path / "c")
    assert not hit and sorted(p.name for p in (tmp_path / "c").iterdir()) == [path.name, path.name + ".sha256"]
    assert path.with_name(path.name + ".sha256").read_text() == hashlib.sha256(path.read_bytes()).hexdigest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c")[1]


def test_statistics_name_the_entry_they_were_written_to_and_read_from_with_its_sha256(tmp_path):
    model, x, y = _model_and_batch()
    path = stats_cache_path(model, x, y, FAST, tmp_path / "c")
    written, _ = load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c")
    read, hit = load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert hit and written.cache_entry == read.cache_entry == {"path": str(path), "sha256": digest}
    assert load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c", use_cache=False)[0].cache_entry is None


def test_a_doctored_entry_is_recomputed_with_a_warning(tmp_path):
    model, x, y = _model_and_batch()
    honest, _ = load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c")
    path = stats_cache_path(model, x, y, FAST, tmp_path / "c")
    blob = torch.load(path, weights_only=True)
    blob["layers"][0]["H"] = blob["layers"][0]["H"] * 100  # a proxy reading H would rank otherwise
    torch.save(blob, path)
    log = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stats, hit = load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c", log=log.append)
    assert not hit and torch.equal(stats.layers[0].H, honest.layers[0].H)
    assert [w.category for w in caught] == [EvoproxyWarning] and "checksum" in str(caught[0].message)
    assert load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c")[1]  # rewritten, trusted again


def test_an_entry_without_checksum_is_recomputed(tmp_path):
    model, x, y = _model_and_batch()
    load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c")
    path = stats_cache_path(model, x, y, FAST, tmp_path / "c")
    os.unlink(path.with_name(path.name + ".sha256"))  # as an earlier version wrote it
    log = []
    assert not load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c", log=log.append)[1]
    assert any("no checksum" in line for line in log)


def test_a_link_planted_at_the_old_temporary_name_is_not_followed(tmp_path):
    model, x, y = _model_and_batch()
    path = stats_cache_path(model, x, y, FAST, tmp_path / "c")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path.parent.mkdir()
    for name in (path.with_suffix(f".tmp{os.getpid()}"), path.with_name(f".{path.name}.tmp")):
        name.symlink_to(victim)
    load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c")
    assert victim.read_text() == "precious" and path.is_file() and not path.is_symlink()


def test_a_model_with_the_same_weights_but_another_forward_is_another_entry(tmp_path):
    model, x, y = _model_and_batch()
    other = nn.Sequential(*model[:1], nn.Tanh(), *model[2:]).eval()  # no weights in Tanh: one state_dict
    assert other.state_dict().keys() == model.state_dict().keys()
    stats, _ = load_or_compute_stats(model, x, y, "m", FAST, cache=tmp_path / "c")
    stats_other, hit = load_or_compute_stats(other, x, y, "other", FAST, cache=tmp_path / "c")
    assert not hit and stats_other.model == "other"
    assert not torch.equal(stats.layers[1].G, stats_other.layers[1].G)
    assert stats_cache_path(model, x, y, FAST, tmp_path / "c") != stats_cache_path(other, x, y, FAST, tmp_path / "c")


def test_a_batch_that_does_not_fit_the_model_is_one_line_before_any_entry(tmp_path):
    model, _, y = _model_and_batch()
    with pytest.raises(EvoproxyError, match=r"does not accept inputs of shape \(1, 9, 9\)") as info:
        load_or_compute_stats(model, torch.randn(8, 1, 9, 9), y, "m", FAST, cache=tmp_path / "c")
    assert "\n" not in str(info.value) and not (tmp_path / "c").exists()
