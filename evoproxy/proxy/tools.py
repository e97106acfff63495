"""The layer scores that quantization tools use, as proxies: each reads the measured output
perturbations of the statistics (evoproxy.stats.perturbation: one value per layer, bit-width and
calibration sample) and scores a configuration Σ_l s_l(b_l), as the tools add per-layer
sensitivities when they allocate. And llama.cpp's positional rule, which measures nothing.
"""

from __future__ import annotations

import torch

from ..errors import EvoproxyError
from ..stats.perturbation import sqnr_db
from .base import as_bits
from .program import bit_columns, table_score


class MeasuredProxy:
    """A tool's score: s_l(b) = `value`(the batch mean of the layer's perturbation `field` at b).
    `sensitivities` gives −s_l at the smallest bit-width held (higher: more sensitive)."""

    needs_hessian = False
    needs_perturbations = True

    def __init__(self, name: str, field: str, value, doc: str):
        self.name, self.field, self.value, self.__doc__ = name, field, value, doc

    def table(self, stats) -> tuple[torch.Tensor, tuple[int, ...]]:
        """Per-layer values (L, bits held) and the bit-widths held."""
        measured = [getattr(layer, self.field, {}) for layer in stats.layers]
        held = tuple(sorted(set.intersection(*(set(m) for m in measured))))
        if not held:
            raise EvoproxyError(
                f"proxy {self.name} needs the measured output perturbations, and these statistics were made "
                "without them (perturbations=False)"
            )
        means = torch.tensor([[float(m[b].double().mean()) for b in held] for m in measured], dtype=torch.float64)
        return self.value(means), held

    def sensitivities(self, stats) -> torch.Tensor:
        values, _ = self.table(stats)
        return -values[:, 0]

    def score(self, stats, bits) -> torch.Tensor:
        values, held = self.table(stats)
        b = as_bits(bits, len(values))
        if not bool(torch.isin(b, torch.tensor(held, dtype=b.dtype)).all()):
            raise EvoproxyError(f"proxy {self.name} scores bit-widths {', '.join(map(str, held))} only")
        return table_score(values, bit_columns(b, held))

    def __repr__(self) -> str:
        return f"MeasuredProxy({self.name!r})"


TOOLS = {
    "output-mse": (
        "MSE",
        torch.neg,
        "Sony MCT: −Σ_l the normalised mean squared difference between the float model's outputs and "
        "those with layer l alone quantized to b_l (at the output only; MCT also uses interior points).",
    ),
    "sqnr": (
        "MSE",
        sqnr_db,
        "Qualcomm AIMET AMP: Σ_l the signal-to-quantization-noise ratio in dB of the model's outputs with "
        "layer l alone quantized to b_l, 10·log10(E[y²] / E[(y_q − y)²]) over the calibration batch.",
    ),
    "kl": (
        "KL",
        torch.neg,
        "ZeroQ: −Σ_l the KL divergence of the quantized from the float model's softmax outputs, layer l "
        "alone quantized to b_l (on the calibration batch; ZeroQ's is on distilled data).",
    ),
    "taylor": (
        "TAYLOR",
        torch.neg,
        "NVIDIA ModelOpt auto_quantize: −Σ_l Σ (∂L/∂Y_l · (Y_l^q − Y_l))², the Taylor estimate of the loss "
        "change from layer l's own output with its weights quantized to b_l.",
    ),
}


def tool_proxy(name: str) -> MeasuredProxy:
    field, value, doc = TOOLS[name]
    return MeasuredProxy(name, field, value, doc)


def position(stats) -> torch.Tensor:
    """llama.cpp's positional rule (`use_more_bits`), the only sensitivity it uses: layer i of n
    (in the layer registry's order; llama.cpp counts transformer blocks) weighs 2 when
    i < n/8, i ≥ 7n/8 or (i − n/8) mod 3 = 2 (integer divisions), else 1: first and last layers high."""
    n = len(stats.layers)
    eighth = n // 8
    more = [i < eighth or i >= 7 * n // 8 or (i - eighth) % 3 == 2 for i in range(n)]
    return torch.tensor([2.0 if m else 1.0 for m in more], dtype=torch.float64)
