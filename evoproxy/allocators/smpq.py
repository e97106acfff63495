"""SMPQ (Kang, Ma, Yu & Gao): bit-widths chosen by their Shapley values on the EdMIPS supernet.

The players are the (free layer, weight bit-width) options of the supernet, and its (free layer,
activation bit-width) options when those are searched too. A coalition S is the supernet with
every absent option taken out of its mix (the mix renormalised over the present options; a
layer's weight or input with none is 0), and its value is the validation accuracy less the
complexity, V(S) = acc(S) − γ · E_S[cost] with EdMIPS's `expected_cost` (size, and BOPs under a
BOPs budget, relative to the most bits': the paper's accuracy-complexity trade-off; γ = 0 by
default, as in EdMIPS: the projection meets the budget).
The supernet's weights train on the cross-entropy as in EdMIPS, but α takes no gradient: after
every epoch a round of Monte Carlo permutation sampling (Castro et al. 2009; the paper's eq. 6)
estimates the Shapley values ψ, each sample truncated once the value has dropped by more than
`truncation` below the full supernet's, and α moves by the paper's momentum rule (eq. 8, 9)

    q_k = β q_{k−1} + (1 − β) ψ / ‖ψ‖₂,    α_k = α_{k−1} + ξ q_k / ‖q_k‖₂   (ξ = 0.1, β = 0.8: table 1).

The policy takes the option of largest α per layer's weight (and input) (the largest accumulated
contribution), and EdMIPS's projection, the most probable configuration under softmax(α) within
the budget (the same as the one of largest Σ α, since log softmax shifts each mix's α by one
constant), meets the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from ..allocation import AllocationProblem
from ..errors import EvoproxyError
from ..pace import paced
from ..params import Interval
from .edmips import EdmipsSettings, search_edmips
from .interface import POSITIVE, Allocator, SearchData, SearchResult, setting
from .supernet import BitMixer, expected_cost, option_probabilities


@dataclass(frozen=True, kw_only=True)
class SmpqSettings(EdmipsSettings):
    """How SMPQ searches: EdMIPS's settings (`gamma` weighs the complexity in the value, α takes no
    Adam steps) and its Shapley rounds: `samples` permutations per round (one round per epoch),
    each cut short once the coalition's value is more than `truncation` (a fraction of accuracy)
    below the full supernet's; `xi` (ξ) the step of α, `beta` (β) the momentum of the accumulated values."""

    samples: int = setting(10, "permutations per Shapley round, one round per epoch")
    truncation: float = setting(
        0.5, "a permutation stops once the value is this far below the whole supernet's (accuracy fraction)"
    )
    xi: float = setting(0.1, "step ξ of α per round")
    beta: float = setting(0.8, "momentum β of the Shapley values")

    CONSTRAINTS = {
        **EdmipsSettings.CONSTRAINTS,
        "samples": Interval(1, None, integer=True),
        "truncation": POSITIVE,
        "xi": POSITIVE,
        "beta": Interval(0, 1, closed="left"),
    }

    def knobs(self, data: SearchData) -> str:
        return (
            f"{super().knobs(data)}, {self.samples} Shapley permutations per epoch valued on "
            f"{len(data.validation[0])} held-out images"
        )


def shapley_permutations(
    value: Callable[[np.ndarray], float],
    players: int,
    samples: int,
    rng: np.random.Generator,
    truncation: float = math.inf,
    log: Callable[[str], None] | None = None,
) -> tuple[np.ndarray, int]:
    """Monte Carlo permutation estimate of the Shapley values of `players` under `value`, a
    function of a boolean mask (players,) of the coalition. Each of `samples` random orders takes
    the players out of the full coalition one by one and credits each with the value its removal
    loses: its marginal contribution to the players after it, i.e. the permutation read backwards,
    so the mean over orders is unbiased. Once the value has fallen more than `truncation` below
    the full coalition's, the rest of that order is credited 0. Returns the estimates (players,)
    and how many times `value` was called; `log` gets a line now and then (pace.paced) on how many
    of the samples × players removals are done."""
    mask = np.ones(players, dtype=bool)
    full = value(mask)
    calls = 1
    total = np.zeros(players)
    removals = [i for _ in range(samples) for i in rng.permutation(players)]  # the orders one after another
    for step, i in enumerate(paced(removals, len(removals), "Shapley round: removal", log)):
        if step % players == 0:  # a new order starts from the full coalition
            mask[:] = True
            current = full
        if full - current > truncation:
            continue  # the rest of this order is credited 0
        mask[i] = False
        after = value(mask)
        calls += 1
        total[i] += current - after
        current = after
    return total / samples, calls


class ShapleyAlphaRule:
    """`search_edmips`'s `alpha_rule` for SMPQ: one round of `shapley_permutations` on the
    validation images per call, then the momentum step of α (module docstring), `log` getting the
    round's progress lines. Counts the value evaluations in `evaluations`."""

    def __init__(
        self,
        problem: AllocationProblem,
        val: tuple[torch.Tensor, torch.Tensor],
        settings: SmpqSettings,
        log: Callable[[str], None] | None = None,
    ):
        self.problem, self.val, self.settings, self.log = problem, val, settings, log
        self.rng = np.random.default_rng(settings.seed)
        self.momentum: np.ndarray | None = None
        self.evaluations = 0

    @staticmethod
    def _rows(mixers: list[BitMixer], flat: np.ndarray) -> list[np.ndarray]:
        """`flat` (one entry per player) cut into one row per mixer."""
        return np.split(flat, np.cumsum([len(m.alpha) for m in mixers])[:-1])

    def _value(self, supernet: nn.Module, mixers: list[BitMixer], mask: np.ndarray) -> float:
        device = mixers[0].alpha.device
        for m, row in zip(mixers, self._rows(mixers, mask)):
            m.present.copy_(torch.as_tensor(row, device=device))
        images, labels = self.val
        batch = self.settings.batch_size
        correct = sum(
            int((supernet(images[i : i + batch].to(device)).argmax(1) == labels[i : i + batch].to(device)).sum())
            for i in range(0, len(images), batch)
        )
        cost = expected_cost(self.problem, option_probabilities(self.problem, mixers)).item()
        return correct / len(images) - self.settings.gamma * cost

    def __call__(self, supernet: nn.Module, mixers: list[BitMixer]) -> str:
        supernet.eval()
        with torch.no_grad():
            psi, calls = shapley_permutations(
                lambda mask: self._value(supernet, mixers, mask),
                sum(len(m.alpha) for m in mixers),
                self.settings.samples,
                self.rng,
                self.settings.truncation,
                self.log,
            )
            for m in mixers:
                m.present.fill_(True)
            beta = self.settings.beta
            step = psi / max(np.linalg.norm(psi), 1e-12)  # all contributions 0 (e.g. a model of one class): no step
            self.momentum = (1 - beta) * step if self.momentum is None else beta * self.momentum + (1 - beta) * step
            move = self.settings.xi * self.momentum / max(np.linalg.norm(self.momentum), 1e-12)
            for m, row in zip(mixers, self._rows(mixers, move)):
                m.alpha += torch.as_tensor(row, dtype=m.alpha.dtype, device=m.alpha.device)
        supernet.train()
        self.evaluations += calls
        return f"Shapley round of {self.settings.samples} permutations, {calls} value evaluations"


def search_smpq(
    model: nn.Module,
    problem: AllocationProblem,
    data: SearchData,
    settings: SmpqSettings = SmpqSettings(),
    log: Callable[[str], None] = print,
) -> SearchResult:
    """SMPQ's policy (method "smpq") for `model` under `problem`: the EdMIPS supernet trained on
    `data.train`, α moved by Shapley rounds valued on `data.validation`, the projection onto the
    budget; `details` records the number of value evaluations ("value_evaluations") and of
    validation images ("validation_images")."""
    if len(data.validation[0]) == 0:
        raise EvoproxyError("SMPQ needs validation images for its value function: the data's validation part is empty")
    rule = ShapleyAlphaRule(problem, data.validation, settings, log)
    result = search_edmips(model, problem, data, settings, log, method="smpq", alpha_rule=rule)
    return replace(
        result,
        details={"value_evaluations": rule.evaluations, "validation_images": len(data.validation[0]), **result.details},
        spent=f"{rule.evaluations} value evaluations",
    )


ALLOCATOR = Allocator(
    "SMPQ",
    SmpqSettings,
    search_smpq,
    "EdMIPS's supernet with α moved by Monte Carlo Shapley values of the bit-widths on held-out training images.",
    validation_images=512,
)
