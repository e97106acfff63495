"""EdMIPS's supernet (Cai & Vasconcelos, CVPR 2020), on which EdMIPS, SEAM and SMPQ search.

Every free layer's weight is the softmax(α)-weighted mix of its candidate bit-widths' fake-quantized
weights, Σ_k softmax(α)_k · Q_k(W), and, when the problem offers several activation bit-widths, its
input likewise the softmax(β)-weighted mix of its candidate activation quantizers (the paper's
per-layer activation mix). The quantizers are `quant.qat`'s LSQ quantizers (learned steps,
straight-through rounding), initialised as `lsq_model` initialises them at each candidate
bit-width; fixed layers keep their one quantizer of each. Layer f takes the option (w, a) of the
problem with probability softmax(α_f)_w · softmax(β_f)_a, and the expected cost E[·] is the
allocation problem's own cost table weighted by the options' probabilities (so at one-hot α and β
it is the cost model's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..allocation import AllocationProblem
from ..model import quantizable_modules
from ..quant import BITS_PER_MB, lsq_model


class BitMixer(nn.Module):
    """x ↦ Σ_k p_k · Q_k(x) over candidate quantizers Q_k (of one layer's weight, as its parametrization,
    or of its input), p = softmax(α) over the candidates marked `present` (all of them but while SMPQ
    takes some out of its coalitions), α (K,) learned."""

    def __init__(self, quantizers: Sequence[nn.Module]):
        super().__init__()
        self.quantizers = nn.ModuleList(quantizers)
        self.alpha = nn.Parameter(torch.zeros(len(quantizers)))  # uniform preferences to start
        self.register_buffer("present", torch.ones(len(quantizers), dtype=torch.bool))

    def probabilities(self) -> torch.Tensor:
        """(K,) softmax(α) renormalised over the present candidates; zeros when none is (the layer's weight is 0)."""
        p = self.alpha.masked_fill(~self.present, float("-inf")).softmax(0)
        return p.nan_to_num(0.0)  # all absent: softmax of -inf everywhere is NaN

    def log_probabilities(self) -> torch.Tensor:
        """(K,) log softmax(α) in float64, every candidate present (the policy's preferences)."""
        return self.alpha.detach().double().log_softmax(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(pk * q(x) for pk, q in zip(self.probabilities(), self.quantizers))


def edmips_supernet(
    model: nn.Module,
    problem: AllocationProblem,
    calib_images: torch.Tensor,
    log: Callable[[str], None] | None = None,
) -> tuple[nn.Module, list[BitMixer]]:
    """A copy of `model` (train mode) whose free layers (`problem.free`) mix their weight bit
    choices (`problem.w_choices`) with one `BitMixer` each and, when `problem.a_choices` holds
    several, their inputs' activation bit choices with another; the mixers are returned as every
    free layer's weight mixer in `problem.free` order, then every input mixer in the same order.
    Fixed layers are quantized at their bits; activation quantizers are calibrated on
    `calib_images` (N, ...), `log` getting those passes' progress lines. `model` is not modified."""
    layers = problem.layers
    free = set(problem.free)
    names = {layer.name for layer in layers}

    def copy_modules(w_bits: int, a_bits: int) -> dict[str, nn.Module]:
        # A throwaway lsq_model copy whose quantizers are taken out: weight steps from the PTQ
        # quantizer's, input ranges calibrated with float weights (as the supernet's own are).
        copy = lsq_model(model, layers, [w_bits] * len(layers), a_bits, calib_images, bn_recalibration=False, log=log)
        return {name: m for name, m in quantizable_modules(copy) if name in names}

    def weight_quantizers(bits: int) -> dict[str, nn.Module]:
        if bits >= 32:
            return {name: nn.Identity() for name in names}
        return {name: m.parametrizations.weight[0] for name, m in copy_modules(bits, 32).items()}

    weights = {b: weight_quantizers(b) for b in {*problem.w_choices, *(w for w, _ in problem.fixed.values())}}
    mixed_acts = len(problem.a_choices) > 1
    inputs = {
        a: {name: getattr(m, "act_quantizer", nn.Identity()) for name, m in copy_modules(32, a).items()}
        for a in (problem.a_choices if mixed_acts else ())
    }
    # Free layers' inputs at their fewest activation bits: a quantizer (and its pre-hook) that the mix replaces.
    act_bits = [problem.fixed[i][1] if i not in free else problem.a_choices[0] for i in range(len(layers))]
    supernet = lsq_model(model, layers, [32] * len(layers), act_bits, calib_images, bn_recalibration=False, log=log)
    modules = dict(quantizable_modules(supernet))
    weight_mixers, act_mixers = [], []
    for index, layer in enumerate(layers):
        module = modules[layer.name]
        if index not in free:
            parametrization = weights[problem.fixed[index][0]][layer.name]
        else:
            parametrization = BitMixer([weights[w][layer.name] for w in problem.w_choices])
            weight_mixers.append(parametrization)
            if mixed_acts:
                module.act_quantizer = BitMixer([inputs[a][layer.name] for a in problem.a_choices])
                act_mixers.append(module.act_quantizer)
        parametrize.register_parametrization(module, "weight", parametrization)
    # α is made on the CPU; .to keeps the Parameter objects
    return supernet.to(calib_images.device), weight_mixers + act_mixers


def option_probabilities(problem: AllocationProblem, mixers: Sequence[BitMixer], log: bool = False) -> torch.Tensor:
    """(F, K) probability of each free layer's options (columns of `problem.options`, weight bits
    major) under `edmips_supernet`'s `mixers`: softmax(α) of the weight, times softmax(β) of the
    input when the activation bits are mixed too. `log`: their logarithms in float64, every
    candidate present, without gradient (what the policy and its projection read)."""
    n = len(problem.free)
    rows = [m.log_probabilities() if log else m.probabilities() for m in mixers]
    weights = torch.stack(rows[:n])
    if len(rows) == n:
        return weights
    acts = torch.stack(rows[n:])
    joint = weights[:, :, None] + acts[:, None, :] if log else weights[:, :, None] * acts[:, None, :]
    return joint.flatten(1)


def expected_cost(problem: AllocationProblem, probabilities: torch.Tensor) -> torch.Tensor:
    """What γ weighs: the expected size relative to the size at the most bits, plus, under a BOPs
    budget, the expected BOPs relative to the BOPs at the most bits; `probabilities` as
    `option_probabilities` gives them. Relative costs make one γ mean the same on any model."""
    cost = expected_size_mb(problem, probabilities) * BITS_PER_MB / problem.max_size_bits
    if problem.bops_budget is not None:
        bops = torch.as_tensor(problem.bops, dtype=probabilities.dtype, device=probabilities.device)
        most = problem.fixed_bops + int(problem.bops[:, -1].sum())  # the last option has the most bits of both
        cost = cost + (problem.fixed_bops + (probabilities * bops).sum()) / most
    return cost


def expected_size_mb(problem: AllocationProblem, probabilities: torch.Tensor) -> torch.Tensor:
    """Expected size in MB (10^6 bytes) of the quantizable layers when free layer f takes option k
    with probability `probabilities[f, k]` ((F, K), rows `problem.free`, columns `problem.options`);
    differentiable, and the cost model's size at one-hot probabilities."""
    size_bits = torch.as_tensor(problem.size_bits, dtype=probabilities.dtype, device=probabilities.device)
    return (problem.fixed_size_bits + (probabilities * size_bits).sum()) / BITS_PER_MB
