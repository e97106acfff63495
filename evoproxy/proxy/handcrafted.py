"""Handcrafted training-free proxies (EMQ, Tables 1-2) in the common Proxy interface, and the
paper's searched proxy (equation 5) as a genome of the branched space.

Each function takes a ModelStats and returns one float64 sensitivity per layer; its docstring
says which formula it follows where the EMQ paper's Table 2 leaves room. The per-layer
statistics are the ones described in evoproxy.stats (W, G = ∂L/∂W, A, H diagonal and trace, top
Hessian eigenvalue, V = SynFlow gradient).
"""

from __future__ import annotations

import torch

from ..errors import EvoproxyError
from ..quant import weight_quantization_error
from .base import FunctionProxy, as_bits
from .genome import Genome
from .inputs import prepare_inputs
from .tools import TOOLS, position, tool_proxy


def _per_layer(stats, fn) -> torch.Tensor:
    return torch.stack([fn(layer) for layer in prepare_inputs(stats)])


def bparams(stats) -> torch.Tensor:
    """BParams: the layer's parameter count (weights and bias), so that Σ b_l·s_l is the model
    size in bits."""
    return torch.tensor([float(l.info.params) for l in stats.layers], dtype=torch.float64)


def hawq(stats) -> torch.Tensor:
    """HAWQ (Dong et al., 2019), as EMQ's Table 2 writes it: the top eigenvalue of the layer's
    Hessian block (the eigenvalue largest in magnitude, with its sign; found by Lanczos, where HAWQ iterates
    powers: the same value in fewer Hessian products)."""
    return torch.tensor([l.hessian_eig for l in stats.layers], dtype=torch.float64)


def hawq_v2_sensitivities(stats) -> torch.Tensor:
    """HAWQ-V2 (Dong et al., 2020): the average Hessian trace Tr(H_l)/n_l, n_l the number of
    weights (Hutchinson estimate)."""
    return torch.tensor([l.hessian_trace / l.numel for l in stats.layers], dtype=torch.float64)


def quantization_error(weight: torch.Tensor, bits: int) -> float:
    """‖Q_b(W) − W‖² with the weight quantizer that the benchmarks use (quant.fakequant)."""
    return float(weight_quantization_error(weight, bits).sum())


def _perturbation(layer, bits: int) -> float:
    """‖Q_b(W) − W‖² of a layer: from its statistics where they hold that bit-width."""
    q = getattr(layer, "Q", {})
    return float(q[bits].sum()) if bits in q else quantization_error(layer.W, bits)


class HawqV2:
    """HAWQ-V2 with its bit-dependent criterion: score(b) = −Σ_l Tr(H_l)/n_l · ‖Q_{b_l}(W_l) − W_l‖²,
    the negated Hessian-weighted quantization perturbation (lower perturbation, higher score).
    `sensitivities` gives the average traces."""

    name = "hawq-v2"
    needs_hessian = True
    needs_perturbations = False

    def sensitivities(self, stats) -> torch.Tensor:
        return hawq_v2_sensitivities(stats)

    def score(self, stats, bits) -> torch.Tensor:
        traces = self.sensitivities(stats)
        b = as_bits(bits, len(traces))
        if not bool(((b >= 2) & (b == b.round())).all()):
            raise EvoproxyError("HAWQ-V2 scores need integer bit-widths of at least 2")
        rows = b.reshape(-1, len(traces)).long()
        errors = {
            (l, int(k)): _perturbation(stats.layers[l], int(k)) for l in range(len(traces)) for k in rows[:, l].unique()
        }
        perturbation = torch.tensor(
            [[traces[l] * errors[l, int(k)] for l, k in enumerate(row)] for row in rows], dtype=torch.float64
        ).sum(1)
        return -perturbation.reshape(b.shape[:-1])

    def __repr__(self) -> str:
        return "HawqV2()"


def _centered_gram(features: torch.Tensor) -> torch.Tensor:
    rows = features.reshape(features.shape[0], -1)
    gram = rows @ rows.T
    means = gram.mean(0)
    means = means - means.mean() / 2
    return gram - means[:, None] - means[None, :]


def ompq(stats, beta: float = 10.0) -> torch.Tensor:
    """OMPQ (Ma et al., 2023), following its released code: the orthogonality matrix
    ORM_ij = ⟨K_i, K_j⟩ / (‖K_i‖‖K_j‖) of the centred linear Gram matrices K of the layers'
    features (batch × features; here the stored, spatially subsampled activations), the layer's
    importance θ_i = exp(−β Σ_{j≠i} ORM_ij), and, as in OMPQ's linear program, the weight of layer
    i's bit-width is the mean of θ_j over j ≥ i. β = 10 as in the authors' ResNet-18 command."""
    grams = [_centered_gram(x["A"]) for x in prepare_inputs(stats)]
    norms = torch.stack([g.norm() for g in grams])
    inner = torch.stack([torch.stack([(gi * gj).sum() for gj in grams]) for gi in grams])
    denom = norms[:, None] * norms[None, :]
    orm = torch.where(denom > 0, inner / denom, torch.zeros_like(inner))
    theta = torch.exp(-beta * (orm.sum(1) - orm.diagonal()))
    tail_sums = theta.flip(0).cumsum(0).flip(0)
    return tail_sums / torch.arange(len(theta), 0, -1, dtype=torch.float64)


def qe(stats) -> torch.Tensor:
    """QE (Sun et al., 2022): the layer's term log(C_l·σ²_{W_l}) of the entropy estimate
    Σ_l log(C_l·σ²_l) + log σ²_act, with C_l = kernel size × input channels (the weights per
    output) and σ²_{W_l} the weights' variance. The activation term is shared by all layers, so
    it does not change a per-layer sensitivity and is left out (EMQ's Table 2 formula is
    garbled here; this follows QE's own derivation)."""

    def term(x):
        w = x["W"]
        return torch.log(w[0].numel() * w.var(correction=0))

    return _per_layer(stats, term)


def snip(stats) -> torch.Tensor:
    """SNIP (Lee et al., 2019): Σ |∂L/∂θ ⊙ θ| over the layer's weights."""
    return _per_layer(stats, lambda x: x["GxW"].abs().sum())


def synflow(stats) -> torch.Tensor:
    """SynFlow (Tanaka et al., 2020): Σ ∂R/∂θ ⊙ θ = Σ ∂R/∂|θ|·|θ| over the layer's weights, at the
    true scale of R (inf when it exceeds float64)."""
    return _per_layer(stats, lambda x: (x["V"] * x["W"].abs()).sum())


def fisher(stats) -> torch.Tensor:
    """Fisher (Theis et al., 2018; Turner et al., 2020): ½ Σ_c (Σ z_c·∂L/∂z_c)² over the layer's
    output channels c. The statistics hold no activation gradient, so the inner sum is taken
    from the weights: for a layer z = W∗x, Σ z_c·∂L/∂z_c = Σ_k W_ck·∂L/∂W_ck (Euler's identity).
    Two approximations: the batch mean is taken before squaring, not per sample, and a bias is
    left out."""
    return _per_layer(stats, lambda x: 0.5 * (x["GxW"].reshape(x["GxW"].shape[0], -1).sum(1) ** 2).sum())


def plain(stats) -> torch.Tensor:
    """Plain (Mozer & Smolensky, 1989; Abdelfattah et al., 2021): Σ ∂L/∂θ ⊙ θ, signed."""
    return _per_layer(stats, lambda x: x["GxW"].sum())


def mean_bits(stats) -> torch.Tensor:
    """The trivial baseline: every layer weighs 1, so Σ b_l·s_l is the total (mean) bit-width."""
    return torch.ones(len(stats.layers), dtype=torch.float64)


# EMQ's equation 5, log|∂R/∂θ| · sqrt(Σ|θ| / (numel(θ) + ε)), in the branched space: the
# synflow-gradient branch is (abslog, no_op), the weight branch (l1_mean, sqrt), joined by mul.
# The paper leaves the final reduction implicit; the sum over the layer's elements follows
# SynFlow and SNIP, whose element-wise scores it extends.
EMQ_EQUATION_5 = ("sum", ("mul", ("no_op", ("abslog", "V")), ("sqrt", ("l1_mean", "W"))))


def emq_paper() -> Genome:
    """The searched EMQ proxy of the paper (equation 5) as a genome of the branched space."""
    return genome_form("emq-paper")


# Fisher in the branched space: both branches take the per-output-channel sum of ∂L/∂θ⊙θ,
# joined by mul and summed, i.e. 2× the fisher() sensitivities (the same ranking and allocation).
FISHER_BRANCHED = ("sum", ("mul", ("no_op", ("channel_sum", "GxW")), ("no_op", ("channel_sum", "GxW"))))

# HAWQ-V2 in the bitaware space: −mean(diag H) (its average trace, Tr(H)/n) times the quantization
# error Q at the layer's bit-width, summed: −Tr(H)/n · ‖Q_b(W) − W‖², the handcrafted score per layer.
HAWQ_V2_BITAWARE = ("sum", ("mul", ("neg", ("mean", "H")), ("no_op", ("no_op", "Q"))))

# Handcrafted proxies that are also genomes (of the space named), to start a search from.
GENOME_FORMS = {
    "fisher": (FISHER_BRANCHED, "branched"),
    "emq-paper": (EMQ_EQUATION_5, "branched"),
    "hawq-v2": (HAWQ_V2_BITAWARE, "bitaware"),
}


def genome_form(name: str) -> Genome:
    """The handcrafted proxy `name` as a genome of its space (GENOME_FORMS)."""
    expression, space = GENOME_FORMS[name]
    return Genome.from_expression(expression, space=space, name=name)


def _cheap(fn, name: str) -> FunctionProxy:
    """A proxy that reads neither the Hessian nor the output perturbations (the costly statistics)."""
    return FunctionProxy(fn, name, needs_hessian=False, needs_perturbations=False)


HANDCRAFTED = {
    "bparams": lambda: _cheap(bparams, "bparams"),
    "hawq": lambda: FunctionProxy(hawq, "hawq", needs_perturbations=False),
    "hawq-v2": HawqV2,
    "ompq": lambda: _cheap(ompq, "ompq"),
    "qe": lambda: _cheap(qe, "qe"),
    "snip": lambda: _cheap(snip, "snip"),
    "synflow": lambda: _cheap(synflow, "synflow"),
    "fisher": lambda: _cheap(fisher, "fisher"),
    "plain": lambda: _cheap(plain, "plain"),
    "mean-bits": lambda: _cheap(mean_bits, "mean-bits"),
    "emq-paper": emq_paper,
    **{name: lambda name=name: tool_proxy(name) for name in TOOLS},
    "position": lambda: _cheap(position, "position"),
}
