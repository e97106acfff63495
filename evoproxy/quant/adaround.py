"""Post-training quantization with learned rounding (AdaRound, Nagel et al., ICML 2020),
reconstructed block by block as BRECQ does (Li et al., ICLR 2021).

Each weight keeps the PTQ quantizer's grid (`fakequant.quantize_weight`: symmetric, one step s
per output channel at its MSE-searched clipping, levels {−q..q}) but chooses per weight whether
to round down or up: w ↦ s · clamp(⌊w/s⌋ + h(V), −q, q), with h(V) = clamp(σ(V)·(ζ−γ) + γ, 0, 1)
the rectified sigmoid and V learned, started so that h(V) = w/s − ⌊w/s⌋ (the soft weight is the
float weight). At the end, h ≥ 0.5 rounds up and anything else down; a block whose hardened
rounding fits its calibration images worse than round-to-nearest keeps round-to-nearest.

Blocks (`reconstruction_blocks`): walking down from the model, a registry layer is a block, a
module with a forward of its own that holds registry layers is a block (a residual block of the
shipped nets, a transformer or mixer block), and containers (Sequential, ModuleList, ModuleDict,
and the model itself) are looked into. So ResNet-20 reconstructs its stem convolution, nine
residual blocks and the classifier; a plain Sequential net reconstructs layer by layer.

Block by block in registry order, Adam minimises on the calibration images
    Σ (block output − full-precision block output)², summed over dim 1 (channels or features) and
    averaged over the rest (BRECQ's loss), + λ · Σ_weights (1 − |2h(V) − 1|^β)
where the block's input comes from the model quantized so far (earlier blocks hardened) and its
target from the full-precision model, λ is 0 for the first 20 % of the iterations (warm-up) and
β then decays linearly from 20 to 2 (BRECQ's schedule). Activations stay float while weights are
reconstructed (BRECQ reconstructs weights before activations); the hardened weights then go
through `quantize_model`, which calibrates the activation quantizers (and, if asked, re-estimates
BatchNorm) exactly as round-to-nearest PTQ does.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import EvoproxyError
from ..model import LayerInfo, quantizable_modules
from ..pace import paced
from ..params import Interval, check_parameters
from .fakequant import QuantSettings, WeightCache, quantize_model, weight_steps

ZETA, GAMMA = 1.1, -0.1  # the rectified sigmoid's stretch (AdaRound eq. 23), so that h reaches 0 and 1
WARMUP = 0.2  # share of a block's iterations without the rounding regulariser
BETA = (20.0, 2.0)  # the regulariser's exponent, from soft (only h near 0 or 1 pays) to firm
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


class _SoftRounding(torch.autograd.Function):
    """The soft weight step · clamp(⌊w/step⌋ + h(V), −q, q), whose backward also adds to V's gradient
    that of the rounding regulariser λ · Σ (1 − |2h − 1|^β) (its value is never read): a dozen passes
    over the weights per step instead of autograd's graph of two roundings, which on the large
    layers of a real model cost more than their convolutions."""

    @staticmethod
    def forward(ctx, v, floor, slope, step, q, reg_weight, beta):
        s = torch.sigmoid(v)
        h = (s * (ZETA - GAMMA)).add_(GAMMA).clamp_(0, 1)
        ctx.save_for_backward(s, h, slope)
        ctx.reg = reg_weight, beta
        return (floor + h).clamp_(-q, q).mul_(step)

    @staticmethod
    def backward(ctx, grad):
        s, h, slope = ctx.saved_tensors
        reg_weight, beta = ctx.reg
        grad_h = grad * slope
        if reg_weight > 0:  # d/dh of λ(1 − |2h − 1|^β) = −2λβ · (2h − 1) · |2h − 1|^(β − 2)
            d = h * 2 - 1
            grad_h.add_(d.abs().pow_(beta - 2).mul_(d), alpha=-2 * reg_weight * beta)
        # dh/dV = (ζ − γ) σ(V)(1 − σ(V)), 0 where h is 0 or 1 (autograd's clamp differs only where the
        # unclamped h is exactly 0 or 1)
        grad_h.mul_(torch.addcmul(s, s, s, value=-1)).masked_fill_((h == 0) | (h == 1), 0)
        return grad_h.mul_(ZETA - GAMMA), None, None, None, None, None, None


class AdaRoundQuantizer(nn.Module):
    """Parametrization of a weight (C, ...) at `bits`: w ↦ step · clamp(⌊w/step⌋ + h(V), −q, q),
    `step` (C,) per output channel; `hard` rounds up where h ≥ 0.5 and down elsewhere. The float
    weight stays fixed while its rounding is learned, so ⌊w/step⌋ is computed once, here; while soft,
    the backward pass adds the gradient of the rounding regulariser at `reg` = (λ, β) to V's."""

    def __init__(self, w: torch.Tensor, step: torch.Tensor, bits: int):
        super().__init__()
        self.q, self.hard, self.reg = 2 ** (bits - 1) - 1, False, (0.0, BETA[0])
        self.register_buffer("step", step.reshape(-1, *[1] * (w.dim() - 1)).to(w))
        self.register_buffer("floor", torch.floor(w / self.step).detach())
        rest = (w / self.step - self.floor).detach()
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(V) = rest
        # dw/dh: the step, 0 where ⌊w/step⌋ + h is clamped for every h in (0, 1)
        self.register_buffer("slope", self.step * ((self.floor >= -self.q) & (self.floor < self.q)))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.hard:
            h = torch.clamp(torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA, 0, 1)
            return torch.clamp(self.floor + (h >= 0.5).to(h), -self.q, self.q) * self.step
        return _SoftRounding.apply(self.v, self.floor, self.slope, self.step, self.q, *self.reg)


@dataclass(frozen=True)
class AdaRoundSettings:
    """`iters` Adam steps at learning rate `lr` per block, each on one batch of `batch_size`
    calibration images (batches drawn with `seed`); `reg_weight` is λ."""

    iters: int = 1000
    lr: float = 1e-2
    reg_weight: float = 0.01
    batch_size: int = 32
    seed: int = 0

    CONSTRAINTS = {
        "iters": Interval(1, None, integer=True),
        "lr": Interval(0, math.inf, closed="neither"),
        "reg_weight": Interval(0, math.inf, closed="left"),
        "batch_size": Interval(1, None, integer=True),
    }

    def __post_init__(self):
        check_parameters(self)


@dataclass(frozen=True)
class BlockRecord:
    """One reconstructed block: its module name, its registry layers, the mean output error on
    the calibration images with round-to-nearest and with the rounding kept (both at the PTQ
    quantizer's steps, on the same inputs; the learned rounding unless round-to-nearest did
    better), and the seconds it took."""

    name: str
    layers: tuple[str, ...]
    rtn_error: float
    error: float
    seconds: float


def reconstruction_blocks(model: nn.Module, layers: Sequence[LayerInfo]) -> list[tuple[str, tuple[str, ...]]]:
    """(module name, names of the registry layers it holds) of each block, in registry order."""
    wanted = {l.name for l in layers}
    blocks = []

    def visit(name: str, module: nn.Module, top: bool) -> None:
        held = tuple(n for n, _ in module.named_modules(prefix=name) if n in wanted)
        if not held:
            return
        if name in wanted or not (top or isinstance(module, CONTAINERS)):
            blocks.append((name, held))
            return
        for child, sub in module.named_children():
            visit(f"{name}.{child}" if name else child, sub, False)

    visit("", model, True)
    return blocks


def _detached(obj):
    """A copy of `obj` with every tensor in it (in tuples, lists and dicts) detached and cloned:
    the next module may change a block's output in place (ReLU(inplace=True))."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (tuple, list)):
        return type(obj)(_detached(x) for x in obj)
    if isinstance(obj, dict):
        return {k: _detached(v) for k, v in obj.items()}
    return obj


def _float_tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() else []
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (tuple, list)) else ()
    return [t for x in items for t in _float_tensors(x)]


def _output_error(out, target) -> torch.Tensor:
    """BRECQ's reconstruction loss, summed over the output's floating-point tensors."""
    return sum(
        ((o - t) ** 2).sum(1).mean() if o.dim() > 1 else ((o - t) ** 2).mean()
        for o, t in zip(_float_tensors(out), _float_tensors(target))
    )


@torch.no_grad()
def block_calls(model: nn.Module, block: str, images: torch.Tensor, batch_size: int, inputs: bool) -> list:
    """What the module `block` of `model` receives ((args, kwargs); `inputs`) or gives (its
    output) at each of its calls while `model` runs on `images` in batches."""
    module, seen = model.get_submodule(block), []
    if inputs:
        hook = module.register_forward_pre_hook(
            lambda m, args, kwargs: seen.append(_detached((args, kwargs))), with_kwargs=True
        )
    else:
        hook = module.register_forward_hook(lambda m, args, out: seen.append(_detached(out)))
    try:
        with parametrize.cached():  # the hardened weights once per pass, not once per batch
            for i in range(0, len(images), batch_size):
                model(images[i : i + batch_size])
    finally:
        hook.remove()
    return seen


def _mean_error(module: nn.Module, calls: list, targets: list) -> float:
    with torch.no_grad(), parametrize.cached():
        return sum(_output_error(module(*args, **kwargs), t).item() for (args, kwargs), t in zip(calls, targets)) / max(
            len(calls), 1
        )


def _reconstruct(
    module: nn.Module,
    quantizers: list[AdaRoundQuantizer],
    calls: list,
    targets: list,
    settings: AdaRoundSettings,
    what: str,
    log,
) -> None:
    """Learn the rounding of `quantizers` (those of `module`) so that `module` on `calls` gives
    `targets`, then harden it; progress lines named `what` go to `log` (pace.paced)."""
    for qz in quantizers:
        qz.hard, qz.reg = False, (0.0, BETA[0])
    opt = torch.optim.Adam([qz.v for qz in quantizers], lr=settings.lr, fused=True)
    order = torch.randint(len(calls), (settings.iters,), generator=torch.Generator().manual_seed(settings.seed))
    warmup = int(WARMUP * settings.iters)
    for it, k in paced(enumerate(order.tolist()), settings.iters, what, log):
        if it >= warmup:
            progress = (it - warmup) / max(settings.iters - warmup, 1)
            for qz in quantizers:
                qz.reg = settings.reg_weight, BETA[1] + (BETA[0] - BETA[1]) * (1 - progress)
        args, kwargs = calls[k]
        loss = _output_error(module(*args, **kwargs), targets[k])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for qz in quantizers:
        qz.hard = True


class _LearnedWeights:
    """The hardened weights in the place of `quantize_model`'s round-to-nearest WeightCache."""

    def __init__(self, weights: Sequence[torch.Tensor]):
        self.weights = weights

    def get(self, index: int, bits: int) -> torch.Tensor:
        return self.weights[index]


def adaround_model(
    model: nn.Module,
    layers: Sequence[LayerInfo],
    w_bits: Sequence[int],
    calib_images: torch.Tensor,
    settings: AdaRoundSettings = AdaRoundSettings(),
    quant: QuantSettings = QuantSettings(),
    cache: WeightCache | None = None,
    log: Callable[[str], None] = print,
) -> tuple[nn.Module, list[BlockRecord]]:
    """A fake-quantized copy of `model` (eval mode, like `quantize_model`'s) whose weights at
    `w_bits` (aligned with `layers`; 32 stays float) are rounded by AdaRound, reconstructed block by
    block on `calib_images` (N, ...) with `settings`; then `quant.act_bits` activations (one
    bit-width, or one per layer) calibrated on the same images (and BatchNorm re-estimated if
    `quant.bn_recalibration`). `cache` holds the round-to-nearest weights whose steps AdaRound
    starts from (shared with a PtqEvaluator). One line per block goes to `log`. Returns the model
    and one record per block. `model` is put in eval mode (its outputs are the targets), its
    weights are not modified."""
    model.eval()
    cache = cache or WeightCache(model, layers)
    qmodel = copy.deepcopy(model).eval().requires_grad_(False)
    modules = dict(quantizable_modules(qmodel))
    quantizers: dict[str, AdaRoundQuantizer] = {}
    for layer, bits in zip(layers, w_bits):
        if bits < 32:
            w = modules[layer.name].weight
            quantizers[layer.name] = AdaRoundQuantizer(
                w, weight_steps(cache.get(layer.index, int(bits)), int(bits)), int(bits)
            )
            parametrize.register_parametrization(modules[layer.name], "weight", quantizers[layer.name])
    blocks = [
        (name, held) for name, held in reconstruction_blocks(qmodel, layers) if any(n in quantizers for n in held)
    ]
    records = []
    for b, (name, held) in enumerate(blocks, 1):
        start = time.perf_counter()
        block_quantizers = [quantizers[n] for n in held if n in quantizers]
        calls = block_calls(qmodel, name, calib_images, settings.batch_size, inputs=True)
        targets = block_calls(model, name, calib_images, settings.batch_size, inputs=False)
        if len(calls) != len(targets):
            raise EvoproxyError(
                f"block {name or 'model'} runs {len(calls)} times in the quantized model but "
                f"{len(targets)} times in the float one: AdaRound needs a forward pass that does not "
                "depend on the weights' values"
            )
        module = qmodel.get_submodule(name)
        for qz in block_quantizers:
            qz.hard = True  # at its start, hardening rounds to nearest
        rtn_error = error = _mean_error(module, calls, targets)
        if calls:  # a block that the forward pass never calls keeps round-to-nearest
            nearest = [qz.v.detach().clone() for qz in block_quantizers]
            _reconstruct(module, block_quantizers, calls, targets, settings, f"block {b}/{len(blocks)}: iteration", log)
            error = _mean_error(module, calls, targets)
        kept = error > rtn_error  # too few iterations to settle: round-to-nearest fits these images better
        if kept:
            with torch.no_grad():
                for qz, v in zip(block_quantizers, nearest):
                    qz.v.copy_(v)
        records.append(BlockRecord(name, held, rtn_error, min(error, rtn_error), time.perf_counter() - start))
        r = records[-1]
        log(
            f"block {b}/{len(blocks)} {name or 'model'} ({len(held)} layer{'s' * (len(held) > 1)}): output error "
            f"{r.rtn_error:.4g} round-to-nearest -> {error:.4g} AdaRound{', round-to-nearest kept' if kept else ''} "
            f"({settings.iters if calls else 0} iterations, {r.seconds:.1f} s)"
        )
    with torch.no_grad():
        weights = [modules[l.name].weight.detach().clone() for l in layers]
    return quantize_model(model, layers, w_bits, calib_images, quant, _LearnedWeights(weights), log), records
