"""The sweep that measures many configurations at once gives every configuration the outputs that
quantize_model and accuracy give it, bit for bit, while computing shared leading layers once."""

from dataclasses import replace

import pytest
import torch
from torch import nn

from evoproxy.model import METRICS, TinyLM, accuracy, perplexity, calibration_set, layer_registry, load_model, normalize
from evoproxy.quant import PtqEvaluator, QuantSettings, quantize_model


@pytest.fixture
def recorded(monkeypatch):
    """The logits that each accuracy count sees, filed under the phase the test is in ("sweep",
    then "plain" for accuracy() of each configuration on its own)."""
    seen = {"phase": "sweep", "sweep": [], "plain": []}
    metric = METRICS["accuracy"]

    def record(logits, labels, top):
        seen[seen["phase"]].append(logits.clone())
        return metric.batch_sum(logits, labels, top)

    monkeypatch.setitem(METRICS, "accuracy", replace(metric, batch_sum=record))
    return seen


def _compare(model, layers, configs, calib, x, y, settings, recorded):
    """Sweep all configurations, then measure each on its own: the same accuracies, and the same
    logits batch for batch. Returns the evaluator."""
    evaluator = PtqEvaluator(model, layers, calib, x, y, settings)
    swept = evaluator.measure_many(configs)
    sweep_logits = list(recorded["sweep"])
    recorded["phase"] = "plain"
    plain = [accuracy(quantize_model(model, layers, c, calib, settings), x, y) for c in configs]
    assert swept == plain
    batches = len(recorded["plain"]) // len(configs)
    order = sorted(range(len(configs)), key=lambda i: configs[i])  # the sweep's order within each batch
    for b in range(batches):
        for rank, i in enumerate(order):
            assert torch.equal(sweep_logits[b * len(configs) + rank], recorded["plain"][i * batches + b])
    return evaluator


@pytest.mark.slow
@pytest.mark.parametrize("bn", [True, False])
def test_sweep_gives_the_logits_of_quantize_model_to_the_bit(bn, recorded):
    model, _ = load_model("default")
    layers = layer_registry(model, (1, 28, 28))
    x, y = normalize(calibration_set()[0]), calibration_set()[1]
    n = len(layers)
    act_bits = tuple(32 if i % 4 == 1 else 3 for i in range(n))  # some inputs quantized, some left in float
    configs = [
        [8] + [2] * (n - 2) + [8],
        [8] + [2] * (n - 3) + [4, 8],
        [8, 4] + [3] * (n - 3) + [8],
        [8, 2] + [3] * (n - 3) + [8],
    ]
    # 300 calibration images: two BatchNorm batches and three range batches; 150 evaluated: two batches.
    evaluator = _compare(model, layers, configs, x[:300], x[300:450], y[300:450], QuantSettings(act_bits, bn), recorded)
    assert evaluator.sweep is not None


class _Residual(nn.Module):
    """Two convolutions and a convolution shortcut, each with BatchNorm: the shortcut's bits come
    last in a configuration, so in sorted order its key comes back after others."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.shortcut = nn.Conv2d(1, 4, 1)
        self.bn_a, self.bn_b, self.bn_s = nn.BatchNorm2d(4), nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        out = self.bn_b(self.b(torch.relu(self.bn_a(self.a(x))))) + self.bn_s(self.shortcut(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(torch.relu(out), 1), 1))


def test_a_batchnorm_whose_key_comes_back_counts_each_batch_once(recorded):
    torch.manual_seed(0)
    model = _Residual().eval()
    layers = layer_registry(model, (1, 8, 8))
    assert [l.name for l in layers] == ["a", "b", "shortcut", "fc"]
    x, y = torch.randn(600, 1, 8, 8), torch.randint(0, 3, (600,))
    counted = set()  # how many batches each re-estimated bn_s has counted, seen when it is used
    model.bn_s.register_forward_hook(lambda m, *_: None if m.training else counted.add(int(m.num_batches_tracked)))
    # Sorted, the shortcut's bits go 2, 3, 2: bn_s's output is computed again for the third configuration.
    configs = [[8, 2, 2, 8], [8, 3, 3, 8], [8, 4, 2, 8]]
    _compare(model, layers, configs, x[:400], x[400:], y[400:], QuantSettings(), recorded)
    assert counted == {2}  # 400 calibration images: two batches


def test_a_language_models_perplexities_are_those_of_each_configuration_on_its_own():
    torch.manual_seed(0)
    model = TinyLM(dim=32, blocks=2, heads=2, hidden=64, context=16).eval()
    tokens = torch.randint(0, 256, (150, 17))
    x, y = tokens[:, :-1], tokens[:, 1:]
    layers = layer_registry(model, (16,), ("head",), torch.int64)
    settings = QuantSettings(32, False, group_size=16, asymmetric=True)
    evaluator = PtqEvaluator(model, layers, x[:8], x, y, settings)
    assert evaluator.sweep is not None and evaluator.metric.name == "perplexity"
    configs = [[2, 3] * 6, [2, 3, 4] * 4, [4] * 12]
    plain = [perplexity(quantize_model(model, layers, c, x[:8], settings), x, y, batch_size=100) for c in configs]
    assert evaluator.measure_many(configs) == plain
    assert len(set(plain)) == 3  # the bits change the result


class _InPlace(nn.Module):
    """Changes a tensor in place: later readers of `a` depend on b's bits, which the graph hides."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = torch.relu(self.a(x))
        a.add_(self.b(a))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(a, 1), 1))


class _DataDependent(_InPlace):
    """The same layers, used under control flow on values, which fx cannot trace."""

    def forward(self, x):
        a = self.a(x)
        a = self.b(a) if a.sum() > 0 else -self.b(a)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(a, 1), 1))


def _hooked() -> nn.Module:
    """A model with a forward hook of its own (here: negated logits), which a traced graph skips."""
    model = _Residual()
    model.register_forward_hook(lambda module, inputs, output: -output)
    return model


@pytest.mark.parametrize("net", [_InPlace, _DataDependent, _hooked])
def test_a_model_the_sweep_cannot_follow_is_measured_one_configuration_at_a_time(net):
    torch.manual_seed(0)
    model = net().eval()
    layers = layer_registry(model, (1, 8, 8))
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
    configs = [[8, b] + [8] * (len(layers) - 2) for b in (2, 3, 4, 5)]  # one a, four b's
    evaluator = PtqEvaluator(model, layers, x[:32], x, y)
    assert evaluator.sweep is None
    assert evaluator.measure_many(configs) == [
        accuracy(quantize_model(model, layers, c, x[:32]), x, y) for c in configs
    ]


@pytest.mark.slow
def test_layers_that_configurations_share_are_computed_once_per_batch():
    model, _ = load_model("default")
    layers = layer_registry(model, (1, 28, 28))
    calls = {"first": 0, "last": 0}
    model.conv1.register_forward_hook(lambda *_: calls.__setitem__("first", calls["first"] + 1))
    model.fc.register_forward_hook(lambda *_: calls.__setitem__("last", calls["last"] + 1))
    x = normalize(calibration_set()[0][:100])
    evaluator = PtqEvaluator(model, layers, x, x, torch.zeros(100, dtype=torch.long), QuantSettings(8, False))
    n = len(layers)
    evaluator.measure_many([[8, b] + [2] * (n - 3) + [8] for b in (2, 3, 4)])
    # One range batch and one evaluation batch of 100: the first layer (8 bits in all three) runs
    # once per pass; the classifier, whose input differs, once per configuration and pass.
    assert calls == {"first": 2, "last": 6}
