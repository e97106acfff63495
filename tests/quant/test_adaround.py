"""PTQ with learned rounding (AdaRound), reconstructed block by block: what counts as a block,
a lower output error than round-to-nearest at the same steps, hardened weights on the PTQ
quantizer's grid, and `evoproxy quantize --method adaround` with its one-line errors."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

import user_models
from evoproxy.cli import main
from evoproxy.errors import EvoproxyError
from evoproxy.model import layer_registry
from evoproxy.model.nets import ResNet20
from evoproxy.quant import (
    AdaRoundQuantizer,
    AdaRoundSettings,
    QuantSettings,
    adaround_model,
    quantize_model,
    quantize_weight,
    reconstruction_blocks,
    weight_steps,
)
from evoproxy.quant.adaround import GAMMA, ZETA

FLOAT_ACTS = QuantSettings(act_bits=32, bn_recalibration=False)
QUIET = dict(log=lambda m: None)


def test_blocks_are_residual_blocks_transformer_blocks_or_single_layers():
    resnet = ResNet20()
    blocks = reconstruction_blocks(resnet, layer_registry(resnet, (1, 28, 28)))
    assert [b for b, _ in blocks] == ["conv1", *(f"layers.{i}" for i in range(9)), "fc"]
    assert dict(blocks)["layers.3"] == ("layers.3.conv1", "layers.3.conv2", "layers.3.shortcut.0")
    transformer = user_models.transformer()
    assert [b for b, _ in reconstruction_blocks(transformer, layer_registry(transformer, (6, 4)))] == [
        "embed",
        "block",
        "head",
    ]
    mlp = user_models.mlp()  # a Sequential: layer by layer
    assert reconstruction_blocks(mlp, layer_registry(mlp, (12,))) == [("0", ("0",)), ("2", ("2",)), ("4", ("4",))]


@pytest.mark.parametrize("reg", [(0.0, 20.0), (0.5, 20.0), (0.5, 7.3), (0.5, 2.0)])
def test_the_soft_weights_gradient_is_autograds_of_the_weight_plus_the_rounding_regulariser(reg):
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3)
    qz = AdaRoundQuantizer(w, w.abs().amax((1, 2, 3)) / 4, 3)  # q = 3: the largest weights are clipped
    with torch.no_grad():
        qz.v.add_(3 * torch.randn_like(qz.v))  # some h clamped at 0 or 1
    qz.reg, g = reg, torch.randn_like(w)
    (qz(w) * g).sum().backward()
    v = qz.v.detach().requires_grad_()
    h = torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)
    weight = torch.clamp(torch.floor(w / qz.step) + h, -qz.q, qz.q) * qz.step
    reg_weight, beta = reg
    ((weight * g).sum() + reg_weight * (1 - (2 * h - 1).abs().pow(beta)).sum()).backward()
    assert torch.equal(qz(w), weight.detach())
    assert (v.grad == 0).any() and torch.allclose(qz.v.grad, v.grad, rtol=1e-5, atol=1e-7)


@pytest.fixture(scope="module")
def one_layer():
    """A 3×3 convolution, smooth random images and its AdaRound at 2 bits. The pixels of an
    image are correlated as in natural images: on independent inputs, the output error is the sum
    of each weight's own error, and round-to-nearest is already the best rounding."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(4, 6, 3)).eval()
    images = torch.randn(64, 4, 6, 6).cumsum(-1).cumsum(-2) / 3
    layers = layer_registry(model, (4, 6, 6))
    qmodel, records = adaround_model(
        model, layers, [2], images, AdaRoundSettings(iters=400, batch_size=16), FLOAT_ACTS, **QUIET
    )
    return model, images, qmodel, records


def _error(model, images, reference):
    with torch.no_grad():
        return (model(images) - reference(images)).pow(2).mean().item()


def test_adaround_on_one_layer_lowers_its_output_error_below_round_to_nearest(one_layer):
    model, images, qmodel, records = one_layer
    rtn = nn.Sequential(nn.Conv2d(4, 6, 3)).eval()
    rtn.load_state_dict(model.state_dict())
    with torch.no_grad():
        rtn[0].weight.copy_(quantize_weight(model[0].weight, 2))
    assert _error(qmodel, images, model) < 0.8 * _error(rtn, images, model)
    [record] = records
    assert record.name == "0" and record.error < 0.8 * record.rtn_error


def test_hardened_weights_lie_on_the_ptq_grid_a_step_from_round_to_nearest(one_layer):
    model, _, qmodel, _ = one_layer
    w, learned = model[0].weight.detach(), qmodel[0].weight.detach()
    rtn = quantize_weight(w, 2)
    step = weight_steps(rtn, 2)[:, None, None, None]
    levels = learned / step
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() <= 1 + 1e-4  # q = 1 at 2 bits
    assert max(len(torch.unique(row)) for row in learned.reshape(len(learned), -1)) <= 2**2 - 1
    # Only the rounding is learned: each weight goes to the grid point below or above it, as far as
    # round-to-nearest's, and some of them to the other one.
    moved = (learned - rtn).abs()
    assert torch.all(moved <= step * (1 + 1e-4)) and torch.any(moved > 0.5 * step)


@pytest.mark.parametrize("name", ["vit", "vit-mha", "swin"])
def test_attention_blocks_are_reconstructed_below_round_to_nearest(name):
    """ViT's encoder blocks (their nn.MultiheadAttention split, or nn.Linear projections) and Swin's
    window attention (projections applied through F.linear, routed through their layers)."""
    model = user_models.common_block(name).eval()
    images = torch.randn(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    layers = layer_registry(model, (1, 8, 8))
    qmodel, records = adaround_model(
        model, layers, [3] * len(layers), images, AdaRoundSettings(iters=300), FLOAT_ACTS, **QUIET
    )
    rtn = quantize_model(model, layers, [3] * len(layers), images, FLOAT_ACTS)
    assert len(records) >= 3 and _error(qmodel, images, model) < 0.8 * _error(rtn, images, model)


def test_a_model_is_reconstructed_block_by_block_deterministically_and_left_untouched():
    x, y = user_models.vectors()
    model = user_models.fit(user_models.mlp(), x, y)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = layer_registry(model, (12,))
    runs = [
        adaround_model(
            model,
            layers,
            [3, 2, 3],
            x[:96],
            AdaRoundSettings(iters=100, batch_size=24),
            QuantSettings(act_bits=4),
            **QUIET,
        )
        for _ in range(2)
    ]
    (qmodel, records), (again, _) = runs
    assert [r.name for r in records] == ["0", "2", "4"]
    assert all(r.error < r.rtn_error for r in records)
    assert all(torch.equal(a, b) for a, b in zip(qmodel.state_dict().values(), again.state_dict().values()))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # Activations are quantized as PTQ does: the layer sees its input only through at most 16 levels.
    inputs = []
    qmodel[2].register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    with torch.no_grad():
        qmodel(x)
        quantized = next(iter(qmodel[2]._forward_pre_hooks.values())).fake_quantize(inputs[0])
        assert len(torch.unique(quantized)) <= 2**4
        assert torch.equal(qmodel[2](quantized), qmodel[2](inputs[0]))


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"iters": 0}, r"AdaRoundSettings\.iters must be a whole number at least 1"),
        ({"lr": float("nan")}, r"AdaRoundSettings\.lr must be a finite number above 0"),
        ({"reg_weight": -1.0}, r"AdaRoundSettings\.reg_weight must be a finite number at least 0"),
    ],
)
def test_settings_refuse_bad_values(bad, message):
    with pytest.raises(EvoproxyError, match=message):
        AdaRoundSettings(**bad)


@pytest.fixture
def mlp_flags(trained_mlp):
    """The trained MLP's flags and bits.json for it (in the cwd)."""
    Path("bits.json").write_text(json.dumps({"bits": [3, 2, 3]}))
    return [*trained_mlp, "--bits-file", "bits.json"]


def test_quantize_adaround_prints_ptq_and_adaround_beside_full_precision(mlp_flags, capsys):
    assert main(["quantize", *mlp_flags, "--method", "adaround", "--iters", "50", "--lr", "0.02"]) == 0
    captured = capsys.readouterr()
    assert [l.split(" (")[0] for l in captured.err.splitlines()] == [
        "[adaround] block 1/3 0",
        "[adaround] block 2/3 2",
        "[adaround] block 3/3 4",
    ]
    assert "AdaRound: 50 Adam iterations per block (lr 0.02, batch 32" in captured.out
    rows = [
        l.split("  ")[0] for l in captured.out.splitlines() if l.startswith(("full precision", "RTN PTQ,", "AdaRound,"))
    ]
    assert rows == ["full precision", "RTN PTQ, A8", "AdaRound, A8"]
    assert "after RTN PTQ" in captured.out and "after AdaRound" in captured.out


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--method", "adaround", "--iters", "0"], "--iters must be a whole number at least 1"),
        (["--method", "adaround", "--reg-weight", "nan"], "--reg-weight must be a finite number at least 0"),
        (["--method", "adaround", "--epochs", "2", "--distill"], "--epochs, --distill apply to --method qat only"),
        (
            ["--iters", "10", "--lr", "0.1"],
            "--lr applies to --method qat or adaround only; --iters applies to --method adaround only",
        ),
        (["--method", "qat", "--reg-weight", "0.1"], "--reg-weight applies to --method adaround only"),
    ],
)
def test_quantize_adaround_refuses_bad_flags_in_one_line(mlp_flags, capsys, one_line_error, flags, message):
    assert main(["quantize", *mlp_flags, *flags]) == 2
    one_line_error(message)


def test_quantize_adaround_refuses_a_bits_file_that_does_not_fit(mlp_flags, capsys, one_line_error):
    Path("short.json").write_text(json.dumps({"bits": [4, 4]}))
    assert main(["quantize", *mlp_flags[:-1], "short.json", "--method", "adaround"]) == 2
    one_line_error("short.json has 2 bits but the model has 3 quantizable layers")
    Path("one.json").write_text(json.dumps({"bits": [1, 4, 4]}))
    assert main(["quantize", *mlp_flags[:-1], "one.json", "--method", "adaround"]) == 2
    one_line_error("one.json needs 'bits'")


def test_a_block_whose_learned_rounding_fits_worse_keeps_round_to_nearest(one_layer):
    model, images, _, _ = one_layer
    lines = []
    # Ten steps at a huge rate throw the rounding about: worse than round-to-nearest on these images.
    qmodel, [record] = adaround_model(
        model,
        layer_registry(model, (4, 6, 6)),
        [2],
        images,
        AdaRoundSettings(iters=10, lr=50.0, batch_size=16),
        FLOAT_ACTS,
        log=lines.append,
    )
    assert "round-to-nearest kept" in lines[0] and record.error == record.rtn_error
    assert torch.allclose(qmodel[0].weight, quantize_weight(model[0].weight, 2), atol=1e-6)
