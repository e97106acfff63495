"""Small statistics for fast proxy tests: a tiny conv net's real statistics, and statistics
whose every tensor has one element (on them a proxy is a function of numbers, so its sympy
expression can be checked numerically)."""

from __future__ import annotations

import torch
from torch import nn

from evoproxy.model import LayerInfo
from evoproxy.stats import LayerStats, ModelStats, StatsSettings, compute_stats


def tiny_conv_net(classes: int = 3) -> nn.Module:
    """conv(1→3) → ReLU → conv(3→4) → ReLU → global pool → linear(4→classes), for any image size."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3),
        nn.ReLU(),
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, classes),
    )


def tiny_fmnist_net() -> nn.Module:
    """`tiny_conv_net` for the 10 Fashion-MNIST classes (a `--model module:function` target)."""
    torch.manual_seed(0)
    return tiny_conv_net(10)


def tiny_conv_stats(seed: int = 0) -> ModelStats:
    """Statistics of `tiny_conv_net` on 8 random 6×6 images (3 layers)."""
    torch.manual_seed(seed)
    model = tiny_conv_net()
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    return compute_stats(model, x, y, "tiny", StatsSettings(hutchinson_samples=4, power_iters=3))


def weight_norms(stats) -> list[float]:
    """A user proxy (`module:function`): each layer's weight norm."""
    return [float(layer.W.norm()) for layer in stats.layers]


def scalar_stats(n_layers: int = 4, seed: int = 0) -> ModelStats:
    """Statistics of `n_layers` layers whose tensors W, G, A, H, V each hold one random number
    (V positive, as SynFlow gradients are)."""
    gen = torch.Generator().manual_seed(seed)

    def one(scale: float = 1.0) -> torch.Tensor:
        return torch.randn(1, 1, 1, 1, generator=gen, dtype=torch.float64) * scale

    layers = [
        LayerStats(
            LayerInfo(i, f"layer{i}", "conv", (1, 1, 1, 1), 1, 1),
            one(),
            one(0.1),
            one(),
            one(0.01),
            one().abs(),
            1.0 + i,
            2.0 + i,
        )
        for i in range(n_layers)
    ]
    return ModelStats("scalars", "w", "b", StatsSettings(), layers, 0.5, 1)
