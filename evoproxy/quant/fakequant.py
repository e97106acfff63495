"""Fake quantization of a model copy from a bit configuration keyed by the layer registry.

Weights: symmetric, per output channel, levels {-q..q}·scale with q = 2^(b-1) - 1 (so 2 bits is
ternary); each channel's clipping ratio is chosen from `CLIP_RATIOS` to minimise the squared
error. Activations: the input of every quantizable layer is fake-quantized per tensor at that
layer's activation bit-width (one for all layers, or one per layer), with an asymmetric range
[min, max] taken from the calibration images (unsigned when that input is non-negative).
Optionally BatchNorm statistics are re-estimated on the calibration images after weight
quantization, which recovers most of the accuracy lost to the shift that quantization error
causes in each layer's output mean and variance.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..model import EVAL_BATCH, LayerInfo, quantizable_modules
from .cost import check_bits, per_layer_bits

CLIP_RATIOS = torch.linspace(0.3, 1.0, 36)
BN_BATCH = 256  # BatchNorm re-estimation's batch: its variance estimate depends on the batches


def quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel symmetric fake quantization of a weight, with the clipping ratio
    minimising each channel's squared error. Returns a new tensor of w's shape and dtype."""
    if bits >= 32:
        return w.clone()
    q = 2 ** (bits - 1) - 1
    flat = w.detach().reshape(w.shape[0], -1)
    peak = flat.abs().amax(1).clamp_min(1e-12)                          # (C,)
    scales = (CLIP_RATIOS.to(flat)[:, None] * peak[None, :] / q)          # (R, C)
    levels = torch.clamp(torch.round(flat[None] / scales[..., None]), -q, q)
    err = ((levels * scales[..., None] - flat[None]) ** 2).sum(-1)       # (R, C)
    best = err.argmin(0)
    idx = torch.arange(flat.shape[0])
    return (levels[best, idx] * scales[best, idx][:, None]).reshape(w.shape).to(w.dtype)


def weight_steps(wq: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel step (C,) of a weight `wq` that `quantize_weight` quantized to `bits`:
    each channel is clipped at most at its peak, so its largest magnitude lies on level ±q."""
    q = 2 ** (bits - 1) - 1
    return wq.detach().reshape(len(wq), -1).abs().amax(1).div(q).clamp_min(1e-8)


def weight_quantization_error(w: torch.Tensor, bits: int) -> torch.Tensor:
    """(Q_b(W) − W)², element-wise in float64: the perturbation that quantizing `w` to `bits`
    bits causes (the input of HAWQ-V2 and of bit-aware proxies)."""
    w = w.detach().double()
    return (quantize_weight(w, bits) - w) ** 2


@dataclass(frozen=True)
class QuantSettings:
    """Quantizer settings recorded with every benchmark. `act_bits`: the activation bit-width of
    every layer, or a tuple of one per registry layer (a list is stored as a tuple); 32 leaves a
    layer's input in float."""
    act_bits: int | tuple[int, ...] = 8
    bn_recalibration: bool = True
    weight_quantizer: str = "symmetric per-channel, MSE-searched clipping"
    act_quantizer: str = "asymmetric per-tensor min/max on the calibration images"

    def __post_init__(self) -> None:
        if isinstance(self.act_bits, list):
            object.__setattr__(self, "act_bits", tuple(self.act_bits))  # settings stay hashable


class _ActQuant:
    """Forward pre-hook that fake-quantizes a layer's input to `bits` over a calibrated range."""

    def __init__(self, bits: int):
        self.bits, self.lo, self.hi, self.calibrating = bits, None, None, True

    def __call__(self, module, inputs):
        x = inputs[0]
        if self.calibrating:
            lo, hi = x.detach().amin().item(), x.detach().amax().item()
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
            return None
        scale, zero = self.scale_and_zero()
        qmax = 2 ** self.bits - 1
        # The fused op passes gradients straight through, and on a GPU it is one fast kernel.
        if x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
            return (torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, qmax),)
        # Its own float32 arithmetic (× 1/scale, round half to even, + zero, clamp to [0, qmax], − zero,
        # × scale), bit for bit, in place on one copy: five times faster than its CPU kernel, which is not
        # vectorised. Clamping the rounded value to [−zero, qmax − zero] is the same: both are whole
        # numbers, exact in float32 below 2^24, and beyond that both clamp to the same end.
        scale32 = torch.tensor(scale, dtype=torch.float32)
        inv = (1 / scale32).item()
        return (torch.mul(x, inv).round_().clamp_(-zero, qmax - zero).mul_(scale32.item()),)

    def scale_and_zero(self) -> tuple[float, int]:
        """Step and integer zero point of the calibrated range (which always holds 0)."""
        lo = min(self.lo, 0.0)
        scale = max(self.hi - lo, 1e-12) / (2 ** self.bits - 1)
        return scale, round(-lo / scale)


class WeightCache:
    """Quantized weights per (layer index, bits), so configurations share their work."""

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo]):
        modules = dict(quantizable_modules(model))
        self.weights = [modules[l.name].weight.detach() for l in layers]
        self._cache: dict[tuple[int, int], torch.Tensor] = {}

    def get(self, index: int, bits: int) -> torch.Tensor:
        key = (index, bits)
        if key not in self._cache:
            self._cache[key] = quantize_weight(self.weights[index], bits)
        return self._cache[key]


def start_reestimation(bn: nn.modules.batchnorm._BatchNorm) -> nn.modules.batchnorm._BatchNorm:
    """`bn` with its running statistics reset, to be re-estimated in train mode as the cumulative
    average over the calibration batches that pass through it."""
    bn.reset_running_stats()
    bn.momentum = None
    return bn.train()


@torch.no_grad()
def quantize_model(model: nn.Module, layers: Sequence[LayerInfo], w_bits: Sequence[int],
                   calib_images: torch.Tensor, settings: QuantSettings = QuantSettings(),
                   cache: WeightCache | None = None) -> nn.Module:
    """A fake-quantized copy of `model` (eval mode) for per-layer weight bits `w_bits` (aligned
    with `layers`) and `settings.act_bits` activations (one bit-width or one per layer; a layer at
    32 keeps a float input), calibrated on `calib_images` (BatchNorm re-estimated in batches of
    BN_BATCH). The model itself is not modified."""
    check_bits(layers, w_bits, "the weight bit configuration", low=2)  # at 1 bit q = 2^0 - 1 = 0 levels
    a_bits = per_layer_bits(layers, settings.act_bits, "the activation bit configuration")
    cache = cache or WeightCache(model, layers)
    qmodel = copy.deepcopy(model).eval()
    modules = dict(quantizable_modules(qmodel))
    for layer, bits in zip(layers, w_bits):
        modules[layer.name].weight.copy_(cache.get(layer.index, int(bits)))
    if settings.bn_recalibration:
        for bn in qmodel.modules():
            if isinstance(bn, nn.modules.batchnorm._BatchNorm):
                start_reestimation(bn)
        for batch in calib_images.split(BN_BATCH):
            qmodel(batch)
        qmodel.eval()
    hooks = []
    for layer, bits in zip(layers, a_bits):
        if bits < 32:
            hooks.append(_ActQuant(bits))
            modules[layer.name].register_forward_pre_hook(hooks[-1])
    if hooks:  # min/max ranges do not depend on the batches (BatchNorm's variance above does)
        for batch in calib_images.split(EVAL_BATCH):
            qmodel(batch)
        for hook in hooks:
            hook.calibrating = False
    return qmodel
