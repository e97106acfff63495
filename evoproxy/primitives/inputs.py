"""The inputs of a proxy: per-layer statistics (evoproxy.stats.LayerStats), element-wise products
of them, and scalars that describe the layer's place in the network (STRUCTURE_FIELDS). Each
input is read as a float64 tensor of the layer; a per-bit input (Q, and the measured output
perturbations MSE, KL, TAYLOR, one value per calibration sample) as one such tensor per
bit-width, and a proxy that reads it scores a configuration by the sum of its per-layer values
at each layer's bit-width.

G×A, which the paper also lists, is not offered: the gradient is weight-shaped and the
activation (batch, channels, h, w), so no element-wise product exists, and the statistics do
not hold ∂L/∂A."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from .base import SCALAR, TENSOR


@dataclass(frozen=True)
class Input:
    """One input: the LayerStats fields whose element-wise product it is, and how to print it."""

    name: str
    factors: tuple[str, ...]
    paper: str  # the paper's notation, for formula strings
    paper_latex: str
    description: str
    per_bit: bool = False  # one tensor per weight bit-width: the proxy's value depends on the layer's bits
    kind: str = TENSOR  # SCALAR: one number per layer (its structure), which reductions do not take


INPUTS: dict[str, Input] = {
    i.name: i
    for i in (
        Input("W", ("W",), "θ", r"\theta", "the layer's weight"),
        Input(
            "G",
            ("G",),
            "∂L/∂θ",
            r"\frac{\partial \mathcal{L}}{\partial \theta}",
            "gradient of the mean cross-entropy on the calibration batch",
        ),
        Input("A", ("A",), "z", "z", "the layer's output activation on the batch (spatially subsampled)"),
        Input("H", ("H",), "diag(H)", r"\operatorname{diag}(H)", "Hutchinson estimate of the Hessian diagonal"),
        Input(
            "V",
            ("V",),
            "∂R/∂θ",
            r"\frac{\partial \mathcal{R}}{\partial \theta}",
            "SynFlow gradient ∂R/∂|θ| at its true scale (V·e^synflow_log_scale; inf if beyond float64)",
        ),
        Input(
            "GxW",
            ("G", "W"),
            "∂L/∂θ⊙θ",
            r"\frac{\partial \mathcal{L}}{\partial \theta} \odot \theta",
            "gradient times weight, element-wise (the Plain and SNIP product)",
        ),
        Input(
            "Q",
            ("Q",),
            "(Q_b(θ)−θ)²",
            r"\left(Q_b(\theta)-\theta\right)^2",
            "squared weight quantization error at the layer's bit-width b (the perturbation of HAWQ-V2)",
            per_bit=True,
        ),
        Input(
            "MSE",
            ("MSE",),
            "mse_b(y)",
            r"\operatorname{mse}_b(y)",
            "per calibration sample, the normalised mean squared change of the model's outputs when the layer "
            "alone is quantized to b bits (Sony MCT's distance)",
            per_bit=True,
        ),
        Input(
            "KL",
            ("KL",),
            "KL_b(p)",
            r"\operatorname{KL}_b(p)",
            "per calibration sample, the KL divergence of the model's softmax outputs when the layer alone is "
            "quantized to b bits (ZeroQ's sensitivity)",
            per_bit=True,
        ),
        Input(
            "TAYLOR",
            ("TAYLOR",),
            "(∂L/∂y·Δ_b y)²",
            r"\left(\frac{\partial \mathcal{L}}{\partial y} \Delta_b y\right)^2",
            "per calibration sample, Σ (∂L/∂y · (y_q − y))² over the layer's output y, its weights at b bits "
            "(NVIDIA ModelOpt's score)",
            per_bit=True,
        ),
        Input(
            "NORM",
            ("NORM",),
            "bn",
            r"\mathrm{bn}",
            "1 where a BatchNorm takes the layer's output (re-estimated after quantization, it repairs much of "
            "the layer's shift), else 0",
            kind=SCALAR,
        ),
        Input(
            "DEPTH", ("DEPTH",), "depth", r"\mathrm{depth}", "the layer's index / (L − 1): 0 first, 1 last", kind=SCALAR
        ),
        Input(
            "FANIN",
            ("FANIN",),
            "fan_in",
            r"\mathrm{fan\_in}",
            "weight elements per output (in × kernel / groups)",
            kind=SCALAR,
        ),
        Input(
            "GROUPED",
            ("GROUPED",),
            "grouped",
            r"\mathrm{grouped}",
            "1 for a depthwise or grouped convolution, else 0",
            kind=SCALAR,
        ),
        Input(
            "HEAD",
            ("HEAD",),
            "head",
            r"\mathrm{head}",
            "1 for the last layer (the classifier or output head), else 0",
            kind=SCALAR,
        ),
    )
}
BIT_INPUTS = frozenset(name for name, i in INPUTS.items() if i.per_bit)

# name → factors, the only part of INPUTS that `load_inputs` (and so exported code) needs.
FACTORS: dict[str, tuple[str, ...]] = {name: i.factors for name, i in INPUTS.items()}


@runtime_checkable
class LazyPerBitInput(Protocol):
    """A per-bit input (a mapping bit-width → float64 tensor) that computes each tensor when it is
    read, as the statistics' Q does (evoproxy.stats.QuantizationErrors derives from this class):
    `load_inputs` keeps it as it is, so that only the bit-widths a proxy reads are computed. Known by
    its member rather than its class, so that exported proxy code, which holds a copy of this class
    and of load_inputs, knows the statistics' Q too."""

    float64_when_read = True


def load_inputs(stats, names) -> list[dict[str, torch.Tensor]]:
    """For each layer, a dict input name → float64 tensor, for the inputs `names`.

    `stats` is an evoproxy ModelStats, or a list of per-layer mappings or objects holding the
    tensors W, G, A, H, V (and Q, a mapping bit-width → tensor, read as such a mapping; a
    LazyPerBitInput, such as the statistics' Q, is kept as it is). The stored V is the
    SynFlow gradient divided by e^stats.synflow_log_scale (see evoproxy.stats); it is scaled back
    here (a plain list has no scale: its V is taken as it is)."""
    layers = getattr(stats, "layers", stats)
    scale = torch.exp(torch.tensor(float(getattr(stats, "synflow_log_scale", 0.0)), dtype=torch.float64))
    out = []
    for layer in layers:

        def field(f):
            raw = layer[f] if isinstance(layer, Mapping) else getattr(layer, f)
            if isinstance(raw, Mapping):  # a per-bit input
                if isinstance(raw, LazyPerBitInput):
                    return raw
                return {b: t.detach().to(torch.float64) for b, t in raw.items()}
            t = raw.detach().to(torch.float64)
            return t * scale if f == "V" else t

        values = {}
        for name in names:
            first, *rest = FACTORS[name]
            value = field(first)
            for f in rest:
                value = value * field(f)
            values[name] = value
        out.append(values)
    return out
