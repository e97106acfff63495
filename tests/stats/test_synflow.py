import copy
import math

import pytest
import torch
from torch import nn

from evoproxy.errors import EvoproxyError
from evoproxy.model import MODELS, ResNet20, quantizable_modules
from evoproxy.stats import synflow_gradients


def test_two_layer_linear_net_matches_hand_computation():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    before = copy.deepcopy(net.state_dict())
    (v1, v2), log_scale = synflow_gradients(net, (4,), ["0", "2"])
    w1, w2 = net[0].weight.detach().double().abs(), net[2].weight.detach().double().abs()
    # R = 1ᵀ|W2||W1|1, so ∂R/∂|W1| = (|W2|ᵀ1) 1ᵀ and ∂R/∂|W2| = 1 (|W1|1)ᵀ.
    expected1 = torch.outer(w2.sum(0), torch.ones(4, dtype=torch.float64))
    expected2 = torch.outer(torch.ones(2, dtype=torch.float64), w1.sum(1))
    scale = math.exp(log_scale)
    assert torch.allclose(v1 * scale, expected1, rtol=1e-12)
    assert torch.allclose(v2 * scale, expected2, rtol=1e-12)
    assert all(torch.equal(before[k], net.state_dict()[k]) for k in before)


def _plain_synflow(model, input_shape, names):
    """Reference: the linearised network run plainly in float64, no rescaling."""
    work = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for p in work.parameters():
            p.abs_()
        for m in work.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.bias.zero_()
                m.running_mean.zero_()
    mods = dict(quantizable_modules(work))
    out = work(torch.ones((1, *input_shape), dtype=torch.float64)).sum()
    return torch.autograd.grad(out, [mods[n].weight for n in names])


def test_rescaled_computation_is_exact_on_a_residual_net():
    torch.manual_seed(0)
    model = ResNet20().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    names = [n for n, _ in quantizable_modules(model)]
    grads, log_scale = synflow_gradients(model, (1, 28, 28), names)
    reference = _plain_synflow(model, (1, 28, 28), names)
    for g, r in zip(grads, reference):
        assert torch.isfinite(r).all()
        assert torch.allclose(g * math.exp(log_scale), r, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["shufflenet-fmnist", "squeezenet-fmnist"])
def test_rescaled_computation_is_exact_through_concatenation_and_channel_shuffle(name):
    torch.manual_seed(0)
    model = MODELS[name].build().eval()
    names = [n for n, _ in quantizable_modules(model)]
    grads, log_scale = synflow_gradients(model, (1, 28, 28), names)
    for g, r in zip(grads, _plain_synflow(model, (1, 28, 28), names)):
        assert torch.allclose(g * math.exp(log_scale), r, rtol=1e-9, atol=0)


def test_layer_norm_counts_as_its_scale():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3, bias=False), nn.LayerNorm(3), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([2.0, -3.0, 0.5]))
    (v1, _), log_scale = synflow_gradients(net, (4,), ["0", "2"])
    w2 = net[2].weight.detach().double().abs() * torch.tensor([2.0, 3.0, 0.5], dtype=torch.float64)
    assert torch.allclose(v1 * math.exp(log_scale), torch.outer(w2.sum(0), torch.ones(4, dtype=torch.float64)))


def _deep_bn_chain(depth):
    layers = []
    for _ in range(depth):
        bn = nn.BatchNorm2d(8)
        bn.running_var.fill_(0.0)  # BN scale 1/sqrt(eps) ≈ 316 per layer: the plain product overflows
        layers += [nn.Conv2d(8, 8, 3, padding=1, bias=False), bn, nn.ReLU()]
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)
    ).eval()


def test_deep_batchnorm_net_stays_finite_where_plain_float64_overflows():
    torch.manual_seed(0)
    model = _deep_bn_chain(120)
    names = [n for n, _ in quantizable_modules(model)]
    plain = _plain_synflow(model, (1, 8, 8), names)
    assert not all(torch.isfinite(g).all() for g in plain)
    grads, log_scale = synflow_gradients(model, (1, 8, 8), names)
    assert math.isfinite(log_scale) and log_scale > math.log(1e308)
    for g in grads:
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_untraceable_model_gives_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
                return self.fc(x)
            return -self.fc(x)

    try:
        synflow_gradients(Branchy(), (4,), ["fc"])
    except EvoproxyError as exc:
        assert "fx" in str(exc)
    else:
        raise AssertionError("expected EvoproxyError")


def stochastic_depth(x: torch.Tensor, p: float, mode: str, training: bool = True) -> torch.Tensor:
    """torchvision.ops.stochastic_depth's signature and its inference behaviour (identity)."""
    return x if not training or p == 0 else x * (torch.rand(len(x), 1) > p) / (1 - p)


torch.fx.wrap("stochastic_depth")  # as torchvision wraps it: a call the trace keeps whole


class _DropPathNet(nn.Module):
    def __init__(self, drop: bool):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.drop = nn.Linear(4, 4), nn.Linear(4, 2), drop

    def forward(self, x):
        h = self.a(x)
        return self.b(x + (stochastic_depth(h, 0.2, "row", self.training) if self.drop else h))


def test_stochastic_depth_of_efficientnet_and_convnext_is_the_identity_it_is_at_inference():
    with_drop = synflow_gradients(_DropPathNet(drop=True), (4,), ["a", "b"])
    without = synflow_gradients(_DropPathNet(drop=False), (4,), ["a", "b"])
    assert with_drop[1] == without[1] and all(torch.equal(g, h) for g, h in zip(with_drop[0], without[0]))


class _Tokens(nn.Module):
    """A vision transformer's constants: a class token concatenated to the patch signals and a
    position embedding added to them (`constants` False: neither)."""

    def __init__(self, constants: bool):
        super().__init__()
        torch.manual_seed(0)
        self.embed, self.head, self.constants = nn.Linear(4, 4), nn.Linear(4, 2), constants
        self.token, self.position = nn.Parameter(torch.randn(1, 1, 4)), nn.Parameter(torch.randn(1, 6, 4))

    def forward(self, x):
        h = self.embed(x)
        if self.constants:
            h = torch.cat([self.token.expand(x.shape[0], -1, -1), h], dim=1) + self.position
        return self.head(h.sum(1))


def test_constants_of_a_vision_transformer_are_dropped_as_biases_are():
    with_constants = synflow_gradients(_Tokens(True), (5, 4), ["embed", "head"])
    without = synflow_gradients(_Tokens(False), (5, 4), ["embed", "head"])
    assert with_constants[1] == without[1] and all(torch.equal(g, h) for g, h in zip(with_constants[0], without[0]))
