import numpy as np
import pytest
import torch
from torch import nn

from evoproxy.model import (
    EVAL_BATCH,
    accuracy,
    calibration_batch,
    calibration_set,
    layer_registry,
    load_model,
    normalize,
)
from evoproxy.errors import ParameterError
from evoproxy.quant import (
    ActQuant,
    AdaRoundSettings,
    QatSettings,
    QuantSettings,
    model_bops,
    model_size_mb,
    quantize_model,
    quantize_weight,
)
from evoproxy.quant.fakequant import BN_BATCH


def test_size_and_bops_match_a_hand_count():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, bias=True), nn.Flatten(), nn.Linear(2 * 4 * 4, 3, bias=False))
    layers = layer_registry(model, (1, 6, 6))
    # conv: 18 weights at 4 bits + 2 biases at 32 bits; linear: 96 weights at 2 bits.
    assert model_size_mb(layers, [4, 2]) == (18 * 4 + 2 * 32 + 96 * 2) / 8e6
    # conv: 4×4 outputs × 2 channels × 9 MACs = 288; linear: 96 MACs.
    assert model_bops(layers, [4, 2], 8) == 288 * 4 * 8 + 96 * 2 * 8
    assert model_bops(layers, [4, 2], [6, 5]) == 288 * 4 * 6 + 96 * 2 * 5


def test_weight_quantizer_uses_at_most_2q_plus_1_levels_per_channel_and_is_pure():
    torch.manual_seed(0)
    w = torch.randn(4, 3, 3, 3)
    before = w.clone()
    for bits in (2, 3, 4):
        q = quantize_weight(w, bits)
        assert torch.equal(w, before)
        for c in range(4):
            assert len(torch.unique(q[c])) <= 2**bits - 1
        assert (q - w).pow(2).mean() < w.pow(2).mean()
    errs = [(quantize_weight(w, b) - w).pow(2).mean().item() for b in (2, 3, 4, 8)]
    assert errs == sorted(errs, reverse=True)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_channel_gets_the_clipping_ratio_of_least_error_as_a_search_over_all_ratios_at_once_gives(dtype):
    from evoproxy.quant.weights import CLIP_RATIOS

    w = (torch.randn(24, 8, 3, 3, generator=torch.Generator().manual_seed(0)) * torch.rand(24, 1, 1, 1)).to(dtype)
    w[3] = 0.0  # an all-zero channel
    for bits in range(2, 9):
        q = 2 ** (bits - 1) - 1
        flat = w.reshape(24, -1)
        scales = CLIP_RATIOS.to(flat)[:, None] * flat.abs().amax(1).clamp_min(1e-12)[None, :] / q  # (R, C)
        levels = torch.clamp(torch.round(flat[None] / scales[..., None]), -q, q)
        best = ((levels * scales[..., None] - flat[None]) ** 2).sum(-1).argmin(0)  # ties: the first ratio
        expected = levels[best, torch.arange(24)] * scales[best, torch.arange(24)][:, None]
        assert torch.equal(quantize_weight(w, bits), expected.reshape(w.shape))


def test_8_bit_quantization_keeps_accuracy_within_half_a_point():
    model, _ = load_model("default")
    layers = layer_registry(model, (1, 28, 28))
    images, labels = calibration_set()
    x = normalize(images)
    fp = accuracy(model, x, labels)
    for bn in (True, False):
        q = quantize_model(model, layers, [8] * len(layers), x[:256], QuantSettings(8, bn))
        # Stated tolerance: W8A8 changes accuracy on the 512 calibration images by under 0.5 points.
        assert abs(accuracy(q, x, labels) - fp) < 0.5


def test_quantize_model_leaves_the_model_untouched():
    model, _ = load_model("default")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = layer_registry(model, (1, 28, 28))
    quantize_model(model, layers, [2] * len(layers), calibration_batch(32)[0])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("batchnorm", [False, True])
def test_quantize_model_runs_the_calibration_images_only_for_a_batchnorm_or_an_input_quantizer(batchnorm):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), *([nn.BatchNorm1d(8)] if batchnorm else []), nn.ReLU(), nn.Linear(8, 3))
    layers = layer_registry(model, (8,))
    runs = []  # the hook travels into quantize_model's copy
    model.register_forward_pre_hook(lambda module, inputs: runs.append(len(inputs[0])))
    calib = torch.randn(300, 8)
    reestimation = [len(b) for b in calib.split(BN_BATCH)] if batchnorm else []
    quantize_model(model, layers, [4, 4], calib, QuantSettings(32))
    assert runs == reestimation
    runs.clear()
    quantize_model(model, layers, [4, 4], calib, QuantSettings(8))
    assert runs == reestimation + [len(b) for b in calib.split(EVAL_BATCH)]  # then the input ranges'


def test_activation_quantizer_is_the_fused_ops_arithmetic_and_keeps_its_gradient():
    gen = torch.Generator().manual_seed(0)
    for bits in (2, 4, 8):
        hook = ActQuant(bits)
        calib = torch.randn(4000, generator=gen) * 3 + 1
        hook(None, (calib,))  # calibrating: records the range only
        hook.calibrating = False
        scale, zero = hook.scale_and_zero()
        x = torch.randn(20000, generator=gen) * 4 + 1  # partly outside the calibrated range
        x = torch.cat([x, torch.tensor([3e7, -3e7, 1e30, -1e30])])  # steps beyond 2^24, where float32 rounds
        fused = torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, 2**bits - 1)
        with torch.no_grad():
            assert torch.equal(hook(None, (x,))[0], fused)
        leaf = x.clone().requires_grad_()
        hook(None, (leaf,))[0].sum().backward()
        inside = (fused > fused.min()) & (fused < fused.max())  # within the range: the straight-through gradient
        assert torch.equal(leaf.grad[inside], torch.ones(int(inside.sum())))


@pytest.mark.parametrize(
    "settings, bad",
    [
        (QuantSettings, {"act_bits": 0}),
        (QuantSettings, {"act_bits": (8, 33)}),
        (QuantSettings, {"act_bits": True}),
        (QatSettings, {"optimizer": "rmsprop"}),
        (QatSettings, {"epochs": 0}),
        (QatSettings, {"lr": float("inf")}),
        (AdaRoundSettings, {"batch_size": 0}),
        (AdaRoundSettings, {"iters": 2.5}),
    ],
)
def test_settings_out_of_range_name_the_class_and_parameter(settings, bad):
    with pytest.raises(ParameterError) as info:
        settings(**bad)
    [(param, value)] = bad.items()
    assert (info.value.owner, info.value.param, info.value.value) == (settings.__name__, param, value)


def test_settings_in_range_keep_their_values_and_defaults():
    assert QatSettings().lr == 0.01 and QatSettings(optimizer="adam").lr == 1e-4
    assert QuantSettings([4, 8]).act_bits == (4, 8) and QuantSettings(np.int64(6)).act_bits == 6
