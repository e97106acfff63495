"""Fake quantization of a model copy from a bit configuration keyed by the layer registry.

Weights (`weights.quantize_weight`): symmetric, per output channel, levels {-q..q}·scale with
q = 2^(b-1) - 1 (so 2 bits is ternary), each channel's clipping ratio chosen to minimise the squared
error; or group-wise / asymmetric as the settings' `WeightFormat` says. Activations: the input of
every quantizable layer is fake-quantized per tensor at that layer's activation bit-width (one for
all layers, or one per layer), with an asymmetric range [min, max] taken from the calibration images
(unsigned when that input is non-negative).
A Conv or Linear layer whose input is quantized and whose weights are symmetric per channel computes
as integer hardware does (IntegerForward): the sum of input levels times weight levels, exact, then
times the input step and each output channel's weight step; so its output does not depend on the
order in which a kernel sums, and on a CPU oneDNN's int8 convolution gives it to the bit, several
times faster than float32. Other weight formats compute in float on fake-quantized inputs.
Optionally BatchNorm statistics are re-estimated on the calibration images after weight
quantization, which recovers most of the accuracy lost to the shift that quantization error
causes in each layer's output mean and variance.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn

from ..errors import EvoproxyError
from ..model import EVAL_BATCH, LayerInfo, paced_batches, quantizable_modules
from ..params import Satisfies, check_parameters
from .cost import WeightFormat, check_bits, is_bit_width, per_layer_bits
from .weights import WeightLevels, quantize_levels, weight_steps

BN_BATCH = 256  # BatchNorm re-estimation's batch: its variance estimate depends on the batches


_PER_CHANNEL = "symmetric per-channel, MSE-searched clipping"


@dataclass(frozen=True)
class QuantSettings:
    """Quantizer settings recorded with every benchmark. `act_bits`: the activation bit-width of
    every layer, or a tuple of one per registry layer (a list is stored as a tuple); 32 leaves a
    layer's input in float. `group_size` and `asymmetric`: the weights' `WeightFormat`; where it is
    not the default and `weight_quantizer` is left at its default, the latter names the format."""

    act_bits: int | tuple[int, ...] = 8
    bn_recalibration: bool = True
    weight_quantizer: str = _PER_CHANNEL
    act_quantizer: str = "asymmetric per-tensor min/max on the calibration images"
    group_size: int | None = None
    asymmetric: bool = False

    CONSTRAINTS = {
        "act_bits": [
            Satisfies(is_bit_width, "a bit-width from 1 to 32"),
            Satisfies(lambda t: isinstance(t, tuple) and len(t) > 0 and all(map(is_bit_width, t)), "one per layer"),
        ],
        **WeightFormat.CONSTRAINTS,
    }

    def __post_init__(self) -> None:
        if isinstance(self.act_bits, list):
            object.__setattr__(self, "act_bits", tuple(self.act_bits))  # settings stay hashable
        check_parameters(self)
        if self.weight_quantizer == _PER_CHANNEL and self.weight_format != WeightFormat():
            object.__setattr__(self, "weight_quantizer", f"{self.weight_format.describe()}, MSE-searched clipping")

    @property
    def weight_format(self) -> WeightFormat:
        """How the weights are quantized and stored."""
        return WeightFormat(self.group_size, self.asymmetric)

    def to_dict(self) -> dict:
        """The settings as a bench header records them: the weight format's fields only where it is
        not the default, so that a bench built before they existed resumes with the same settings."""
        out = asdict(self)
        if self.weight_format == WeightFormat():
            del out["group_size"], out["asymmetric"]
        return out


class ActQuant:
    """Forward pre-hook that fake-quantizes a layer's input to `bits` over a calibrated range; where
    the layer computes in integer form (`integer`), its IntegerForward quantizes instead."""

    def __init__(self, bits: int):
        self.bits, self.lo, self.hi, self.calibrating, self.integer = bits, None, None, True, False

    def __call__(self, module, inputs):
        x = inputs[0]
        if self.calibrating:
            lo, hi = x.detach().amin().item(), x.detach().amax().item()
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
            return None
        return None if self.integer else (self.fake_quantize(x),)

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        scale, zero = self.scale_and_zero()
        qmax = 2**self.bits - 1
        # The fused op passes gradients straight through, and on a GPU it is one fast kernel.
        if x.device.type != "cpu" or (x.requires_grad and torch.is_grad_enabled()):
            return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, qmax)
        # Its own float32 arithmetic (× 1/scale, round half to even, + zero, clamp to [0, qmax], − zero,
        # × scale), bit for bit: five times faster than its CPU kernel, which is not vectorised.
        levels, scale32 = self.levels(x)
        return levels.mul_(scale32.item())

    def levels(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The input's levels minus the zero point (whole numbers in float32), and the step in float32.
        Clamping the rounded value to [−zero, qmax − zero] is the same as + zero, clamp to [0, qmax],
        − zero: both are whole numbers, exact in float32 below 2^24, and beyond that both clamp to the
        same end."""
        scale, zero = self.scale_and_zero()
        scale32 = torch.tensor(scale, dtype=torch.float32)
        return torch.mul(x, (1 / scale32).item()).round_().clamp_(-zero, 2**self.bits - 1 - zero), scale32

    def scale_and_zero(self) -> tuple[float, int]:
        """Step and integer zero point of the calibrated range (which always holds 0)."""
        lo = min(self.lo, 0.0)
        scale = max(self.hi - lo, 1e-12) / (2**self.bits - 1)
        return scale, round(-lo / scale)


EXACT_SUMS = 2**24  # float32 holds every whole number below it, so such sums are exact in any order


def integer_form_fits(module: nn.Module, w_bits: int, a_bits: int) -> bool:
    """Whether `module` with `w_bits` weights and `a_bits` inputs computes in integer form: no sum of
    its input levels times its weight levels can reach EXACT_SUMS."""
    if w_bits >= 32 or a_bits >= 32:
        return False
    return module.weight[0].numel() * (2**a_bits - 1) * (2 ** (w_bits - 1) - 1) < EXACT_SUMS


@functools.cache
def _onednn_int8(
    in_channels: int,
    out_channels: int,
    kernel: tuple,
    stride: tuple,
    padding: tuple,
    dilation: tuple,
    groups: int,
    a_bits: int,
    w_bits: int,
) -> bool:
    """Whether oneDNN's int8 convolution of this geometry and these bits is here and gives the
    float32 integer form to the bit on this CPU: with the largest levels (which CPUs without VNNI
    can saturate in 16-bit partial sums) and random ones, and uneven steps, which it must multiply
    as the float32 form does (its depthwise kernel does not)."""
    generator = torch.Generator().manual_seed(0)
    qmax, q = 2**a_bits - 1, 2 ** (w_bits - 1) - 1
    size = [d * (k - 1) + 1 + s for k, s, d in zip(kernel, stride, dilation)]
    x = torch.randint(0, qmax + 1, (2, in_channels, *size), generator=generator).float()
    w = torch.randint(-q, q + 1, (out_channels, in_channels // groups, *kernel), generator=generator).float()
    x[0], w[0] = qmax, q
    scale, zero, steps = 0.0123, 1, torch.rand(out_channels, generator=generator) + 0.5
    geometry = [list(stride), list(padding), list(dilation), groups]
    u8, no_zero = x.to(torch.uint8).contiguous(memory_format=torch.channels_last), torch.zeros(out_channels).long()
    try:
        packed = torch.ops.onednn.qconv_prepack(w.to(torch.int8), steps, scale, zero, *geometry, None)
        out = torch.ops.onednn.qconv2d_pointwise(
            u8, scale, zero, packed, steps, no_zero, None, *geometry, 1.0, 0, torch.float32, "none", [], ""
        )
    except (AttributeError, RuntimeError, NotImplementedError):  # an op missing from this build of torch
        return False
    exact = nn.functional.conv2d(x.double() - zero, w.double(), None, stride, padding, dilation, groups)
    return torch.equal(out, exact.float() * (torch.tensor(scale, dtype=torch.float32) * steps).view(-1, 1, 1))


class IntegerForward:
    """The forward of a quantized Conv or Linear layer `module` whose input `quantizer` is calibrated:
    the sum over input levels (from `quantizer`) times weight levels (the weight divided by its
    per-channel step, `weight_steps`), exact in float32 because `integer_form_fits`, then times the
    input step and each output channel's weight step, plus the bias. On a CPU, a Conv2d with 8-bit or
    narrower levels runs oneDNN's int8 convolution where a probe of its geometry shows that it gives
    the same to the bit. While the quantizer calibrates, and while gradients flow, the layer computes
    in float."""

    def __init__(self, module: nn.Module, quantizer: ActQuant, w_bits: int):
        self.module, self.quantizer = module, quantizer
        weight = module.weight.detach()
        self.steps = weight_steps(weight, w_bits)
        self.weight_levels = weight.div(self.steps.view(-1, *[1] * (weight.dim() - 1))).round_()
        self.int8 = (
            isinstance(module, nn.Conv2d)
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
            and quantizer.bits <= 8
            and w_bits <= 8
            and weight.device.type == "cpu"
            and weight.dtype == torch.float32
            and _onednn_int8(
                module.in_channels,
                module.out_channels,
                module.kernel_size,
                module.stride,
                module.padding,
                module.dilation,
                module.groups,
                quantizer.bits,
                w_bits,
            )
        )
        self._packed = None  # the int8 weights as oneDNN wants them, made once calibrated
        quantizer.integer = True

    def __getstate__(self):  # a copy packs its weights again: oneDNN's packed tensors cannot be copied
        return {**self.__dict__, "_packed": None}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        module, quantizer = self.module, self.quantizer
        if quantizer.calibrating:
            return type(module).forward(module, x)
        if x.requires_grad and torch.is_grad_enabled():
            return type(module).forward(module, quantizer.fake_quantize(x))
        if self.int8 and x.device.type == "cpu":
            out = self._int8_conv(x)
        else:
            levels, scale32 = quantizer.levels(x)
            if isinstance(module, nn.Linear):
                out = nn.functional.linear(levels, self.weight_levels) * (scale32 * self.steps)
            else:
                out = module._conv_forward(levels, self.weight_levels, None)
                out = out * (scale32 * self.steps).view(-1, *[1] * (out.dim() - 2))
        if module.bias is None:
            return out
        return out + (module.bias if isinstance(module, nn.Linear) else module.bias.view(-1, *[1] * (out.dim() - 2)))

    def _int8_conv(self, x: torch.Tensor) -> torch.Tensor:
        module, quantizer = self.module, self.quantizer
        levels, scale32 = quantizer.levels(x)
        zero = quantizer.scale_and_zero()[1]
        geometry = [list(module.stride), list(module.padding), list(module.dilation), module.groups]
        if self._packed is None:
            self._packed = torch.ops.onednn.qconv_prepack(
                self.weight_levels.to(torch.int8), self.steps, scale32.item(), zero, *geometry, None
            )
        u8 = levels.add_(zero).to(torch.uint8).contiguous(memory_format=torch.channels_last)
        # oneDNN multiplies each exact int32 sum by the float32 product of the two steps, as above.
        return torch.ops.onednn.qconv2d_pointwise(
            u8,
            scale32.item(),
            zero,
            self._packed,
            self.steps,
            torch.zeros(len(self.steps), dtype=torch.long),
            None,
            *geometry,
            1.0,
            0,
            torch.float32,
            "none",
            [],
            "",
        )


def quantize_input(module: nn.Module, w_bits: int, a_bits: int, fmt: WeightFormat = WeightFormat()) -> ActQuant:
    """Give the layer `module`, its weight quantized to `w_bits` in format `fmt`, an input quantizer
    at `a_bits` (a forward pre-hook, calibrating until told otherwise), in integer form where it fits:
    only for the default format, whose one step per output channel IntegerForward multiplies by."""
    quantizer = ActQuant(a_bits)
    module.register_forward_pre_hook(quantizer)
    if fmt == WeightFormat() and integer_form_fits(module, w_bits, a_bits):
        module.forward = IntegerForward(module, quantizer, w_bits)
    return quantizer


class WeightCache:
    """Quantized weights in format `fmt` per (layer index, bits), so configurations share their work:
    kept as their levels, steps and zero-points (`levels`, which `save_packed` writes) and dequantized
    when read (`get`), so that nothing is quantized twice and the cache holds one copy of each."""

    def __init__(self, model: nn.Module, layers: Sequence[LayerInfo], fmt: WeightFormat = WeightFormat()):
        modules = dict(quantizable_modules(model))
        self.weights = [modules[l.name].weight.detach() for l in layers]
        self.fmt = fmt
        self._levels: dict[tuple[int, int], WeightLevels] = {}

    def levels(self, index: int, bits: int) -> WeightLevels:
        """`quantize_levels` of layer `index`'s weight at `bits` (< 32), computed once."""
        key = (index, bits)
        if key not in self._levels:
            self._levels[key] = quantize_levels(self.weights[index], bits, self.fmt)
        return self._levels[key]

    def get(self, index: int, bits: int) -> torch.Tensor:
        """`quantize_weight` of layer `index`'s weight at `bits`: a new tensor."""
        w = self.weights[index]
        return w.clone() if bits >= 32 else self.levels(index, bits).dequantize_as(w)


def start_reestimation(bn: nn.modules.batchnorm._BatchNorm) -> nn.modules.batchnorm._BatchNorm:
    """`bn` with its running statistics reset, to be re-estimated in train mode as the cumulative
    average over the calibration batches that pass through it."""
    bn.reset_running_stats()
    bn.momentum = None
    return bn.train()


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    w_bits: Sequence[int],
    calib_images: torch.Tensor,
    settings: QuantSettings = QuantSettings(),
    cache: WeightCache | None = None,
    log: Callable[[str], None] | None = None,
) -> nn.Module:
    """A fake-quantized copy of `model` (eval mode) for per-layer weight bits `w_bits` (aligned
    with `layers`) in `settings.weight_format` (a given WeightCache must hold that format) and
    `settings.act_bits` activations (one bit-width or one per layer; a layer at 32 keeps a float
    input), calibrated on `calib_images` (BatchNorm re-estimated in batches of BN_BATCH; `log`
    gets a line now and then on a long pass, pace.paced). The model itself is not modified."""
    check_bits(layers, w_bits, "the weight bit configuration", low=2)  # at 1 bit q = 2^0 - 1 = 0 levels
    a_bits = per_layer_bits(layers, settings.act_bits, "the activation bit configuration")
    fmt = settings.weight_format
    fmt.check_layers(layers)
    if isinstance(cache, WeightCache) and cache.fmt != fmt:  # its weights would not be the settings' format
        raise EvoproxyError(
            f"the weight cache holds {cache.fmt.describe()} weights but the settings ask for {fmt.describe()}"
        )
    cache = cache or WeightCache(model, layers, fmt)
    qmodel = copy.deepcopy(model).eval()
    modules = dict(quantizable_modules(qmodel))
    for layer, bits in zip(layers, w_bits):
        modules[layer.name].weight.copy_(cache.get(layer.index, int(bits)))
    bns = [m for m in qmodel.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if settings.bn_recalibration and bns:  # without a BatchNorm (a language model) the passes would change nothing
        for bn in bns:
            start_reestimation(bn)
        for batch in paced_batches(calib_images, BN_BATCH, "BatchNorm re-estimation", log):
            qmodel(batch)
        qmodel.eval()
    hooks = [
        quantize_input(modules[layer.name], int(w), a, fmt) for layer, w, a in zip(layers, w_bits, a_bits) if a < 32
    ]
    if hooks:  # min/max ranges do not depend on the batches (BatchNorm's variance above does)
        for batch in paced_batches(calib_images, EVAL_BATCH, "activation ranges", log):
            qmodel(batch)
        for hook in hooks:
            hook.calibrating = False
    return qmodel
