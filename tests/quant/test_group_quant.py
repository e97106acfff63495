"""Group-wise and asymmetric weight formats: the default stays today's per-channel quantizer bit for
bit; a group gets its own float16 scale (and zero-point) and at most 2^b levels; the cost counts the
scales and zero-points exactly; the settings, the cache, quantize_model and the sweep carry the
format; and quantize_levels gives the levels, steps and zero-points that the fake-quantized weight is."""

from collections import OrderedDict

import pytest
import torch
from torch import nn

from evoproxy.errors import EvoproxyError, ParameterError
from evoproxy.model import accuracy, layer_registry
from evoproxy.quant import (
    SCALE_BITS,
    QuantSettings,
    WeightCache,
    WeightFormat,
    average_bits,
    layer_size_bits,
    model_size_mb,
    quantize_levels,
    quantize_model,
    quantize_weight,
    weight_quantization_error,
)
from evoproxy.quant.fakequant import IntegerForward
from evoproxy.quant.sweep import Sweep
from evoproxy.quant.weights import CLIP_RATIOS


def _old_quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """The per-channel quantizer as it was before weight formats existed, copied verbatim."""
    q = 2 ** (bits - 1) - 1
    flat = w.detach().reshape(w.shape[0], -1)
    peak = flat.abs().amax(1).clamp_min(1e-12)
    scales = CLIP_RATIOS.to(flat)[:, None] * peak[None, :] / q
    levels = torch.clamp(torch.round(flat[None] / scales[..., None]), -q, q)
    err = ((levels * scales[..., None] - flat[None]) ** 2).sum(-1)
    best = err.argmin(0)
    idx = torch.arange(flat.shape[0])
    return (levels[best, idx] * scales[best, idx][:, None]).reshape(w.shape).to(w.dtype)


def _groups(q: torch.Tensor, g: int) -> torch.Tensor:
    return q.reshape(-1, g)


def _mlp(*widths: int) -> nn.Sequential:
    torch.manual_seed(0)
    mods = []
    for a, b in zip(widths, widths[1:]):
        mods += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*mods[:-1]).eval()


def test_default_format_is_the_old_per_channel_quantizer_bit_for_bit():
    gen = torch.Generator().manual_seed(1)
    for shape in [(8, 3, 3, 3), (16, 40), (5, 7)]:
        for dtype in (torch.float32, torch.float64):
            w = torch.randn(shape, generator=gen, dtype=dtype)
            for bits in (2, 3, 4, 8):
                old = _old_quantize_weight(w, bits)
                assert torch.equal(quantize_weight(w, bits), old)
                assert torch.equal(quantize_weight(w, bits, WeightFormat()), old)
    w = torch.randn(6, 20, generator=gen)
    assert torch.equal(weight_quantization_error(w, 3), (_old_quantize_weight(w.double(), 3) - w.double()) ** 2)


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_symmetric_groups_have_their_own_float16_scale_and_at_most_2q_plus_1_levels(bits):
    q, g = 2 ** (bits - 1) - 1, 16
    gen = torch.Generator().manual_seed(2)
    magnitude = torch.tensor([1e-3, 1.0, 30.0, 0.2]).repeat_interleave(g)  # very different groups in each row
    w = torch.randn(6, 4 * g, generator=gen) * magnitude
    before = w.clone()
    out = quantize_weight(w, bits, WeightFormat(g))
    assert torch.equal(w, before) and out.shape == w.shape and out.dtype == w.dtype
    groups = _groups(out, g)
    scales = groups.abs().amax(1) / q  # the group's largest magnitude lies on level ±q
    assert torch.all(scales > 0)
    assert torch.equal(scales.half().float(), scales)  # representable in float16
    levels = groups / scales[:, None]
    assert torch.equal(levels, levels.round()) and levels.abs().max() <= q
    assert all(len(torch.unique(row)) <= 2 * q + 1 for row in groups)
    assert len(torch.unique(scales[:4])) == 4  # one scale per group, not per row
    # A group-wise scale follows its group: the small group is far better off than at the row's scale.
    per_channel = quantize_weight(w, bits)
    assert (out - w)[:, :g].pow(2).sum() < (per_channel - w)[:, :g].pow(2).sum()


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_asymmetric_groups_use_at_most_2b_levels_on_a_float16_grid_that_holds_zero(bits):
    g = 64
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 2 * g, generator=gen) + torch.tensor([0.5, -2.0]).repeat_interleave(g)
    groups = _groups(quantize_weight(w, bits, WeightFormat(g, asymmetric=True)), g)
    for values in groups:
        distinct = torch.unique(values)
        assert len(distinct) <= 2**bits
        step = distinct.diff().min()  # random groups use adjacent levels
        assert step.half().float() == step
        offsets = (distinct - distinct[0]) / step
        assert torch.equal(offsets, offsets.round()) and offsets.max() <= 2**bits - 1
        assert torch.equal(distinct / step, (distinct / step).round())  # the zero-point puts 0 on a level


@pytest.mark.parametrize("fmt", [WeightFormat(8), WeightFormat(8, True), WeightFormat(None, True)])
def test_each_group_gets_the_best_clipping_ratio_with_float16_scales(fmt):
    bits = 3
    gen = torch.Generator().manual_seed(4)
    w = torch.randn(3, 2, 8, generator=gen) * torch.tensor([0.01, 1.0, 7.0])[:, None, None]
    g = fmt.group_size or 16
    out = _groups(quantize_weight(w, bits, fmt), g)
    for group, got in zip(_groups(w, g), out):
        errors = []
        for ratio in CLIP_RATIOS.tolist():  # each candidate, one group at a time
            if fmt.asymmetric:
                lo, hi = min(group.min().item(), 0.0), max(group.max().item(), 0.0)
                scale = torch.tensor(ratio * (hi - lo) / (2**bits - 1)).half().float()
                zero = torch.round(-ratio * lo / scale).clamp(0, 2**bits - 1)
                cand = (torch.round(group / scale) + zero).clamp(0, 2**bits - 1).sub(zero) * scale
            else:
                q = 2 ** (bits - 1) - 1
                scale = torch.tensor(ratio * group.abs().max().item() / q).half().float()
                cand = torch.round(group / scale).clamp(-q, q) * scale
            errors.append((cand - group).pow(2).sum().item())
        assert (got - group).pow(2).sum().item() <= min(errors) * (1 + 1e-5) + 1e-12


def test_asymmetric_fits_an_all_positive_group_better_than_symmetric():
    gen = torch.Generator().manual_seed(5)
    w = torch.rand(8, 32, generator=gen) * 0.5 + 1.0  # every weight in [1, 1.5]
    for bits in (3, 4):
        for g in (None, 16):
            sym = (quantize_weight(w, bits, WeightFormat(g)) - w).pow(2).sum()
            asym = (quantize_weight(w, bits, WeightFormat(g, True)) - w).pow(2).sum()
            assert asym < 0.5 * sym


def test_smaller_groups_quantize_a_heavy_tailed_weight_better():
    torch.manual_seed(6)
    w = torch.distributions.StudentT(2.0).sample((64, 256))
    for asymmetric in (False, True):
        for bits in (3, 4):
            errs = [(quantize_weight(w, bits, WeightFormat(g, asymmetric)) - w).pow(2).sum() for g in (256, 64, 16)]
            assert errs[0] > errs[1] > errs[2]


def test_32_bits_is_a_copy_and_a_group_size_must_divide_the_row():
    w = torch.randn(4, 24)
    for fmt in (WeightFormat(8), WeightFormat(8, True)):
        copy = quantize_weight(w, 32, fmt)
        assert torch.equal(copy, w) and copy is not w
    with pytest.raises(ParameterError, match="row length 24"):
        quantize_weight(w, 4, WeightFormat(16))


def test_bits_per_weight_counts_16_bit_scales_and_zero_points_per_group():
    assert SCALE_BITS == 16
    assert WeightFormat().bits_per_weight(4) == 4.0
    assert WeightFormat(None, True).bits_per_weight(4) == 4.0  # per channel: as before formats existed
    assert WeightFormat(128).bits_per_weight(4) == 4.125
    assert WeightFormat(128, True).bits_per_weight(4) == 4 + 20 / 128
    assert WeightFormat(128, True).bits_per_weight(32) == 32.0  # a float layer stores no scales


def test_sizes_are_exact_integers_that_match_a_hand_count():
    model = _mlp(256, 8, 4)
    layers = layer_registry(model, (256,))
    fc1, fc2 = layers
    assert layer_size_bits(fc1, 4) == layer_size_bits(fc1, 4, 32, WeightFormat()) == 2048 * 4 + 8 * 32
    sym, asym = WeightFormat(8), WeightFormat(8, True)
    # fc1: 2048 weights at 4 bits, 256 groups of 8 with a 16-bit scale, 8 biases at 32 bits.
    assert layer_size_bits(fc1, 4, fmt=sym) == 2048 * 4 + 256 * 16 + 8 * 32
    assert layer_size_bits(fc1, 4, fmt=asym) == 2048 * 4 + 256 * (16 + 4) + 8 * 32
    assert isinstance(layer_size_bits(fc1, 4, fmt=asym), int)
    # fc2: 32 weights at 3 bits in 4 groups, 4 biases.
    assert layer_size_bits(fc2, 3, fmt=asym) == 32 * 3 + 4 * (16 + 3) + 4 * 32
    assert model_size_mb(layers, [4, 3], fmt=asym) == (2048 * 4 + 256 * 20 + 8 * 32 + 32 * 3 + 4 * 19 + 4 * 32) / 8e6
    assert model_size_mb(layers, [4, 3]) == (2048 * 4 + 8 * 32 + 32 * 3 + 4 * 32) / 8e6


def test_average_bits_counts_weights_with_their_scales_but_not_biases():
    layers = layer_registry(_mlp(256, 8, 4), (256,))
    for fmt in (WeightFormat(), WeightFormat(8), WeightFormat(8, True), WeightFormat(None, True)):
        for bits in (2, 4, 8):
            assert average_bits(layers, bits, fmt) == fmt.bits_per_weight(bits)
            assert average_bits(layers, [bits, bits], fmt) == fmt.bits_per_weight(bits)
    assert average_bits(layers, [4, 2], WeightFormat(8, True)) == (2048 * 4 + 256 * 20 + 32 * 2 + 4 * 18) / 2080


def test_check_layers_names_the_first_layer_whose_row_the_group_does_not_divide():
    torch.manual_seed(0)
    model = nn.Sequential(
        OrderedDict(fc1=nn.Linear(128, 1000), act=nn.ReLU(), fc2=nn.Linear(1000, 4), fc3=nn.Linear(4, 2))
    )
    layers = layer_registry(model, (128,))
    WeightFormat().check_layers(layers)
    WeightFormat(4).check_layers(layers)
    with pytest.raises(ParameterError) as info:
        WeightFormat(128).check_layers(layers)
    message = str(info.value)
    assert "\n" not in message and "fc2" in message and "1000" in message and "fc3" not in message
    assert info.value.owner == "WeightFormat" and info.value.param == "group_size" and info.value.value == 128
    with pytest.raises(ParameterError, match="fc2"):
        quantize_model(model, layers, [4] * 3, torch.randn(8, 128), QuantSettings(32, False, group_size=128))
    with pytest.raises(ParameterError, match="fc2"):
        layer_size_bits(layers[1], 4, fmt=WeightFormat(128))


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8"])
def test_settings_and_formats_reject_a_group_size_that_is_not_a_positive_whole_number(bad):
    with pytest.raises(ParameterError, match="QuantSettings.group_size"):
        QuantSettings(group_size=bad)
    with pytest.raises(ParameterError, match="WeightFormat.group_size"):
        WeightFormat(bad)


def test_settings_keep_their_positional_form_and_name_a_non_default_format():
    default = QuantSettings(4, False)
    assert (default.act_bits, default.bn_recalibration) == (4, False)
    assert default.weight_format == WeightFormat()
    assert default.weight_quantizer == "symmetric per-channel, MSE-searched clipping"
    grouped = QuantSettings(4, False, group_size=128, asymmetric=True)
    assert grouped.weight_format == WeightFormat(128, True)
    assert "asymmetric, groups of 128" in grouped.weight_quantizer
    assert QuantSettings(group_size=64, weight_quantizer="mine").weight_quantizer == "mine"
    with pytest.raises(ParameterError, match="asymmetric"):
        QuantSettings(asymmetric=1)
    assert WeightFormat(128).describe() == "symmetric, groups of 128"
    assert WeightFormat(None, True).describe() == "asymmetric per-channel"


@pytest.mark.parametrize("asymmetric", [False, True])
def test_quantize_model_gives_group_wise_weights_and_keeps_the_format_out_of_integer_form(asymmetric):
    model = _mlp(64, 32, 8)
    layers = layer_registry(model, (64,))
    fmt = WeightFormat(16, asymmetric)
    calib = torch.randn(32, 64, generator=torch.Generator().manual_seed(7))
    qmodel = quantize_model(
        model, layers, [3, 4], calib, QuantSettings(32, False, group_size=16, asymmetric=asymmetric)
    )
    for module, bits in zip((qmodel[0], qmodel[2]), (3, 4)):
        groups = _groups(module.weight.detach(), 16)
        assert all(len(torch.unique(row)) <= 2**bits for row in groups)
        step = groups.abs().amax(1) / (2 ** (bits - 1) - 1)
        if not asymmetric:  # each group on its own float16 grid
            assert torch.equal(step.half().float(), step)
            assert len(torch.unique(step)) > len(module.weight)  # more than one scale per row
    assert torch.equal(qmodel[0].weight, quantize_weight(model[0].weight, 3, fmt))
    assert torch.equal(model[0].weight, _mlp(64, 32, 8)[0].weight)  # the model itself is untouched
    with_inputs = quantize_model(model, layers, [3, 4], calib, QuantSettings(8, False, group_size=16))
    assert not isinstance(with_inputs[0].forward, IntegerForward)  # its steps are per channel only
    plain = quantize_model(model, layers, [3, 4], calib, QuantSettings(8, False))
    assert isinstance(plain[0].forward, IntegerForward)
    with pytest.raises(EvoproxyError, match="cache"):
        quantize_model(model, layers, [3, 4], calib, QuantSettings(8, False, group_size=16), WeightCache(model, layers))


def test_sweep_with_a_group_wise_cache_gives_quantize_models_accuracies():
    model = _mlp(64, 32, 10)
    layers = layer_registry(model, (64,))
    gen = torch.Generator().manual_seed(8)
    calib, x = torch.randn(64, 64, generator=gen), torch.randn(200, 64, generator=gen)
    y = model(x).argmax(1)
    settings = QuantSettings(4, False, group_size=16, asymmetric=True)
    w_configs = [(2, 3), (3, 3), (4, 2)]
    sweep = Sweep(model, layers, WeightCache(model, layers, settings.weight_format), bn_recalibration=False)
    swept = sweep.measure([tuple((w, 4) for w in c) for c in w_configs], calib, x, y)
    assert swept == [accuracy(quantize_model(model, layers, c, calib, settings), x, y) for c in w_configs]


FORMATS = [WeightFormat(), WeightFormat(16), WeightFormat(None, True), WeightFormat(16, True)]


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.describe())
@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_levels_steps_and_zero_points_give_back_the_fake_quantized_weight(fmt, bits):
    w = torch.randn(12, 48, generator=torch.Generator().manual_seed(bits))
    w[3] = w[3].abs()  # a one-signed row: the asymmetric zero-point sits at the range's end
    at = quantize_levels(w, bits, fmt)
    assert torch.equal(at.dequantize().reshape(w.shape), quantize_weight(w, bits, fmt))
    rows = 12 * 48 // (fmt.group_size or 48)
    assert at.levels.shape == (rows, fmt.group_size or 48) and at.scale.shape == (rows, 1)
    assert torch.equal(at.levels, at.levels.round())
    low, high = (0, 2**bits - 1) if fmt.asymmetric else (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1)
    assert low <= at.levels.min() and at.levels.max() <= high
    if fmt.asymmetric:
        assert torch.equal(at.zero, at.zero.round()) and low <= at.zero.min() and at.zero.max() <= high
    else:
        assert at.zero is None
    if fmt != WeightFormat():  # 16-bit scales, as the cost counts them
        assert torch.equal(at.scale.half().float(), at.scale)
