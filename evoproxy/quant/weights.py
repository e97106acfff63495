"""Fake quantization of one weight tensor to a bit-width, in a `WeightFormat`.

Per output channel, symmetric (the default, and the benchmarks' quantizer): levels {-q..q}·scale
with q = 2^(b-1) - 1 (so 2 bits is ternary), each channel's clipping ratio chosen from `CLIP_RATIOS`
to minimise its squared error. Group-wise (one scale per g consecutive elements of an output row)
or asymmetric (levels 0..2^b-1 and an integer zero-point) search the ratio per group the same way,
with each scale rounded to float16 first, so the result is what a runtime storing 16-bit scales
computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ParameterError
from .cost import WeightFormat

CLIP_RATIOS = torch.linspace(0.3, 1.0, 36)
# float16's smallest normal and largest finite value: a scale rounded to float16 never becomes 0 or inf.
_HALF = torch.finfo(torch.float16)


@dataclass(frozen=True)
class WeightLevels:
    """A weight as `quantize_levels` quantizes it, before dequantization, in rows of its format: one
    row per output channel (per-channel) or per group of g consecutive elements of an output row.
    `levels` (rows, g): whole numbers in float, −q..q (symmetric) or 0..2^b−1 (asymmetric); `scale`
    (rows, 1): each row's step, a float16 value in a group-wise or asymmetric format; `zero` (rows, 1):
    the integer zero-point of an asymmetric format, else None."""

    levels: torch.Tensor
    scale: torch.Tensor
    zero: torch.Tensor | None

    def dequantize(self) -> torch.Tensor:
        """(levels − zero)·scale, (rows, g): the values of the fake-quantized weight."""
        return (self.levels if self.zero is None else self.levels - self.zero) * self.scale

    def dequantize_as(self, w: torch.Tensor) -> torch.Tensor:
        """The fake-quantized weight of `w`, whose levels these are: `dequantize` in w's shape and dtype."""
        return self.dequantize().reshape(w.shape).to(w.dtype)


def quantize_weight(w: torch.Tensor, bits: int, fmt: WeightFormat = WeightFormat()) -> torch.Tensor:
    """Fake quantization of a weight w (out, in, *kernel) to `bits` in format `fmt`, with the clipping
    ratio minimising the squared error of each channel (per-channel) or group. Returns a new tensor of
    w's shape and dtype; bits ≥ 32 gives a copy."""
    if bits >= 32:
        return w.clone()
    return quantize_levels(w, bits, fmt).dequantize_as(w)


def quantize_levels(w: torch.Tensor, bits: int, fmt: WeightFormat = WeightFormat()) -> WeightLevels:
    """The levels, steps and zero-points of `quantize_weight(w, bits, fmt)` (bits < 32), computed in
    w's dtype per channel, else in float32 or wider."""
    if fmt.group_size is not None or fmt.asymmetric:
        return _quantize_groups(w, bits, fmt)
    q = 2 ** (bits - 1) - 1
    flat = w.detach().reshape(w.shape[0], -1)
    peak = flat.abs().amax(1, keepdim=True).clamp_min(1e-12)  # (C, 1)

    def levels_at(ratio, out):
        scale = ratio * peak / q
        return WeightLevels(torch.div(flat, scale, out=out).round_().clamp_(-q, q), scale, None)

    return _clip_search(flat, levels_at)


def _clip_search(flat: torch.Tensor, levels_at) -> WeightLevels:
    """`levels_at(ratio, out)` (the WeightLevels of `flat` at clipping `ratio`, its levels written
    into `out`) at each row's ratio of CLIP_RATIOS with the least squared error; ties keep the smaller
    ratio. One pass per ratio over the whole weight, in one reused buffer: memory stays a few copies
    of the weight (a transformer's matrices are large), and only each row's best ratio is kept."""
    out = torch.empty_like(flat)
    best_err = torch.full((len(flat), 1), torch.inf, dtype=flat.dtype)
    best = torch.zeros_like(best_err)
    for ratio in CLIP_RATIOS.tolist():
        at = levels_at(ratio, out)
        if at.zero is not None:
            out.sub_(at.zero)
        err = out.mul_(at.scale).sub_(flat).square_().sum(1, keepdim=True)  # WeightLevels.dequantize, in place
        best = torch.where(err < best_err, ratio, best)  # strictly smaller only, as argmin
        best_err = torch.minimum(err, best_err)
    return levels_at(best, out)


def _quantize_groups(w: torch.Tensor, bits: int, fmt: WeightFormat) -> WeightLevels:
    """`quantize_levels` for a group-wise or asymmetric format, computed in float32 or wider."""
    row = w[0].numel()
    g = fmt.group_size or row
    if row % g:
        raise ParameterError("WeightFormat", "group_size", f"a divisor of the weight's row length {row}", g)
    flat = w.detach().reshape(-1, g).to(torch.promote_types(w.dtype, torch.float32))  # (groups, g)
    if fmt.asymmetric:
        # The range holds 0, so the zero-point is a level 0..2^b-1 (GPTQ's choice); a one-signed group
        # still gets all 2^b levels over [0, max] rather than a zero-point clamped away from its range.
        lo, hi = flat.amin(1, keepdim=True).clamp_max(0), flat.amax(1, keepdim=True).clamp_min(0)
        low, high = 0, 2**bits - 1
        full = (hi - lo).clamp_min(1e-12) / high  # (groups, 1): the step at ratio 1
    else:
        lo, low, high = None, -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
        full = flat.abs().amax(1, keepdim=True).clamp_min(1e-12) / high
    levels_at = lambda ratio, out: _levels(flat, ratio, full, lo, low, high, out)  # noqa: E731
    return _clip_search(flat, levels_at)


def _levels(
    flat: torch.Tensor,
    ratio: float | torch.Tensor,
    full: torch.Tensor,
    lo: torch.Tensor | None,
    low: int,
    high: int,
    out: torch.Tensor,
) -> WeightLevels:
    """`flat` (groups, g) quantized to levels low..high, written to `out`, with steps `ratio`·`full`
    (groups, 1) rounded to float16: symmetric where `lo` is None, else with the integer zero-point that
    puts the clipped low end `ratio`·`lo` on a level."""
    scale = _half(ratio * full)
    torch.div(flat, scale, out=out).round_()
    if lo is None:
        return WeightLevels(out.clamp_(low, high), scale, None)
    zero = torch.round(-ratio * lo / scale).clamp_(low, high)
    return WeightLevels(out.add_(zero).clamp_(low, high), scale, zero)


def _half(scale: torch.Tensor) -> torch.Tensor:
    """`scale` as float16 stores it (within float16's normal range), back in its own dtype."""
    return scale.clamp(_HALF.tiny, _HALF.max).half().to(scale.dtype)


def weight_steps(wq: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel step (C,) of a weight `wq` that `quantize_weight` quantized to `bits` in the
    default (symmetric per-channel) format: each channel is clipped at most at its peak, so its
    largest magnitude lies on level ±q."""
    q = 2 ** (bits - 1) - 1
    return wq.detach().reshape(len(wq), -1).abs().amax(1).div(q).clamp_min(1e-8)


def weight_quantization_error(w: torch.Tensor, bits: int, fmt: WeightFormat = WeightFormat()) -> torch.Tensor:
    """(Q_b(W) − W)², element-wise in float64: the perturbation that quantizing `w` to `bits`
    bits in format `fmt` causes (the input of HAWQ-V2 and of bit-aware proxies)."""
    w = w.detach().double()
    return (quantize_weight(w, bits, fmt) - w) ** 2
