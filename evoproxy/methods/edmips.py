"""EdMIPS (Cai & Vasconcelos, CVPR 2020): differentiable mixed-precision search on a supernet.

Every free layer's weight is the softmax(α)-weighted mix of its candidate bit-widths' fake-quantized
weights, Σ_k softmax(α)_k · Q_k(W). The quantizers Q_k are `quant.qat`'s LSQ quantizers (learned
per-channel steps, straight-through rounding), initialised as `lsq_model` initialises them at each
candidate bit-width; fixed layers keep their one quantizer and activations their LSQ quantizer at
the one activation bit-width. The loss is

    task cross-entropy + γ · E_α[size] / size at the most bits,

E_α[size] being the allocation problem's own size table weighted by softmax(α) (so at one-hot α it
is the cost model's size); dividing by the largest size makes γ mean the same on any model.
Updates alternate on every batch of the data's train part: one SGD step on the weights, steps and
BatchNorm, then one Adam step on α, both on that batch. The policy is argmax α per layer; when it
exceeds the size budget, it is projected onto the budget: the configuration within the budget that
maximises Σ_l log softmax(α_l)[b_l] (the most probable one under the learned preferences), solved
exactly by the allocation stage's ILP. So the written bits always meet the budget.

SEAM and SMPQ run on this search: SEAM swaps the task loss (`objective`), SMPQ the rule that moves
α (`alpha_rule`, instead of Adam on the gradient); both keep the supernet and the projection.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from ..allocation import Allocation, AllocationProblem, allocate, allocation_record
from ..errors import EvoproxyError
from ..model import quantizable_modules
from ..quant import BITS_PER_MB, epoch_batches, lsq_model


class MixedPrecisionWeight(nn.Module):
    """Parametrization w ↦ Σ_k p_k · Q_k(w) over candidate quantizers Q_k, p = softmax(α) over the
    candidates marked `present` (all of them but while SMPQ takes some out of its coalitions), α (K,) learned."""

    def __init__(self, quantizers: Sequence[nn.Module]):
        super().__init__()
        self.quantizers = nn.ModuleList(quantizers)
        self.alpha = nn.Parameter(torch.zeros(len(quantizers)))  # uniform preferences to start
        self.register_buffer("present", torch.ones(len(quantizers), dtype=torch.bool))

    def probabilities(self) -> torch.Tensor:
        """(K,) softmax(α) renormalised over the present candidates; zeros when none is (the layer's weight is 0)."""
        p = self.alpha.masked_fill(~self.present, float("-inf")).softmax(0)
        return p.nan_to_num(0.0)  # all absent: softmax of -inf everywhere is NaN

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return sum(pk * q(w) for pk, q in zip(self.probabilities(), self.quantizers))


def _one_act_bits(problem: AllocationProblem) -> int:
    acts = {*problem.a_choices, *(a for _, a in problem.fixed.values())}
    if len(acts) != 1:
        raise EvoproxyError(f"EdMIPS searches weight bits with one activation bit-width for every layer, got "
                            f"{sorted(acts)}")
    return acts.pop()


def edmips_supernet(model: nn.Module, problem: AllocationProblem,
                    calib_images: torch.Tensor) -> tuple[nn.Module, list[MixedPrecisionWeight]]:
    """A copy of `model` (train mode) whose free layers (`problem.free`) mix the weight bit
    options of `problem` (columns of `problem.options`), with one `MixedPrecisionWeight` each
    (returned in `problem.free` order); fixed layers are quantized at their bits, and inputs at the
    problem's activation bits, calibrated on `calib_images` (N, ...). `model` is not modified."""
    layers = problem.layers
    act_bits = _one_act_bits(problem)
    names = {layer.name for layer in layers}

    def quantizers(bits: int) -> dict[str, nn.Module]:
        # lsq_model's weight quantizers at `bits` (steps from the MSE-searched PTQ scales), taken
        # out of a throwaway copy; no forward pass is run (no activations, no BatchNorm re-estimation).
        if bits >= 32:
            return {name: nn.Identity() for name in names}
        copy = lsq_model(model, layers, [bits] * len(layers), 32, calib_images, bn_recalibration=False)
        return {name: m.parametrizations.weight[0] for name, m in quantizable_modules(copy) if name in names}

    by_bits = {b: quantizers(b) for b in {*problem.w_choices, *(w for w, _ in problem.fixed.values())}}
    supernet = lsq_model(model, layers, [32] * len(layers), act_bits, calib_images, bn_recalibration=False)
    modules = dict(quantizable_modules(supernet))
    mixers = []
    for index, layer in enumerate(layers):
        if index in problem.fixed:
            parametrization = by_bits[problem.fixed[index][0]][layer.name]
        else:
            parametrization = MixedPrecisionWeight([by_bits[int(w)][layer.name] for w, _ in problem.options])
            mixers.append(parametrization)
        parametrize.register_parametrization(modules[layer.name], "weight", parametrization)
    return supernet.to(calib_images.device), mixers  # α is made on the CPU; .to keeps the Parameter objects


def expected_size_mb(problem: AllocationProblem, probabilities: torch.Tensor) -> torch.Tensor:
    """Expected size in MB (10^6 bytes) of the quantizable layers when free layer f takes option k
    with probability `probabilities[f, k]` ((F, K), rows `problem.free`, columns `problem.options`);
    differentiable, and the cost model's size at one-hot probabilities."""
    size_bits = torch.as_tensor(problem.size_bits, dtype=probabilities.dtype, device=probabilities.device)
    return (problem.fixed_size_bits + (probabilities * size_bits).sum()) / BITS_PER_MB


def largest_size_mb(problem: AllocationProblem) -> float:
    """The size in MB with every free layer at its most bits (the last option): what γ's size term
    is relative to, so that one γ means the same on any model."""
    return problem.max_size_bits / BITS_PER_MB


@dataclass(frozen=True)
class EdmipsSettings:
    """How EdMIPS searches: `epochs` over the training images in batches of `batch_size`
    (shuffled with `seed` + epoch); weights, steps and BatchNorm by SGD (momentum 0.9) at `lr`
    on a cosine to 0, α by Adam at `alpha_lr`; `gamma` weighs the expected size relative to the
    size at the most bits against the task loss. The default 0 leaves the budget to the
    projection: on ResNet-20, γ = 1 sent every layer to the fewest bits within one short epoch,
    far under a budget that the projection never fills up."""
    epochs: int = 1
    gamma: float = 0.0
    lr: float = 0.01
    alpha_lr: float = 0.01
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise EvoproxyError(f"--epochs and --batch-size must be at least 1, got {self.epochs} and "
                                f"{self.batch_size}")
        for flag, value, low in (("--gamma", self.gamma, 0.0), ("--lr", self.lr, None),
                                 ("--alpha-lr", self.alpha_lr, None)):
            if not (math.isfinite(value) and (value >= low if low is not None else value > 0)):
                raise EvoproxyError(f"{flag} must be a {'number from 0' if low is not None else 'positive number'}, "
                                    f"got {value}")


@dataclass(frozen=True)
class EdmipsEpoch:
    """One finished epoch: mean task loss and mean expected size (MB) over its α steps, the
    size (MB) of the argmax policy after it, and its seconds."""
    epoch: int
    task_loss: float
    expected_size_mb: float
    argmax_size_mb: float
    seconds: float


@dataclass(frozen=True, eq=False)
class EdmipsResult:
    """What a search gives: `allocation`, the policy within the budget (of `method`: "edmips",
    "seam" or "smpq"); `argmax`, the argmax-α policy before the projection onto the budget (the
    same when it fits); `probabilities` (F, K), softmax(α) per free layer and option of `problem`;
    `history`, one record per epoch; `seconds`, the whole search including the projection;
    `details`, what the method adds to the file's record of its settings."""
    problem: AllocationProblem
    settings: EdmipsSettings
    allocation: Allocation
    argmax: Allocation
    probabilities: np.ndarray
    history: list[EdmipsEpoch]
    seconds: float
    method: str = "edmips"
    details: dict = field(default_factory=dict)

    @property
    def projected(self) -> bool:
        return self.allocation.w_bits != self.argmax.w_bits

    def expected_bits(self) -> list[float]:
        """Per layer (registry order): the bit-width expected under softmax(α); fixed layers' own bits."""
        bits = {index: float(w) for index, (w, _) in self.problem.fixed.items()}
        for f, index in enumerate(self.problem.free):
            bits[index] = float(self.probabilities[f] @ self.problem.options[:, 0])
        return [bits[index] for index in range(len(self.problem.layers))]

    def record(self, model: str) -> dict:
        """The bit configuration file (`allocation_record`'s format, so `evoproxy quantize` reads
        it) of `model`, proxy `method`; each layer's "sensitivity" is its expected bit-width, free
        layers carry their softmax(α) per weight bit-width, and the key `method` holds the settings."""
        rec = allocation_record(self.allocation, self.problem.layers, self.expected_bits(), model=model,
                                proxy=self.method)
        for f, index in enumerate(self.problem.free):
            rec["layers"][index]["probabilities"] = {str(int(w)): float(p)
                                                     for (w, _), p in zip(self.problem.options, self.probabilities[f])}
        rec[self.method] = {**asdict(self.settings), **self.details, "argmax_bits": list(self.argmax.w_bits),
                            "argmax_size_mb": self.argmax.size_mb, "projected": self.projected,
                            "search_seconds": self.seconds}
        return rec


class CrossEntropyObjective(nn.Module):
    """EdMIPS's task loss: (images, labels) ↦ the cross-entropy of the supernet's outputs."""

    def __init__(self, supernet: nn.Module):
        super().__init__()
        self.supernet = supernet

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.supernet(x), y)


def search_edmips(model: nn.Module, problem: AllocationProblem, train: tuple[torch.Tensor, torch.Tensor],
                  calib_images: torch.Tensor, settings: EdmipsSettings = EdmipsSettings(),
                  log: Callable[[str], None] = print, *, method: str = "edmips",
                  objective: Callable[[nn.Module], nn.Module] = CrossEntropyObjective,
                  alpha_rule: Callable[[nn.Module, list[MixedPrecisionWeight]], str] | None = None) -> EdmipsResult:
    """Search per-layer weight bits for `model` with EdMIPS under `problem`'s choices, fixed layers
    and size budget (its values are ignored), on `train` = (images (N, ...), labels (N,)), the
    activation quantizers calibrated on `calib_images`; on the device of `calib_images`. One line
    per epoch goes to `log`. An infeasible budget is refused before any training.

    `objective(supernet)` gives the module whose (images, labels) ↦ loss is the task loss (its own
    parameters train with the weights). With `alpha_rule`, α takes no gradient steps: after every
    epoch `alpha_rule(supernet, mixers)` moves α in place and returns a note for the epoch's line."""
    problem.check_feasible()
    start = time.perf_counter()
    device = calib_images.device
    supernet, mixers = edmips_supernet(model, problem, calib_images)
    task_loss = objective(supernet).to(device)
    alphas = [m.alpha for m in mixers]
    is_alpha = {id(a) for a in alphas}
    w_opt = torch.optim.SGD([p for p in task_loss.parameters() if id(p) not in is_alpha], lr=settings.lr,
                            momentum=0.9)
    if alpha_rule is None:
        optimizers = (w_opt, torch.optim.Adam(alphas, lr=settings.alpha_lr))
    else:
        optimizers = (w_opt,)
        for a in alphas:
            a.requires_grad_(False)
    largest = largest_size_mb(problem)
    images, labels = train
    history: list[EdmipsEpoch] = []

    def argmax_policy() -> tuple[AllocationProblem, Allocation, bool]:
        """The problem valued by log softmax(α), its argmax policy, and whether that fits the budget."""
        log_p = torch.stack(alphas).detach().double().log_softmax(1).cpu().numpy()
        scored = replace(problem, value=log_p)
        choice = log_p.argmax(1)
        return (scored, scored.allocation(choice, method, True, time.perf_counter() - start),
                problem.fits(choice))

    for epoch in range(settings.epochs):
        epoch_start = time.perf_counter()
        supernet.train()
        task_sum = size_sum = 0.0
        steps = 0
        for x, y in epoch_batches(images, labels, w_opt, settings.batch_size, settings.epochs, epoch,
                                  settings.seed, settings.lr, device):
            for opt in optimizers:  # alternate: the weights' step, then α's on the updated weights
                task = task_loss(x, y)
                size = expected_size_mb(problem, torch.stack([m.probabilities() for m in mixers]))
                for o in optimizers:
                    o.zero_grad(set_to_none=True)
                (task + settings.gamma * size / largest).backward()
                opt.step()
            task_sum += task.item()
            size_sum += size.item()
            steps += 1
        note = "" if alpha_rule is None else f", {alpha_rule(supernet, mixers)}"
        _, policy, _ = argmax_policy()
        history.append(EdmipsEpoch(epoch + 1, task_sum / steps, size_sum / steps,
                                   policy.size_mb, time.perf_counter() - epoch_start))
        r = history[-1]
        log(f"epoch {r.epoch}/{settings.epochs}: task loss {r.task_loss:.4f}, expected size "
            f"{r.expected_size_mb:.6f} MB{note}, argmax policy {r.argmax_size_mb:.6f} MB (budget "
            f"{problem.size_budget_mb} MB), {r.seconds:.1f} s")
    scored, policy, fits = argmax_policy()
    chosen = policy
    if not fits:
        projection = allocate(scored, "ilp")
        chosen = replace(projection, method=method, note=f"argmax policy {policy.size_mb:.6f} MB over the budget: "
                                                           "projected to the most probable configuration within it")
    seconds = time.perf_counter() - start
    probabilities = torch.stack(alphas).detach().double().softmax(1).cpu().numpy()
    return EdmipsResult(problem, settings, replace(chosen, seconds=seconds), policy, probabilities, history, seconds,
                        method)
