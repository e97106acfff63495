"""Real-size models for the scaling benchmarks, in plain torch (torchvision's model classes would do,
but the product does not depend on torchvision): ResNet-18 as He et al. 2016 and torchvision build it.

    python benchmarks/stats_speed.py --resnet18 64
"""

from __future__ import annotations

import torch
from torch import nn

from evoproxy.model.nets import BasicBlock  # the shipped ResNet-20's: two 3×3 conv-BN, 1×1 conv-BN shortcut


def resnet18(num_classes: int = 1000, seed: int = 0) -> nn.Module:
    """ResNet-18 (11.7 M parameters at 1000 classes), randomly initialised with `seed`."""
    torch.manual_seed(seed)
    layers, cin = [], 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.MaxPool2d(3, 2, 1),
        *layers,
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(512, num_classes),
    )


class _Block(nn.Module):
    """A pre-norm transformer block with its projections as nn.Linear layers (quantizable, unlike
    nn.MultiheadAttention's out_proj, which its forward calls as a function)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attn = nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """ViT-Ti/16 (Touvron et al. 2021: 12 blocks of width 192, 3 heads; 5.7 M parameters at 1000
    classes), learned position embeddings for `pixels`² inputs, a class token."""

    def __init__(self, pixels: int = 224, num_classes: int = 1000, dim: int = 192, depth: int = 12, heads: int = 3):
        super().__init__()
        self.patches = nn.Conv2d(3, dim, 16, 16)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, (pixels // 16) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[_Block(dim, heads) for _ in range(depth)])
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patches(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def vit_tiny(seed: int = 0) -> nn.Module:
    """ViT-Ti/16 for 224×224 inputs, randomly initialised with `seed`."""
    torch.manual_seed(seed)
    return ViT()


def vit_base_64(seed: int = 0) -> nn.Module:
    """ViT-B/16 (12 blocks of width 768, 12 heads; 86 M parameters at 1000 classes) for 64×64 inputs:
    the size of model whose memory the statistics must bound, at an input small enough for 2 cores."""
    torch.manual_seed(seed)
    return ViT(pixels=64, dim=768, heads=12)


def _random_images(pixels: int, train: int = 512, test: int = 256) -> dict:
    """Seeded random uint8 images (3 channels) and labels of 1000 classes, as a `--data module:function`
    source: a train part (the calibration pool) and a test part."""
    g = torch.Generator().manual_seed(0)
    part = lambda n: (  # noqa: E731
        torch.randint(0, 256, (n, 3, pixels, pixels), generator=g, dtype=torch.uint8),
        torch.randint(0, 1000, (n,), generator=g),
    )
    return {"train": part(train), "test": part(test)}


def images_64() -> dict:
    return _random_images(64)


def images_224() -> dict:
    return _random_images(224)
