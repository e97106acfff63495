"""AdaQAT's fractional bit-widths (Gernigon, Filip, Sentieys, Coggiola & Bruno) and the network that quantizes at them.

A bit-width is a real number N (`FractionalBits`), and every forward pass quantizes at ⌈N⌉: on a grid of
bit choices that skips some integers (2,4,8), ⌈N⌉ is the smallest choice ≥ N. N stays within [fewest
bits − 1, most bits]; the paper's freeze rule: once ⌈N⌉ has reversed direction `oscillations` times
(the paper's 10), it is fixed at the larger of its last two values. `adaqat_network` quantizes the
weights by `quant.qat`'s LSQ quantizers at ⌈N⌉ and the layers' inputs by its LSQ activation
quantizers (each candidate's steps initialised as `lsq_model` initialises them), each through a
`BitSelect` that the search sets to the current bits.
"""

from __future__ import annotations

import bisect
import copy
import math
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..allocation import AllocationProblem
from ..errors import ParameterError
from ..model import quantizable_modules
from ..quant import lsq_model


class FractionalBits:
    """One relaxed bit-width N on the grid `choices`: `bits` is ⌈N⌉ on the grid, `step(slope)` the
    gradient step N ← N − `lr` · slope with the paper's freeze rule after `oscillations` reversals
    of ⌈N⌉. A single choice is frozen from the start. An initial `value` off the grid's range is a
    `ParameterError` naming `owner`'s parameter `param` (the settings' that gave it)."""

    def __init__(
        self,
        value: float,
        choices: Sequence[int],
        lr: float,
        oscillations: int,
        owner: str = "FractionalBits",
        param: str = "value",
    ):
        self.choices, self.lr, self.oscillations = tuple(sorted(choices)), lr, oscillations
        low, high = self.choices[0] - 1, self.choices[-1]
        if not (math.isfinite(value) and low <= value <= high):
            raise ParameterError(
                owner, param, f"from {low} (one below the fewest bit choice) to {high} (the most)", value
            )
        self.value = float(value)
        self.reversals = 0
        self.frozen = len(self.choices) == 1
        self.frozen_at: int | None = None  # the step at which the freeze rule fixed the bits
        self._frozen_bits = self.choices[0]
        self._direction = 0
        self._steps = 0

    @property
    def bits(self) -> int:
        if self.frozen:
            return self._frozen_bits
        return self.choices[bisect.bisect_left(self.choices, self.value)]

    def other(self) -> int | None:
        """The grid point the finite difference compares `bits` with: the next choice below, or above
        at the bottom of the grid; None when frozen."""
        if self.frozen:
            return None
        k = self.choices.index(self.bits)
        return self.choices[k - 1] if k else self.choices[1]

    def step(self, slope: float) -> None:
        """Move N against `slope` (∂L_total/∂N, per bit); count a reversal of ⌈N⌉'s direction and
        freeze at the larger of its last two values on the `oscillations`-th."""
        if self.frozen:
            return
        self._steps += 1
        before = self.bits
        self.value = min(max(self.value - self.lr * slope, self.choices[0] - 1.0), float(self.choices[-1]))
        after = self.bits
        if after == before:
            return
        direction = 1 if after > before else -1
        if self._direction and direction != self._direction:
            self.reversals += 1
            if self.reversals >= self.oscillations:
                self.frozen, self._frozen_bits, self.frozen_at = True, max(before, after), self._steps
        self._direction = direction


class BitSelect(nn.Module):
    """A quantizer that applies its candidate at `bits` (one LSQ quantizer per bit choice): the
    weight parametrization and the input quantizer of an AdaQAT layer."""

    def __init__(self, candidates: Mapping[int, nn.Module], bits: int):
        super().__init__()
        self.candidates = nn.ModuleDict({str(b): q for b, q in candidates.items()})
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.candidates[str(self.bits)](x)


def adaqat_network(
    model: nn.Module,
    problem: AllocationProblem,
    calib_images: torch.Tensor,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, list[BitSelect], list[BitSelect]]:
    """A copy of `model` (train mode) whose registry layers quantize their weights and inputs at
    selectable bits: free layers' weights at any of `problem.w_choices`, fixed ones at their own
    bits, inputs at any of `problem.a_choices`, every candidate's LSQ steps initialised on
    `calib_images` (N, ...) as `lsq_model` does (`log` gets its passes' progress lines). Returns it
    with the weight selectors of the free layers (`problem.free` order) and the input selectors of
    all layers; `model` is not modified."""
    layers = problem.layers
    n = len(layers)

    def copy_modules(w: int, a: int) -> dict[str, nn.Module]:
        # The layers of a throwaway `lsq_model` copy at w-bit weights and a-bit inputs; no BatchNorm
        # re-estimation, so every copy shares the model's statistics.
        throwaway = lsq_model(model, layers, [w] * n, a, calib_images, bn_recalibration=False, log=log)
        return dict(quantizable_modules(throwaway))

    identity = {l.name: nn.Identity() for l in layers}  # 32 bits: no quantizer
    by_w = {
        w: {name: m.parametrizations.weight[0] for name, m in copy_modules(w, 32).items()} if w < 32 else identity
        for w in {*problem.w_choices, *(w for w, _ in problem.fixed.values())}
    }
    by_a = {
        a: {name: m.act_quantizer for name, m in copy_modules(32, a).items()} if a < 32 else identity
        for a in problem.a_choices
    }
    lowest = problem.a_choices[0]
    # Built at the fewest activation bits, so that every layer whose input is quantized has its hook.
    net = (
        lsq_model(model, layers, [32] * n, lowest, calib_images, bn_recalibration=False, log=log)
        if lowest < 32
        else copy.deepcopy(model).train()
    )
    modules = dict(quantizable_modules(net))
    w_select, a_select = [], []
    for index, layer in enumerate(layers):
        module = modules[layer.name]
        w_bits = (problem.fixed[index][0],) if index in problem.fixed else problem.w_choices
        select = BitSelect({w: by_w[w][layer.name] for w in w_bits}, w_bits[-1])
        parametrize.register_parametrization(module, "weight", select)
        if index not in problem.fixed:
            w_select.append(select)
        if hasattr(module, "act_quantizer"):
            module.act_quantizer = BitSelect({a: by_a[a][layer.name] for a in problem.a_choices}, problem.a_choices[-1])
            a_select.append(module.act_quantizer)
    return net.to(calib_images.device), w_select, a_select
