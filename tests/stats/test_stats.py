import copy
import math

import pytest
import torch
from torch import nn

from evoproxy.errors import EvoproxyError, ParameterError
from evoproxy.model import load_model
from evoproxy.stats import TENSOR_FIELDS, StatsSettings, compute_stats, load_or_compute_stats

FAST = StatsSettings(hutchinson_samples=4, power_iters=3, act_max_elems=512)


def _small_cnn():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 3),
    ).eval()


def _batch(n=8):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def test_statistics_have_layer_shapes_and_are_finite():
    model = _small_cnn()
    x, y = _batch()
    stats = compute_stats(model, x, y, "small", FAST)
    assert [l.info.kind for l in stats.layers] == ["conv", "depthwise", "linear"]
    for l in stats.layers:
        for f in ("W", "G", "H", "V"):
            assert getattr(l, f).shape == l.info.weight_shape
            assert torch.isfinite(getattr(l, f)).all()
        assert l.A.shape[0] == len(x) and l.A.numel() <= FAST.act_max_elems
        assert math.isfinite(l.hessian_trace) and math.isfinite(l.hessian_eig)
    # G is the true gradient of the mean cross-entropy.
    w = model[0].weight
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), w)
    assert torch.allclose(stats.layers[0].G, g, atol=1e-6)
    # A is the layer's output (the first conv's is subsampled; the linear one is whole).
    assert torch.allclose(stats.layers[2].A, model(x), atol=1e-6)


def test_a_hessian_time_budget_bounds_the_samples_and_keys_its_own_cache_entry(tmp_path):
    from dataclasses import replace

    from evoproxy.stats import stats_cache_path

    model, (x, y) = _small_cnn(), _batch()
    unbounded = replace(FAST, hutchinson_samples=64, hutchinson_tol=0.0)
    bounded = replace(unbounded, hessian_seconds=1e-9)  # past at once: one sample, one step per layer
    assert compute_stats(model, x, y, "small", unbounded).hutchinson_samples_used == 64
    stats = compute_stats(model, x, y, "small", bounded)
    assert stats.hutchinson_samples_used == 1
    assert all(math.isfinite(l.hessian_trace) and math.isfinite(l.hessian_eig) for l in stats.layers)
    assert stats_cache_path(model, x, y, bounded, tmp_path) != stats_cache_path(model, x, y, unbounded, tmp_path)
    with pytest.raises(ParameterError, match="hessian_seconds must be a number above 0 or None"):
        replace(FAST, hessian_seconds=0)


def test_each_layer_knows_its_place_in_the_network():
    stats = compute_stats(_small_cnn(), *_batch(), "small", FAST)  # conv → BatchNorm, depthwise → ReLU, linear
    values = {f: [float(getattr(l, f)) for l in stats.layers] for f in ("NORM", "DEPTH", "FANIN", "GROUPED", "HEAD")}
    assert values == {
        "NORM": [1.0, 0.0, 0.0],
        "DEPTH": [0.0, 0.5, 1.0],
        "FANIN": [9.0, 9.0, 16.0],
        "GROUPED": [0.0, 1.0, 0.0],
        "HEAD": [0.0, 0.0, 1.0],
    }


def test_extraction_leaves_the_model_bit_identical():
    model = _small_cnn()
    before = copy.deepcopy(model.state_dict())
    flags = [p.requires_grad for p in model.parameters()]
    compute_stats(model, *_batch(), "small", FAST)
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_cache_hit_gives_identical_tensors(tmp_path):
    model = _small_cnn()
    x, y = _batch()
    first, hit1 = load_or_compute_stats(model, x, y, "small", FAST, cache=tmp_path)
    second, hit2 = load_or_compute_stats(model, x, y, "small", FAST, cache=tmp_path)
    assert (hit1, hit2) == (False, True)
    for a, b in zip(first.layers, second.layers):
        assert a.info == b.info
        assert all(torch.equal(getattr(a, f), getattr(b, f)) for f in TENSOR_FIELDS)
        assert (a.hessian_trace, a.hessian_eig) == (b.hessian_trace, b.hessian_eig)
    # Other settings or another batch are other cache entries.
    _, hit3 = load_or_compute_stats(
        model, x, y, "small", StatsSettings(hutchinson_samples=5, power_iters=3, act_max_elems=512), cache=tmp_path
    )
    _, hit4 = load_or_compute_stats(model, x[:4], y[:4], "small", FAST, cache=tmp_path)
    assert (hit3, hit4) == (False, False)


def test_same_seed_gives_same_statistics():
    model = _small_cnn()
    a = compute_stats(model, *_batch(), "small", FAST)
    b = compute_stats(model, *_batch(), "small", FAST)
    assert all(torch.equal(la.H, lb.H) and la.hessian_eig == lb.hessian_eig for la, lb in zip(a.layers, b.layers))


def test_batch_of_wrong_shape_is_a_clear_error():
    model = _small_cnn()
    with pytest.raises(EvoproxyError, match=r"does not accept inputs of shape \(3, 8, 8\)"):
        compute_stats(model, torch.randn(4, 3, 8, 8), torch.zeros(4, dtype=torch.long), "small", FAST)


def test_labels_out_of_range_are_a_clear_error():
    model = _small_cnn()
    x, _ = _batch(4)
    with pytest.raises(EvoproxyError, match="do not fit labels"):
        compute_stats(model, x, torch.tensor([0, 1, 2, 7]), "small", FAST)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(EvoproxyError, match="does not exist"):
        load_model("default", tmp_path / "missing.pt")


def test_wrong_weights_file_is_a_clear_error(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(EvoproxyError, match="does not fit the model"):
        load_model("default", path)


def test_user_model_by_reference(tmp_path):
    model, name = load_model("torch.nn:Identity")
    assert isinstance(model, nn.Identity) and name == "torch.nn:Identity"
    with pytest.raises(EvoproxyError, match="unknown model"):
        load_model("nonsense")
    with pytest.raises(EvoproxyError, match="cannot import"):
        load_model("no_such_module_xyz:f")


def test_bad_settings_are_rejected():
    with pytest.raises(EvoproxyError, match="power_iters"):
        StatsSettings(power_iters=0)


@pytest.mark.parametrize(
    "bad", [{"hutchinson_samples": 2.5}, {"hutchinson_tol": float("nan")}, {"power_tol": -1e-3}, {"act_max_elems": 0}]
)
def test_settings_out_of_range_name_the_parameter(bad):
    with pytest.raises(ParameterError) as info:
        StatsSettings(**bad)
    assert (info.value.owner, info.value.param) == ("StatsSettings", *bad)
