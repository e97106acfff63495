"""What a model's quality is measured in: top-1 accuracy for a classifier (labels (N,)), perplexity
for a language model (next-token targets (N, T)). A bench names its metric in its header; ranking,
fitness and allocation read its direction, so nothing assumes that higher is better.

A metric is a sum over evaluation batches (`batch_sum`) turned into its value once every batch is
in (`finish`), so that a sweep over many configurations can measure them batch by batch."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import EvoproxyError
from ..pace import paced

# Small nets on small images spend much of their time in elementwise work (BatchNorm, ReLU, fake
# quantization) that streams every activation through memory: 100 images' activations stay in the
# caches where 1000 do not. Outputs per image do not depend on it (checked bit for bit).
EVAL_BATCH = 100


def count_correct(logits: torch.Tensor, labels: torch.Tensor, top: int) -> int:
    """How many of `labels` are the argmax of `logits`, for a classifier whose labels go up to `top`."""
    if logits.dim() != 2 or top >= logits.shape[1]:
        raise EvoproxyError(
            f"the model gives outputs of shape {tuple(logits.shape)}, which do not fit labels up "
            f"to {top}: a classifier with (batch, classes) logits is needed"
        )
    return int((logits.argmax(1) == labels).sum())


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of `logits` (..., classes) against `targets` (...): a classifier's loss for
    (batch, classes) and (batch,), a language model's next-token loss for (batch, T, vocab) and (batch, T)."""
    return nn.functional.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction=reduction)


def _token_loss_sum(logits: torch.Tensor, targets: torch.Tensor, top: int) -> float:
    if logits.shape[:-1] != targets.shape or top >= logits.shape[-1]:
        raise EvoproxyError(
            f"the model gives outputs of shape {tuple(logits.shape)}, which do not fit token ids up to {top}: "
            "a language model with (batch, T, vocabulary) logits is needed"
        )
    return float(next_token_loss(logits.double(), targets, reduction="sum"))


@dataclass(frozen=True)
class Metric:
    """A quality measure: its `name` (the key of bench entries), how it reads, its direction, the
    range of its values, and how it sums over batches (`batch_sum(logits, targets, top)`, `top` the
    largest target of the whole set) and finishes (`finish(total, targets)`)."""

    name: str
    title: str
    unit: str
    higher_is_better: bool
    low: float
    high: float
    range_text: str
    batch_sum: Callable[[torch.Tensor, torch.Tensor, int], float]
    finish: Callable[[float, int], float]

    def quality(self, value: float) -> float:
        """`value` oriented so that higher is better (what rankings correlate with)."""
        return value if self.higher_is_better else -value

    def format(self, value: float) -> str:
        """`value` as printed: '91.23 %' or '4.567'."""
        return f"{value:.2f} %" if self.unit == "%" else f"{value:.3f}"

    def holds(self, value: float) -> bool:
        """Whether `value` is one this metric can take (False for NaN)."""
        return self.low <= value <= self.high

    @torch.no_grad()
    def measure(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int = EVAL_BATCH,
        log: Callable[[str], None] | None = None,
    ):
        """The metric of `model` (put in eval mode) on `inputs` and their `targets`, batch by batch;
        `log` gets a line now and then on a long evaluation (pace.paced)."""
        model.eval()
        top = int(targets.max())
        total = sum(
            self.batch_sum(model(x), y, top)
            for x, y in zip(paced_batches(inputs, batch_size, "evaluation", log), targets.split(batch_size))
        )
        return self.finish(total, targets.numel())


def paced_batches(x: torch.Tensor, size: int, what: str, log: Callable[[str], None] | None):
    """`x` in batches of `size` (along its first dimension) for the pass named `what`, with `log`
    getting a line now and then while they last (pace.paced)."""
    parts = x.split(size)
    return paced(parts, len(parts), f"{what}: batch", log)


METRICS = {
    "accuracy": Metric(
        "accuracy",
        "top-1 accuracy",
        "%",
        True,
        0.0,
        100.0,
        "a percentage from 0 to 100",
        count_correct,
        lambda s, n: 100.0 * s / n,
    ),
    "perplexity": Metric(
        "perplexity",
        "perplexity",
        "",
        False,
        1.0,
        math.inf,
        "a number of at least 1",
        _token_loss_sum,
        lambda s, n: math.exp(s / n) if s / n < 709 else math.inf,  # beyond, exp overflows a float
    ),
}


def metric_of(targets: torch.Tensor) -> Metric:
    """The metric for data with these targets: perplexity for next-token targets (N, T), else accuracy."""
    return METRICS["perplexity" if targets.dim() == 2 else "accuracy"]


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = EVAL_BATCH) -> float:
    """Top-1 accuracy in percent of `model` (put in eval mode) on normalized `images`."""
    return METRICS["accuracy"].measure(model, images, labels, batch_size)


def perplexity(model: nn.Module, tokens: torch.Tensor, targets: torch.Tensor, batch_size: int = 16) -> float:
    """exp of the mean next-token cross-entropy of `model` (put in eval mode) over every target of
    `tokens` and `targets` (both (N, T) int64)."""
    return METRICS["perplexity"].measure(model, tokens, targets, batch_size)
