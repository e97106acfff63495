"""SEAM (Tang et al., ACM MM 2023): EdMIPS searched on a small proxy subset with a large-margin loss.

The policy is searched on a few training images (4 % by default: `ALLOCATOR.train_fraction`) and applied to
the model trained on all of them. In the search, the model's last layer gives way to SEAM's
Gaussian-mixture classifier on its input features g (the penultimate features, the paper's "deep
feature"): class k has a learned mean μ_k and diagonal covariance Σ_k, equal priors p(k) = 1/K
(the paper's choices), and with d_k(g) = ½ (g − μ_k)ᵀ Σ_k⁻¹ (g − μ_k) the search minimises
equation 11 of the paper,

    L = L_cls + λ · L_inc + γ · L_comp,

    L_cls = −log softmax_k(log h_k(g; m·[k = y]))[y]             (eq. 6, h of eq. 9),
    log h_k(g; m) = −½ log|Σ_k| − (1 + m) · d_k(g)               (eq. 9: the margin multiplies the
                                                                  non-negative term, §4.1.3),
    L_inc = d_y(g) + ½ log|Σ_y|                                   (eq. 10: −log p(y) N(g; μ_y, Σ_y)),

L_cls and L_inc averaged over the batch (the paper sums; a mean keeps λ independent of the batch
size) and without the constants log K and (D/2) log 2π, which move no parameter. L_comp is EdMIPS's
expected size term (γ, default 0: the projection onto the budget meets it). λ = 0.1 and m = 0.3
are the paper's values (m = 0.3 with CIFAR-10 as the proxy data, 0.01 with StanfordCars' 196 classes).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from ..allocation import AllocationProblem
from ..errors import EvoproxyError
from ..model import paced_batches, quantizable_modules
from .edmips import EdmipsSettings, search_edmips
from .interface import NON_NEGATIVE, Allocator, SearchData, SearchResult, setting


@dataclass(frozen=True, kw_only=True)
class SeamSettings(EdmipsSettings):
    """How SEAM searches: EdMIPS's settings and SEAM's regularisation, `lam` (λ) weighing the
    intra-class compactness L_inc and `margin` (m ≥ 0), the multiplicative class margin of L_cls (eq. 6, 9)."""

    lam: float = setting(0.1, "weight λ of the intra-class compactness")
    margin: float = setting(0.3, "class margin m")

    CONSTRAINTS = {**EdmipsSettings.CONSTRAINTS, "lam": NON_NEGATIVE, "margin": NON_NEGATIVE}

    def knobs(self, data: SearchData) -> str:
        return f"{super().knobs(data)}, λ {self.lam:g}, margin {self.margin:g}"


def large_margin_loss(
    g: torch.Tensor,
    labels: torch.Tensor,
    means: torch.Tensor,
    log_var: torch.Tensor,
    margin: float = 0.3,
    lam: float = 0.1,
) -> torch.Tensor:
    """SEAM's L_cls + λ L_inc (module docstring; eq. 6, 9, 10) of features `g` (N, D) with class
    `labels` (N,), under class means `means` (K, D) and diagonal log-variances `log_var` (K, D);
    a scalar, 0 when every feature sits on its class mean with unit variance and far beyond the
    margin from every other class."""
    d = 0.5 * ((g[:, None, :] - means) ** 2 * torch.exp(-log_var)).sum(2)  # (N, K) Mahalanobis halves
    half_log_det = 0.5 * log_var.sum(1)  # (K,) ½ log|Σ_k|
    own = F.one_hot(labels, means.shape[0]).to(g.dtype)
    logits = -half_log_det - d * (1 + margin * own)  # log h_k(g; m·[k = y])
    cls = F.cross_entropy(logits, labels)
    inc = (d * own).sum(1) + half_log_det[labels]
    return cls + lam * inc.mean()


class LargeMarginObjective(nn.Module):
    """SEAM's task loss for `search_edmips`: (images, labels) ↦ `large_margin_loss` of the
    supernet's input to `head` (its last layer, whose output is not used), with learned class
    means and diagonal log-variances started at the features' class means and pooled within-class
    variance on `images` (read in batches of `settings.batch_size`, `log` getting that pass's
    progress lines)."""

    def __init__(
        self,
        supernet: nn.Module,
        head: nn.Module,
        images: torch.Tensor,
        labels: torch.Tensor,
        settings: SeamSettings,
        log: Callable[[str], None] | None = None,
    ):
        super().__init__()
        self.supernet, self.settings = supernet, settings
        self._features: torch.Tensor | None = None
        head.register_forward_pre_hook(self._keep_features)
        with torch.no_grad():
            supernet.eval()  # statistics without moving BatchNorm's running estimates
            device, batch_size = next(supernet.parameters()).device, settings.batch_size
            parts = [
                (supernet(x.to(device)).shape[1], self._features)
                for x in paced_batches(images, batch_size, "class statistics", log)
            ]
            supernet.train()
        classes, g = parts[0][0], torch.cat([f for _, f in parts])
        labels = labels.to(g.device)
        if int(labels.max()) >= classes:
            raise EvoproxyError(f"SEAM: label {int(labels.max())} is not among the model's {classes} outputs")
        # A class absent from the subset starts at all the features' mean. Every class starts at the
        # pooled within-class variance: a few images per class (4 % of a small set) give no variance of their own.
        means = g.mean(0).repeat(classes, 1)
        for k in labels.unique():
            means[k] = g[labels == k].mean(0)
        var = ((g - means[labels]) ** 2).mean(0).clamp_min(1e-4)  # floor: features constant within their class
        self.means = nn.Parameter(means)
        self.log_var = nn.Parameter(var.log().repeat(classes, 1))

    def _keep_features(self, module: nn.Module, inputs: tuple) -> None:
        self._features = inputs[0].flatten(1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.supernet(x)
        return large_margin_loss(self._features, y, self.means, self.log_var, self.settings.margin, self.settings.lam)


def search_seam(
    model: nn.Module,
    problem: AllocationProblem,
    data: SearchData,
    settings: SeamSettings = SeamSettings(),
    log: Callable[[str], None] = print,
) -> SearchResult:
    """`search_edmips` on `data.train` (the proxy subset) with SEAM's loss in place of the
    cross-entropy: the policy (method "seam") for `model` under `problem`; `details` records the
    number of images searched on ("search_images"). The last layer must be fixed: the
    Gaussian-mixture classifier takes its place in the search, so it has no bits to choose."""
    last = len(problem.layers) - 1
    if last not in problem.fixed:
        raise EvoproxyError(
            f"SEAM classifies the input features of the last layer ({problem.layers[last].name}) "
            "with its own Gaussian-mixture head, so that layer takes no part in the search: keep it "
            "among the fixed layers"
        )

    def objective(supernet: nn.Module) -> nn.Module:
        head = dict(quantizable_modules(supernet))[problem.layers[last].name]
        return LargeMarginObjective(supernet, head, *data.train, settings, log)

    result = search_edmips(model, problem, data, settings, log, method="seam", objective=objective)
    return replace(result, details={"search_images": len(data.train[0]), **result.details})


ALLOCATOR = Allocator(
    "SEAM",
    SeamSettings,
    search_seam,
    "EdMIPS on a small subset of the training images with SEAM's large-margin Gaussian-mixture loss on "
    "the last layer's input features.",
    train_fraction=0.04,
)
