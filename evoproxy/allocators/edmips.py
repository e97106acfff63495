"""EdMIPS (Cai & Vasconcelos, CVPR 2020): differentiable mixed-precision search on a supernet.

Every free layer's weight is the softmax(α)-weighted mix of its candidate bit-widths' fake-quantized
weights, Σ_k softmax(α)_k · Q_k(W), and, when the problem offers several activation bit-widths, its
input likewise the softmax(β)-weighted mix of its candidate activation quantizers (the paper's
per-layer activation mix). The quantizers are `quant.qat`'s LSQ quantizers (learned steps,
straight-through rounding), initialised as `lsq_model` initialises them at each candidate
bit-width; fixed layers keep their one quantizer of each. Layer f takes the option (w, a) of the
problem with probability softmax(α_f)_w · softmax(β_f)_a. The loss is

    task cross-entropy + γ · (E[size] / size at the most bits + E[BOPs] / BOPs at the most bits),

the BOPs term only under a BOPs budget; E[·] is the allocation problem's own cost table weighted
by the options' probabilities (so at one-hot α and β it is the cost model's); dividing by the
largest cost makes γ mean the same on any model.
Updates alternate on every batch of the data's train part: one SGD step on the weights, steps and
BatchNorm, then one Adam step on α and β, both on that batch. The policy is the most probable
option per layer (argmax α, argmax β); when it exceeds a budget, it is projected onto the budgets:
the configuration within them that maximises Σ_l log p_l(w_l, a_l) (the most probable one under
the learned preferences), solved exactly by the allocation stage's ILP. So the written bits always
meet the budgets.

SEAM and SMPQ run on this search: SEAM swaps the task loss (`objective`), SMPQ the rule that moves
α (`alpha_rule`, instead of Adam on the gradient); both keep the supernet and the projection.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ..allocation import Allocation, AllocationProblem, allocate
from ..model import quantizable_modules
from ..quant import BITS_PER_MB, epoch_batches, lsq_model
from .interface import NON_NEGATIVE, POSITIVE, Allocator, SearchData, SearchResult, TrainingSettings, setting


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
    model: nn.Module, problem: AllocationProblem, calib_images: torch.Tensor
) -> tuple[nn.Module, list[BitMixer]]:
    """A copy of `model` (train mode) whose free layers (`problem.free`) mix their weight bit
    choices (`problem.w_choices`) with one `BitMixer` each and, when `problem.a_choices` holds
    several, their inputs' activation bit choices with another; the mixers are returned as every
    free layer's weight mixer in `problem.free` order, then every input mixer in the same order.
    Fixed layers are quantized at their bits; activation quantizers are calibrated on
    `calib_images` (N, ...). `model` is not modified."""
    layers = problem.layers
    free = set(problem.free)
    names = {layer.name for layer in layers}

    def copy_modules(w_bits: int, a_bits: int) -> dict[str, nn.Module]:
        # A throwaway lsq_model copy whose quantizers are taken out: weight steps from the PTQ
        # quantizer's, input ranges calibrated with float weights (as the supernet's own are).
        copy = lsq_model(model, layers, [w_bits] * len(layers), a_bits, calib_images, bn_recalibration=False)
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
    supernet = lsq_model(model, layers, [32] * len(layers), act_bits, calib_images, bn_recalibration=False)
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


@dataclass(frozen=True, kw_only=True)
class EdmipsSettings(TrainingSettings):
    """How EdMIPS searches: the training of `TrainingSettings`, α by Adam at `alpha_lr`; `gamma`
    weighs the expected cost (`expected_cost`: size, and BOPs under a BOPs budget, relative to the
    most bits') against the task loss. The default 0 leaves the budget to the projection: on
    ResNet-20, γ = 1 sent every layer to the fewest bits within one short epoch, far under a budget
    that the projection never fills up."""

    gamma: float = setting(
        0.0,
        "weight γ of the expected size (and, under a BOPs budget, BOPs), each relative to the most bits', "
        "in the loss; 0 leaves the budget to the projection",
    )
    alpha_lr: float = setting(0.01, "Adam learning rate of α")

    CONSTRAINTS = {**TrainingSettings.CONSTRAINTS, "gamma": NON_NEGATIVE, "alpha_lr": POSITIVE}

    def knobs(self, data: SearchData) -> str:
        return f"γ {self.gamma:g}"


@dataclass(frozen=True)
class EdmipsEpoch:
    """One finished epoch: mean task loss and mean expected size (MB) over its α steps, the
    size (MB) of the argmax policy after it, and its seconds."""

    epoch: int
    task_loss: float
    expected_size_mb: float
    argmax_size_mb: float
    seconds: float


class CrossEntropyObjective(nn.Module):
    """EdMIPS's task loss: (images, labels) ↦ the cross-entropy of the supernet's outputs."""

    def __init__(self, supernet: nn.Module):
        super().__init__()
        self.supernet = supernet

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.supernet(x), y)


def search_edmips(
    model: nn.Module,
    problem: AllocationProblem,
    data: SearchData,
    settings: EdmipsSettings = EdmipsSettings(),
    log: Callable[[str], None] = print,
    *,
    method: str = "edmips",
    objective: Callable[[nn.Module], nn.Module] = CrossEntropyObjective,
    alpha_rule: Callable[[nn.Module, list[BitMixer]], str] | None = None,
) -> SearchResult:
    """Search per-layer weight (and, with several `problem.a_choices`, activation) bits for `model`
    with EdMIPS under `problem`'s choices, fixed layers and budgets (its values are ignored), on
    `data.train`, the activation quantizers calibrated on `data.calibration`; on the device of
    `data.calibration`. One line per epoch goes to `log`. An infeasible budget is refused before any
    training. The result's `found` is the argmax policy; each layer's sensitivity in its file is the
    expected bit-width, and its details the probabilities of its bit-widths.

    `objective(supernet)` gives the module whose (images, labels) ↦ loss is the task loss (its own
    parameters train with the weights). With `alpha_rule`, α takes no gradient steps: after every
    epoch `alpha_rule(supernet, mixers)` (`edmips_supernet`'s) moves α in place and returns a note
    for the epoch's line. `method` names the result (SEAM and SMPQ run here under their names)."""
    problem.check_feasible()
    start = time.perf_counter()
    device = data.calibration.device
    supernet, mixers = edmips_supernet(model, problem, data.calibration)
    task_loss = objective(supernet).to(device)
    alphas = [m.alpha for m in mixers]
    is_alpha = {id(a) for a in alphas}
    w_opt = torch.optim.SGD([p for p in task_loss.parameters() if id(p) not in is_alpha], lr=settings.lr, momentum=0.9)
    if alpha_rule is None:
        optimizers = (w_opt, torch.optim.Adam(alphas, lr=settings.alpha_lr))
    else:
        optimizers = (w_opt,)
        for a in alphas:
            a.requires_grad_(False)
    images, labels = data.train
    history: list[EdmipsEpoch] = []

    def argmax_policy() -> tuple[AllocationProblem, Allocation, bool]:
        """The problem valued by the options' log probabilities, its argmax policy, and whether
        that fits the budgets."""
        log_p = option_probabilities(problem, mixers, log=True).cpu().numpy()
        scored = replace(problem, value=log_p)
        choice = log_p.argmax(1)
        return (scored, scored.allocation(choice, method, True, time.perf_counter() - start), problem.fits(choice))

    for epoch in range(settings.epochs):
        epoch_start = time.perf_counter()
        supernet.train()
        task_sum = size_sum = 0.0
        steps = 0
        for x, y in epoch_batches(
            images, labels, w_opt, settings.batch_size, settings.epochs, epoch, settings.seed, settings.lr, device
        ):
            for opt in optimizers:  # alternate: the weights' step, then α's on the updated weights
                task = task_loss(x, y)
                p = option_probabilities(problem, mixers)
                size = expected_size_mb(problem, p)
                for o in optimizers:
                    o.zero_grad(set_to_none=True)
                (task + settings.gamma * expected_cost(problem, p)).backward()
                opt.step()
            task_sum += task.item()
            size_sum += size.item()
            steps += 1
        note = "" if alpha_rule is None else f", {alpha_rule(supernet, mixers)}"
        _, policy, _ = argmax_policy()
        history.append(
            EdmipsEpoch(
                epoch + 1, task_sum / steps, size_sum / steps, policy.size_mb, time.perf_counter() - epoch_start
            )
        )
        r = history[-1]
        log(
            f"epoch {r.epoch}/{settings.epochs}: task loss {r.task_loss:.4f}, expected size "
            f"{r.expected_size_mb:.6f} MB{note}, argmax policy {r.argmax_size_mb:.6f} MB (budget "
            f"{problem.size_budget_mb} MB), {r.seconds:.1f} s"
        )
    scored, policy, fits = argmax_policy()
    chosen = policy
    if not fits:
        projection = allocate(scored, "ilp")
        chosen = replace(
            projection,
            method=method,
            note=f"argmax policy ({policy.size_mb:.6f} MB, "
            f"{policy.bops / 1e9:.4g} GBOPs) outside the budget: "
            "projected to the most probable configuration within it",
        )
    seconds = time.perf_counter() - start
    probabilities = option_probabilities(problem, mixers, log=True).exp().cpu().numpy()
    return _supernet_result(
        method, problem, settings, replace(chosen, seconds=seconds), policy, probabilities, history, seconds
    )


def _supernet_result(
    method: str,
    problem: AllocationProblem,
    settings: EdmipsSettings,
    allocation: Allocation,
    argmax: Allocation,
    probabilities: np.ndarray,
    history: list[EdmipsEpoch],
    seconds: float,
) -> SearchResult:
    """The result of a search on the supernet from its options' `probabilities` (F, K) (columns
    `problem.options`): each free layer's probability per weight bit-width, and per activation
    bit-width when those were searched too; each layer's expected bit-width as its sensitivity
    (fixed layers: their bits)."""
    free = problem.free
    joint = probabilities.reshape(len(free), len(problem.w_choices), -1)
    weights, acts = joint.sum(2), joint.sum(1)
    mixed_acts = len(problem.a_choices) > 1
    layer_details = {}
    for f, index in enumerate(free):
        layer_details[index] = {"probabilities": {str(w): float(p) for w, p in zip(problem.w_choices, weights[f])}}
        if mixed_acts:
            layer_details[index]["act_probabilities"] = {str(a): float(p) for a, p in zip(problem.a_choices, acts[f])}
    expected = {index: float(w) for index, (w, _) in problem.fixed.items()}
    for f, index in enumerate(free):
        expected[index] = float(probabilities[f] @ problem.options[:, 0])
    layers = range(len(problem.layers))

    def shares(key: str) -> list[str]:
        return [" ".join(f"{p:.2f}" for p in layer_details.get(i, {}).get(key, {}).values()) for i in layers]

    columns = {f"softmax(α) over {','.join(map(str, problem.w_choices))}": shares("probabilities")}
    if mixed_acts:
        columns[f"softmax(β) over {','.join(map(str, problem.a_choices))}"] = shares("act_probabilities")
    return SearchResult(
        method,
        problem,
        settings,
        allocation,
        argmax,
        seconds,
        [expected[i] for i in layers],
        history,
        {
            "argmax_bits": list(argmax.w_bits),
            "argmax_act_bits": list(argmax.a_bits),
            "argmax_size_mb": argmax.size_mb,
        },
        layer_details,
        columns,
        found_as="argmax α",
        projection="knapsack over log softmax(α)",
    )


ALLOCATOR = Allocator(
    "EdMIPS",
    EdmipsSettings,
    search_edmips,
    "a supernet mixing each layer's candidate weight bit-widths (LSQ fake quantizers) with softmax(α) "
    "weights, and with several activation bit choices its input's activation bit-widths with softmax(β); "
    "loss = cross-entropy + γ × expected size / size at the most bits (+ expected BOPs / BOPs at the most "
    "bits under a BOPs budget); weights (SGD) and α, β (Adam) updated alternately; the policy is argmax α, "
    "β, projected onto the budget (the most probable configuration within it) when over.",
)
