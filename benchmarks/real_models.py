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
