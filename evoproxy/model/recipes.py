"""The named training recipes of the classifiers: how a registry model's checkpoint was trained.
Two recipes give two checkpoints of one architecture whose per-layer sensitivities differ."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Recipe:
    """Optimizer (`sgd`: Nesterov momentum 0.9, or `adamw`), peak learning rate, weight decay
    (coupled for SGD, decoupled for AdamW, on every parameter), schedule (`one-cycle`, or `cosine`:
    linear warm-up over the first 5 % of steps, then cosine decay), label smoothing, and whether
    random horizontal flips augment the images."""

    optimizer: str
    lr: float
    weight_decay: float
    schedule: str
    label_smoothing: float
    flips: bool
    summary: str

    def optimizer_for(self, params, lr: float | None = None) -> torch.optim.Optimizer:
        """This recipe's optimizer over `params` at peak rate `lr` (None: the recipe's)."""
        lr = lr or self.lr
        if self.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=self.weight_decay, nesterov=True)

    def scheduler_for(self, opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
        """This recipe's schedule over `steps` optimizer steps, to be stepped after each."""
        if self.schedule == "cosine":
            return warmup_cosine(opt, steps)
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=opt.param_groups[0]["lr"], total_steps=steps)


def warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 5 % of `steps`, then cosine decay to zero."""
    warm = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: min((s + 1) / warm, 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, steps - warm))))),
    )


# "zoo" trained every shipped classifier of the first zoo. "adamw" changes what sets per-layer
# sensitivity: per-parameter step sizes and a decoupled weight decay (twice SGD's shrinkage per step
# at the peak rate) reshape each layer's weight scale, label smoothing bounds the logits (the head's
# sensitivity), and without flips the filters need not be mirror-symmetric.
RECIPES: dict[str, Recipe] = {
    "zoo": Recipe(
        "sgd", 0.1, 5e-4, "one-cycle", 0.0, True, "SGD (Nesterov), one-cycle to lr 0.1, weight decay 5e-4, flips"
    ),
    "adamw": Recipe(
        "adamw",
        2e-3,
        0.05,
        "cosine",
        0.1,
        False,
        "AdamW, warm-up and cosine decay from lr 2e-3, weight decay 0.05, label smoothing 0.1, no flips",
    ),
}
