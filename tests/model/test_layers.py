import pytest
import torch
from torch import nn

from evoproxy.errors import EvoproxyError, EvoproxyWarning
from evoproxy.model import ResNet20, layer_registry
from evoproxy.stats import compute_stats


def test_depthwise_grouped_conv_and_linear_are_registered_with_macs():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8×8 out: 64 positions × 8 ch × 27 = 13824 MACs
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 64 × 8 × 9 = 4608
        nn.Conv2d(8, 8, 1, groups=2, bias=False),  # grouped: 64 × 8 × 4 = 2048
        nn.Flatten(),
        nn.Linear(512, 10),
    )  # 5120
    layers = layer_registry(model, (3, 8, 8))
    assert [l.kind for l in layers] == ["conv", "depthwise", "grouped", "linear"]
    assert [l.index for l in layers] == [0, 1, 2, 3]
    assert [l.name for l in layers] == ["0", "1", "2", "4"]
    assert [l.macs for l in layers] == [13824, 4608, 2048, 5120]
    assert [l.params for l in layers] == [8 * 27 + 8, 8 * 9 + 8, 8 * 4, 5120 + 10]
    assert layers[1].weight_shape == (8, 1, 3, 3)


def test_resnet20_registry_agrees_with_named_modules():
    model = ResNet20()
    layers = layer_registry(model, (1, 28, 28))
    expected = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [l.name for l in layers] == expected
    assert len(layers) == 22
    assert sum(l.name.endswith("shortcut.0") for l in layers) == 2
    assert layers[-1].kind == "linear"


def test_model_without_quantizable_layers_is_rejected():
    with pytest.raises(EvoproxyError, match="no Conv1d, Conv2d or Linear"):
        layer_registry(nn.Sequential(nn.ReLU()), (4,))


def test_wrong_input_shape_is_a_clear_error():
    with pytest.raises(EvoproxyError, match="does not accept inputs of shape"):
        layer_registry(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (5,))


def test_layers_the_forward_pass_skips_are_left_out_with_a_warning():
    class WithAuxHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.aux, self.head = nn.Linear(4, 8), nn.Linear(8, 3), nn.Linear(8, 2)

        def forward(self, x):
            return self.head(self.body(x))

    with pytest.warns(EvoproxyWarning, match="aux"):
        layers = layer_registry(WithAuxHead(), (4,))
    assert [l.name for l in layers] == ["body", "head"] and [l.index for l in layers] == [0, 1]


def test_a_model_that_returns_a_tuple_gets_a_one_line_error():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x), x

    with pytest.raises(EvoproxyError, match="returns a tuple, not a tensor of logits"):
        compute_stats(Pair(), torch.randn(8, 4), torch.randint(0, 3, (8,)))
