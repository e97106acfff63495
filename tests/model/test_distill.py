"""Distilled calibration images (ZeroQ): deterministic, closer to the BatchNorm statistics than their
starting noise, cached, refused for models they cannot be made for; and the `distilled[:N]` source."""

import pytest
import torch
from torch import nn

from evoproxy.errors import EvoproxyError, ParameterError
from evoproxy.model import DataSource, DistillSettings, TinyLM, distill_images, load_model, open_data
from evoproxy.model import distill as distill_module
from evoproxy.model.distill import bn_statistics_loss

FEW = DistillSettings(iters=3)


def bn_net() -> nn.Module:
    """Conv → BatchNorm2d → ReLU → Linear → BatchNorm1d → Linear, with running statistics far from what
    standard-normal inputs give, so that distillation has somewhere to go."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 8),
        nn.BatchNorm1d(8),
        nn.Linear(8, 3),
    )
    with torch.no_grad():
        for bn in (model[1], model[5]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(2, 4)
    return model.eval()


def test_a_seed_gives_the_same_images_and_another_seed_others():
    model = bn_net()
    a = distill_images(model, (1, 8, 8), 5, seed=1, settings=FEW)
    assert a.shape == (5, 1, 8, 8) and a.dtype == torch.float32
    assert torch.equal(a, distill_images(model, (1, 8, 8), 5, seed=1, settings=FEW))
    assert not torch.equal(a, distill_images(model, (1, 8, 8), 5, seed=2, settings=FEW))


def test_distillation_moves_the_batchnorm_statistics_toward_the_running_ones():
    model = bn_net()
    start = torch.randn((16, 1, 8, 8), generator=torch.Generator().manual_seed(0))  # what seed 0 starts from
    images = distill_images(model, (1, 8, 8), 16, seed=0, settings=DistillSettings(iters=60))
    with torch.no_grad():
        before, after = bn_statistics_loss(model, start).item(), bn_statistics_loss(model, images).item()
    assert after < 0.3 * before, (before, after)
    assert all(p.requires_grad for p in model.parameters()) and not model.training  # left as it was


def test_a_model_without_batchnorm_or_a_language_model_is_refused_in_one_line(tiny):
    model, _, _ = tiny
    with pytest.raises(EvoproxyError, match="no BatchNorm layer") as info:
        distill_images(model, (1, 4, 4), 2)
    assert "\n" not in str(info.value)
    with pytest.raises(EvoproxyError, match="language model"):
        distill_images(TinyLM(), (16,), 2)


def test_the_second_call_reads_the_cache_and_a_damaged_entry_is_distilled_again(tmp_path, monkeypatch):
    model = bn_net()
    first = distill_images(model, (1, 8, 8), 3, settings=FEW, cache=tmp_path)
    (entry,) = tmp_path.glob("distilled-*.pt")
    assert (tmp_path / (entry.name + ".sha256")).is_file()

    def refuse(*args):
        raise AssertionError("distilled again")

    with monkeypatch.context() as m:
        m.setattr(distill_module, "_distill", refuse)
        assert torch.equal(first, distill_images(model, (1, 8, 8), 3, settings=FEW, cache=tmp_path))
        with pytest.raises(AssertionError):  # other settings are another entry
            distill_images(model, (1, 8, 8), 3, settings=DistillSettings(iters=4), cache=tmp_path)
    entry.write_bytes(entry.read_bytes()[:-8] + bytes(8))  # damaged: the checksum no longer matches
    assert torch.equal(first, distill_images(model, (1, 8, 8), 3, settings=FEW, cache=tmp_path))


def test_a_model_with_the_same_weights_but_another_forward_is_another_entry(tmp_path):
    model, other = bn_net(), bn_net()
    other[2] = nn.Tanh()  # no weights: the state_dicts are equal, what the images are distilled for is not
    first = distill_images(model, (1, 8, 8), 3, settings=FEW, cache=tmp_path)
    second = distill_images(other, (1, 8, 8), 3, settings=FEW, cache=tmp_path)
    assert len(list(tmp_path.glob("distilled-*.pt"))) == 2 and not torch.equal(first, second)
    assert torch.equal(second, distill_images(other, (1, 8, 8), 3, settings=FEW))


@pytest.mark.parametrize("bad", [{"n": 0}, {"seed": -1}])
def test_bad_counts_and_seeds_are_named(bad):
    with pytest.raises(ParameterError, match=f"distill_images.{next(iter(bad))}"):
        distill_images(bn_net(), (1, 8, 8), **{"n": 2, **bad})
    with pytest.raises(ParameterError, match="DistillSettings.iters"):
        DistillSettings(iters=0)


def test_the_distilled_source_calibrates_on_distilled_images_and_evaluates_on_real_data(tmp_path):
    model, _ = load_model("default")
    cache = tmp_path / "distilled"
    source = open_data("distilled:4", model=model, evaluate_on=open_data(), distill=FEW, cache=cache)
    assert source.input_shape == (1, 28, 28) and source.metric.name == "accuracy"
    assert not cache.exists()  # reading the shape and metric distils nothing
    images, labels = source.calibration()
    assert images.shape == (4, 1, 28, 28)
    assert torch.equal(labels, model(images).argmax(1))  # the model's own predictions
    assert torch.equal(source.evaluation(3)[0], open_data().evaluation(3)[0])
    with pytest.raises(ParameterError, match="real data with a train part"):
        source.training()
    # A bench records it; reopened with the model (from the cache), the same images come back.
    again = DataSource.reopen(source.describe(), "bench b", model=model, cache=cache)
    assert torch.equal(again.calibration()[0], images)
    assert open_data("distilled", model=model, evaluate_on=open_data()).spec == "distilled:256"


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("distilled:0", {}, "distilled:N with N from 1 to"),
        ("distilled:x", {}, "distilled:N with N from 1 to"),
        ("distilled:4", {"model": None}, "need a model to distil them from"),
        ("fmnist", {"model": None}, "open_data.evaluate_on must be left out"),
        ("distilled:4", {"evaluate_on": "kjv"}, "holds tokens"),
    ],
)
def test_a_distilled_source_without_what_it_needs_is_refused(spec, kwargs, message):
    model, _ = load_model("default")
    kwargs = {"model": model, "evaluate_on": "fmnist", **kwargs}
    kwargs["evaluate_on"] = open_data(kwargs["evaluate_on"])
    with pytest.raises(EvoproxyError, match=message):
        open_data(spec, **kwargs)
