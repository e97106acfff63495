"""`route_functional`: a layer whose weight its parent applies through F.linear or F.conv2d (as torchvision's
Swin attention does) is a layer to every stage; what the routing cannot follow stays in float, named."""

import copy
import pickle

import pytest
import torch
from torch import fx, nn
from torch.nn import functional as F

import user_models
from evoproxy.errors import EvoproxyWarning
from evoproxy.model import layer_registry
from evoproxy.model.functional import RoutedForward
from evoproxy.quant import QuantSettings, quantize_model
from evoproxy.quant.qat import lsq_model
from evoproxy.stats import StatsSettings, compute_stats


class _Functional(nn.Module):
    """A convolution, a Linear layer and their parent, which applies them through F.conv2d and F.linear
    (by keyword); three more layers whose weights it uses as no layer would: with another bias, another
    padding, transposed."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 3)
        self.other_bias, self.other_padding = nn.Linear(4, 3), nn.Conv2d(1, 4, 3, padding=1)
        self.transposed = nn.Linear(3, 4)

    def forward(self, x):
        h = F.relu(F.conv2d(x, self.conv.weight, self.conv.bias, 1, (1, 1)))
        h = h + F.conv2d(x, self.other_padding.weight, self.other_padding.bias, padding=2)[..., 1:-1, 1:-1]
        h = h.mean((2, 3))
        out = F.linear(input=h, weight=self.fc.weight, bias=self.fc.bias)
        return out + F.linear(h, self.other_bias.weight, 2 * self.other_bias.bias) + h @ self.transposed.weight


def _counting(module: nn.Module) -> list:
    calls = []
    module.register_forward_hook(lambda *args: calls.append(1))
    return calls


def test_layers_applied_through_functions_are_layers_that_compute_the_same():
    torch.manual_seed(0)
    model = _Functional().eval()
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    want = model(x)
    with pytest.warns(EvoproxyWarning) as warned:
        layers = layer_registry(model, (1, 8, 8))
    assert [(l.name, l.macs) for l in layers] == [("conv", 4 * 8 * 8 * 9), ("fc", 3 * 4)]
    assert isinstance(model.forward, RoutedForward) and model.forward.layers == [model.conv, model.fc]
    copies = [copy.deepcopy(model), pickle.loads(pickle.dumps(model))]
    calls = _counting(model.fc)
    for routed in (model, *copies):
        assert torch.equal(routed(x), want)
    assert len(calls) == 1  # the copies route to their own layers
    assert all(c.forward.owner is c and c.forward.layers == [c.conv, c.fc] for c in copies)
    said = str(warned[0].message)
    assert said.startswith("3 layer(s) not called in the forward pass stay at full precision")
    assert "other_bias (its weight goes to linear in the _Functional)" in said
    assert "other_padding (its weight goes to conv2d in the _Functional)" in said
    assert "transposed (its weight goes to matmul in the _Functional)" in said


def test_a_layer_also_called_as_a_module_is_not_routed_and_the_registry_routes_once():
    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) + F.linear(x, self.fc.weight, self.fc.bias)

    both = Both()
    assert [l.name for l in layer_registry(both, (4,))] == ["fc"] and "forward" not in vars(both)
    swin = user_models.common_block("swin")
    first = layer_registry(swin, (1, 8, 8))
    assert layer_registry(swin, (1, 8, 8)) == first
    calls = _counting(swin.blocks[1].attn.qkv)
    swin(torch.rand(2, 1, 8, 8))
    assert len(calls) == 1 and swin.blocks[1].attn.forward.layers == [swin.blocks[1].attn.qkv, swin.blocks[1].attn.proj]


def test_swin_window_attention_projections_have_statistics_and_quantizers():
    """The registry has Swin's qkv and proj, called through F.linear; their activations (one row per
    window), Hessians and measured perturbations are recorded; PTQ quantizes their inputs (4 windows of
    4 tokens a image), QAT learns their input steps, and torch.fx sees them as modules."""
    g = torch.Generator().manual_seed(0)
    model = user_models.common_block("swin").eval()
    x, y = torch.rand(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)
    with pytest.warns(EvoproxyWarning, match="SynFlow: function roll has no linearisation"):  # the shift
        stats = {l.info.name: l for l in compute_stats(model, x, y, "swin", StatsSettings(hutchinson_samples=2)).layers}
    assert [n for n in stats if "attn" in n] == [f"blocks.{i}.attn.{p}" for i in (0, 1) for p in ("qkv", "proj")]
    qkv = stats["blocks.1.attn.qkv"]
    assert qkv.A.shape == (8 * 4, 4, 24) and qkv.info.macs == 4 * 4 * 24 * 8
    assert torch.isfinite(qkv.H).all() and qkv.H.abs().sum() > 0 and qkv.MSE[2].min() > 0

    layers = [stats[n].info for n in stats]
    index = [l.name for l in layers].index("blocks.1.attn.qkv")
    act_bits = [32] * len(layers)
    float_inputs = quantize_model(model, layers, [8] * len(layers), x, QuantSettings(tuple(act_bits)))(x)
    act_bits[index] = 2
    qmodel = quantize_model(model, layers, [8] * len(layers), x, QuantSettings(tuple(act_bits)))
    quantizer = next(iter(qmodel.blocks[1].attn.qkv._forward_pre_hooks.values()))
    assert quantizer.bits == 2 and quantizer.lo < 0 < quantizer.hi
    assert not torch.allclose(qmodel(x), float_inputs, atol=1e-3)

    lsq = lsq_model(model, layers, [4] * len(layers), 8, x)
    F.cross_entropy(lsq(x), y).backward()
    assert lsq.blocks[1].attn.qkv.act_quantizer.step.grad != 0
    traced = fx.symbolic_trace(lsq.eval())
    called = {n.target for n in traced.graph.nodes if n.op == "call_module"}
    assert {"blocks.0.attn.qkv", "blocks.1.attn.proj"} <= called
