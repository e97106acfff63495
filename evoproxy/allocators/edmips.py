"""EdMIPS (Cai & Vasconcelos, CVPR 2020): differentiable mixed-precision search on a supernet.

The search trains `supernet.edmips_supernet`, whose free layers mix their candidate weight bit-widths'
LSQ fake quantizers with softmax(α) weights (and, with several activation bit choices, their inputs'
with softmax(β)). The loss is

    task cross-entropy + γ · (E[size] / size at the most bits + E[BOPs] / BOPs at the most bits),

the BOPs term only under a BOPs budget; E[·] is the cost expected under the options' probabilities
(`expected_cost`); dividing by the largest cost makes γ mean the same on any model.
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
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..allocation import Allocation, AllocationProblem, allocate
from ..quant import epoch_batches
from .interface import NON_NEGATIVE, POSITIVE, Allocator, SearchData, SearchResult, TrainingSettings, setting
from .supernet import BitMixer, edmips_supernet, expected_cost, expected_size_mb, option_probabilities


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
    `data.calibration`. One line per epoch goes to `log`, and progress lines on the long passes. An
    infeasible budget is refused before any training. The result's `found` is the argmax policy;
    each layer's sensitivity in its file is the expected bit-width, and its details the
    probabilities of its bit-widths.

    `objective(supernet)` gives the module whose (images, labels) ↦ loss is the task loss (its own
    parameters train with the weights). With `alpha_rule`, α takes no gradient steps: after every
    epoch `alpha_rule(supernet, mixers)` (`edmips_supernet`'s) moves α in place and returns a note
    for the epoch's line. `method` names the result (SEAM and SMPQ run here under their names)."""
    problem.check_feasible()
    start = time.perf_counter()
    device = data.calibration.device
    supernet, mixers = edmips_supernet(model, problem, data.calibration, log)
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
            images, labels, w_opt, settings.batch_size, settings.epochs, epoch, settings.seed, settings.lr, device, log
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
