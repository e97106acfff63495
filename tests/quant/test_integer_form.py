"""A quantized layer's integer form: the exact sum of input levels times weight levels, times the
two steps; oneDNN's int8 convolution gives it to the bit; it is float fake quantization up to
rounding, and it does not depend on the number of threads."""

import copy

import pytest
import torch
from torch import nn

from evoproxy.model import layer_registry, load_model
from evoproxy.quant import quantize_model, quantize_weight
from evoproxy.quant.fakequant import IntegerForward, integer_form_fits, quantize_input, weight_steps

LAYERS = {
    "conv 3x3": (lambda: nn.Conv2d(6, 5, 3, padding=1, bias=False), (4, 6, 9, 9)),
    "conv stride 2, bias": (lambda: nn.Conv2d(6, 8, 3, stride=2, padding=1), (4, 6, 9, 9)),
    "depthwise": (lambda: nn.Conv2d(6, 6, 3, padding=1, groups=6), (4, 6, 9, 9)),
    "pointwise": (lambda: nn.Conv2d(16, 4, 1), (4, 16, 5, 5)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 5, padding=2), (4, 3, 20)),
    "linear on tokens": (lambda: nn.Linear(10, 7), (4, 3, 10)),
}


def _quantized(make, shape, w_bits, a_bits, seed=0):
    """A layer with its weight quantized to `w_bits`, an input quantizer at `a_bits` calibrated on
    one batch, and another batch partly outside that range."""
    torch.manual_seed(seed)
    module = make()
    with torch.no_grad():
        module.weight.copy_(quantize_weight(module.weight, w_bits))
    quantizer = quantize_input(module, w_bits, a_bits)
    with torch.no_grad():
        module(torch.randn(shape).relu())
    quantizer.calibrating = False
    return module, quantizer, torch.randn(shape) * 1.5 - 0.2


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("w_bits,a_bits", [(2, 8), (4, 4), (8, 8)])
def test_integer_form_is_the_exact_sum_times_the_steps(name, w_bits, a_bits):
    module, quantizer, x = _quantized(*LAYERS[name], w_bits, a_bits)
    forward = module.forward
    assert isinstance(forward, IntegerForward)
    scale, zero = quantizer.scale_and_zero()
    levels = torch.clamp(torch.round(x * (1 / torch.tensor(scale, dtype=torch.float32))), -zero, 2**a_bits - 1 - zero)
    steps = weight_steps(module.weight, w_bits)
    on_grid = module.weight.detach() / steps.view(-1, *[1] * (module.weight.dim() - 1))
    weight_levels = on_grid.round()
    assert (on_grid - weight_levels).abs().max() < 1e-4  # the weight lies on its grid, up to float rounding
    channel = -1 if isinstance(module, nn.Linear) else 1
    # The sum in float64, exact for these few terms, rounded once to float32.
    if isinstance(module, nn.Linear):
        sums = nn.functional.linear(levels.double(), weight_levels.double()).float()
    else:
        sums = module._conv_forward(levels.double(), weight_levels.double(), None).float()
    shape = [1] * sums.dim()
    shape[channel] = -1
    expected = sums * (torch.tensor(scale, dtype=torch.float32) * steps).view(shape)
    if module.bias is not None:
        expected = expected + module.bias.detach().view(shape)
    ways = [True, False] if forward.int8 else [False]  # oneDNN's int8 convolution where it is here, and float32
    for int8 in ways:
        forward.int8 = int8
        with torch.no_grad():
            assert torch.equal(module(x), expected), f"int8={int8}"
    # Float fake quantization computes the same up to the rounding of its products and sums.
    with torch.no_grad():
        floating = type(module).forward(module, quantizer.fake_quantize(x))
    torch.testing.assert_close(floating, expected, rtol=1e-5, atol=1e-5)


def test_int8_convolution_is_used_where_its_probe_shows_it_exact():
    from evoproxy.quant.fakequant import _onednn_int8

    plain, _, _ = _quantized(*LAYERS["conv 3x3"], 4, 8)
    depthwise, _, _ = _quantized(*LAYERS["depthwise"], 4, 8)
    linear, _, _ = _quantized(*LAYERS["linear on tokens"], 4, 8)
    assert plain.forward.int8 == _onednn_int8(6, 5, (3, 3), (1, 1), (1, 1), (1, 1), 1, 8, 4)
    assert depthwise.forward.int8 == _onednn_int8(6, 6, (3, 3), (1, 1), (1, 1), (1, 1), 6, 8, 4)
    assert not linear.forward.int8


def test_a_layer_whose_sums_could_reach_2_to_the_24_computes_in_float():
    wide = nn.Linear(600, 3)  # 600 · 255 · 127 ≥ 2^24; at 4-bit weights 600 · 255 · 7 is below
    assert not integer_form_fits(wide, 8, 8) and integer_form_fits(wide, 4, 8)
    assert not integer_form_fits(wide, 32, 8) and not integer_form_fits(wide, 4, 32)
    module, quantizer, x = _quantized(lambda: nn.Linear(600, 3), (4, 600), 8, 8)
    assert not isinstance(module.forward, IntegerForward) and not quantizer.integer
    with torch.no_grad():
        assert torch.equal(module(x), nn.functional.linear(quantizer.fake_quantize(x), module.weight, module.bias))


@pytest.mark.slow
def test_quantized_model_copies_and_gives_the_same_logits_on_any_number_of_threads():
    model, _ = load_model("default")
    layers = layer_registry(model, (1, 28, 28))
    torch.manual_seed(0)
    calib, x = torch.randn(64, 1, 28, 28), torch.randn(50, 1, 28, 28)
    bits = [8] + [2, 3, 4] * 6 + [3, 4, 8]
    qmodel = quantize_model(model, layers, bits, calib)
    assert sum(isinstance(m.forward, IntegerForward) for m in qmodel.modules() if hasattr(m, "weight")) == len(layers)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(1)
            one = qmodel(x)
            torch.set_num_threads(2)
            assert torch.equal(qmodel(x), one)
            assert torch.equal(copy.deepcopy(qmodel)(x), one)  # a copy packs its int8 weights again
    finally:
        torch.set_num_threads(threads)
