"""Models: the shipped ResNet-20 for Fashion-MNIST, a registry of named models, and loading a
user's model given as `package.module:function` plus a state_dict file."""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import EvoproxyError
from .hashing import tensors_hash


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity shortcut, or a 1×1 conv-BN shortcut where the
    shape changes (option B of the ResNet paper)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    """CIFAR-style ResNet-20 (three stages of three basic blocks, 16/32/64 channels) for
    1×28×28 inputs: 19 convolutions, 2 shortcut 1×1 convolutions and the classifier."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        blocks, cin = [], 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(3):
                blocks.append(BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.layers = nn.Sequential(*blocks)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1)
        return self.fc(out)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1×1 expansion (skipped when expand == 1), 3×3 depthwise, 1×1 linear
    projection, each followed by BatchNorm; ReLU6 after the first two; identity shortcut when
    the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
                   nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2Small(nn.Module):
    """A MobileNetV2-style network for 1×28×28 inputs: stem, 7 inverted-residual blocks
    (16/24/32/64 channels, expansion 4), a 1×1 conv to 128 channels and the classifier;
    23 quantizable layers, 7 of them depthwise."""

    SETTINGS = ((1, 16, 1, 1), (4, 24, 2, 2), (4, 32, 2, 2), (4, 64, 2, 2))  # expand, channels, blocks, stride

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
        cin = 16
        for expand, cout, blocks, stride in self.SETTINGS:
            for i in range(blocks):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += [nn.Conv2d(cin, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(out, 1))


@dataclass(frozen=True)
class ModelSpec:
    """A named model: how to build it, which shipped checkpoint to load, what input it takes."""
    name: str
    build: Callable[[], nn.Module]
    checkpoint: str
    input_shape: tuple[int, ...]
    description: str


MODELS: dict[str, ModelSpec] = {
    "resnet20-fmnist": ModelSpec("resnet20-fmnist", ResNet20, "resnet20_fmnist.pt", (1, 28, 28),
                                 "ResNet-20 trained on Fashion-MNIST (`evoproxy train`)"),
    "mobilenetv2-fmnist": ModelSpec("mobilenetv2-fmnist", MobileNetV2Small, "mobilenetv2_fmnist.pt", (1, 28, 28),
                                    "MobileNetV2-style net trained on Fashion-MNIST (`evoproxy train`)"),
}
ALIASES = {"default": "resnet20-fmnist"}


def weights_hash(model: nn.Module) -> str:
    """SHA-256 over the model's state_dict (names, dtypes, shapes and bytes), in hex."""
    return tensors_hash(model.state_dict().items())


def checkpoint_path(spec: ModelSpec) -> Path:
    """Where the shipped checkpoint of a registry model lies inside the installed package."""
    return Path(str(resources.files("evoproxy") / "assets" / spec.checkpoint))


def _load_state_dict(model: nn.Module, path: str | Path) -> None:
    path = Path(path)
    if not path.is_file():
        raise EvoproxyError(f"weights file {path} does not exist: pass --weights with a saved state_dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or non-tensor file
        raise EvoproxyError(f"cannot read weights file {path} as a state_dict ({type(exc).__name__}); "
                            "save one with torch.save(model.state_dict(), path)") from None
    if not isinstance(state, dict):
        raise EvoproxyError(f"weights file {path} holds a {type(state).__name__}, not a state_dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise EvoproxyError(f"weights file {path} does not fit the model: {first}") from None


def _import_factory(ref: str) -> Callable[[], nn.Module]:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EvoproxyError(f"cannot import {module_name!r} for model {ref!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise EvoproxyError(f"{module_name} has no callable {attr!r}: give the model as package.module:function")
    return factory


def load_model(ref: str, weights: str | Path | None = None) -> tuple[nn.Module, str]:
    """The model named `ref`, in eval mode, and its canonical name.

    `ref` is a registry name (see MODELS, ALIASES) or `package.module:function`, a function
    that returns an nn.Module. `weights` (a state_dict file) overrides the shipped checkpoint
    of a registry model and is what a user's model is loaded with, if given."""
    name = ALIASES.get(ref, ref)
    if name in MODELS:
        spec = MODELS[name]
        model = spec.build()
        _load_state_dict(model, weights or checkpoint_path(spec))
    elif ":" in ref:
        model = _import_factory(ref)()
        if not isinstance(model, nn.Module):
            raise EvoproxyError(f"{ref} returned a {type(model).__name__}, not a torch.nn.Module")
        if weights is not None:
            _load_state_dict(model, weights)
    else:
        known = ", ".join(sorted([*MODELS, *ALIASES]))
        raise EvoproxyError(f"unknown model {ref!r}: use one of {known}, or package.module:function")
    return model.eval(), name
