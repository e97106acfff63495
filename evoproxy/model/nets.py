"""The shipped classifier architectures, all for 1×28×28 Fashion-MNIST images: ResNet-20,
MobileNetV2-, VGG-, ShuffleNet- and SqueezeNet-style CNNs, an MLP-Mixer, and the wider zoo's CNN with
a wide Linear head and ConvNeXt-style net."""

from __future__ import annotations

import torch
from torch import nn


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
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
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


class PlainVGG(nn.Module):
    """A VGG-style plain network (no shortcuts) for 1×28×28 inputs: 3×3 conv-BN-ReLU layers of
    16, 16 | 32, 32 | 64, 64, 64 channels with 2×2 max pooling between the groups, global average
    pooling and the classifier; 8 quantizable layers."""

    CHANNELS = ((16, 16), (32, 32), (64, 64, 64))

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for g, group in enumerate(self.CHANNELS):
            if g:
                layers.append(nn.MaxPool2d(2))
            for cout in group:
                layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(out, 1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of `groups` groups (ShuffleNet), so that the next grouped
    convolution mixes information across groups."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNet (v1) unit: grouped 1×1 conv, channel shuffle, 3×3 depthwise conv, grouped 1×1
    conv, each followed by BatchNorm. Stride 1 adds the input; stride 2 concatenates the
    average-pooled input, so the unit's new channels are `cout - cin`."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.stride, self.groups = stride, groups
        branch = cout - cin if stride == 2 else cout
        mid = branch // 2
        self.reduce = nn.Sequential(nn.Conv2d(cin, mid, 1, groups=groups, bias=False), nn.BatchNorm2d(mid), nn.ReLU())
        self.depthwise = nn.Sequential(nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid))
        self.expand = nn.Sequential(nn.Conv2d(mid, branch, 1, groups=groups, bias=False), nn.BatchNorm2d(branch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.expand(self.depthwise(channel_shuffle(self.reduce(x), self.groups)))
        if self.stride == 2:
            return torch.relu(torch.cat([nn.functional.avg_pool2d(x, 3, 2, 1), out], 1))
        return torch.relu(x + out)


class ShuffleNetSmall(nn.Module):
    """A ShuffleNet-style network for 1×28×28 inputs: a 3×3 stem of 24 channels, three stages of
    two shuffle units (grouped 1×1 convolutions in 2 groups, 48/96/192 channels, the first unit
    of each stage with stride 2) and the classifier; 20 quantizable layers, 6 depthwise and 12
    grouped."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, groups: int = 2):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
        units, cin = [], 24
        for cout in (48, 96, 192):
            units += [ShuffleUnit(cin, cout, 2, groups), ShuffleUnit(cout, cout, 1, groups)]
            cin = cout
        self.units = nn.Sequential(*units)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.adaptive_avg_pool2d(self.units(self.stem(x)), 1)
        return self.classifier(torch.flatten(out, 1))


class Fire(nn.Module):
    """SqueezeNet fire module: a 1×1 squeeze convolution, then 1×1 and 3×3 expand convolutions
    whose outputs are concatenated; BatchNorm and ReLU after each."""

    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1, bias=False), nn.BatchNorm2d(squeeze), nn.ReLU())
        self.expand1 = nn.Sequential(nn.Conv2d(squeeze, expand, 1, bias=False), nn.BatchNorm2d(expand), nn.ReLU())
        self.expand3 = nn.Sequential(nn.Conv2d(squeeze, expand, 3, 1, 1, bias=False), nn.BatchNorm2d(expand), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.squeeze(x)
        return torch.cat([self.expand1(s), self.expand3(s)], 1)


class SqueezeNetSmall(nn.Module):
    """A SqueezeNet-style network for 1×28×28 inputs: a 3×3 stem of 32 channels, four fire
    modules (squeeze 8/16/16/32, expand 2×32/2×64/2×64/2×128) with max pooling after the stem and
    the second module, and SqueezeNet's classifier, a 1×1 convolution to the classes followed by
    global average pooling; 14 quantizable layers."""

    FIRES = ((8, 32), (16, 64), (16, 64), (32, 128))  # squeeze, expand channels

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, 32, 3, 1, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        cin = 32
        for i, (squeeze, expand) in enumerate(self.FIRES):
            layers.append(Fire(cin, squeeze, expand))
            cin = 2 * expand
            if i == 1:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(cin, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.adaptive_avg_pool2d(self.classifier(self.features(x)), 1)
        return torch.flatten(out, 1)


class MixerBlock(nn.Module):
    """MLP-Mixer block: a token-mixing MLP across patches and a channel-mixing MLP across
    features, each after LayerNorm, with GELU and a residual connection."""

    def __init__(self, tokens: int, dim: int, token_hidden: int, channel_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token1, self.token2 = nn.Linear(tokens, token_hidden), nn.Linear(token_hidden, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.channel1, self.channel2 = nn.Linear(dim, channel_hidden), nn.Linear(channel_hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (batch, tokens, dim)
        t = self.norm1(x).transpose(1, 2)
        x = x + self.token2(nn.functional.gelu(self.token1(t))).transpose(1, 2)
        return x + self.channel2(nn.functional.gelu(self.channel1(self.norm2(x))))


class MLPMixerSmall(nn.Module):
    """An MLP-Mixer for 1×28×28 inputs: 4×4 patches (49 tokens) embedded in 64 features by a
    strided convolution, four mixer blocks (token MLP 49→32→49, channel MLP 64→128→64), LayerNorm,
    mean over tokens and the classifier; 18 quantizable layers, all Linear but the embedding."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dim: int = 64, blocks: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, 4, 4)
        self.blocks = nn.Sequential(*(MixerBlock(49, dim, 32, 2 * dim) for _ in range(blocks)))
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        return self.classifier(self.norm(self.blocks(tokens)).mean(1))


class WideHeadCNN(nn.Module):
    """A CNN whose convolutions (each with BatchNorm) end in a wide Linear layer without one: 3×3
    conv-BN-ReLU layers of 16 | 32, 32 | 32, 32 channels with 2×2 max pooling between the groups, a
    3×3 stride-2 conv to 64 channels on a 4×4 map, then flatten, Linear(1024 → 256), ReLU and the
    classifier; 8 quantizable layers. No BatchNorm follows the wide layer, so re-estimating
    BatchNorm cannot repair its quantization shift."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for g, group in enumerate(((16,), (32, 32), (32, 32))):
            if g:
                layers.append(nn.MaxPool2d(2))
            for cout in group:
                layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
        layers += [nn.Conv2d(cin, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.hidden = nn.Linear(64 * 4 * 4, 256)
        self.classifier = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.hidden(torch.flatten(self.features(x), 1))))


def channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """`norm` over the channels of a (batch, channels, height, width) map; a plain nn.LayerNorm
    module, so that SynFlow's linearisation knows it."""
    return norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block: 7×7 depthwise conv, LayerNorm, pointwise Linear expansion ×4 with GELU,
    pointwise Linear projection (on channels-last maps, as ConvNeXt writes them) and a residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.depthwise = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.expand, self.project = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        return x + self.project(nn.functional.gelu(self.expand(y))).permute(0, 3, 1, 2)


class ConvNeXtSmall(nn.Module):
    """A ConvNeXt-style network for 1×28×28 inputs: a 2×2 stride-2 patchify stem to 24 channels
    (14×14) with LayerNorm, two blocks, LayerNorm and a 2×2 stride-2 conv to 48 channels (7×7), two
    blocks, mean over positions, LayerNorm and the classifier; 15 quantizable layers, 4 depthwise,
    no BatchNorm."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, dims: tuple[int, int] = (24, 48)):
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(in_channels, dims[0], 2, 2), nn.LayerNorm(dims[0])
        self.stage1 = nn.Sequential(ConvNeXtBlock(dims[0]), ConvNeXtBlock(dims[0]))
        self.down_norm, self.down = nn.LayerNorm(dims[0]), nn.Conv2d(dims[0], dims[1], 2, 2)
        self.stage2 = nn.Sequential(ConvNeXtBlock(dims[1]), ConvNeXtBlock(dims[1]))
        self.norm = nn.LayerNorm(dims[1])
        self.classifier = nn.Linear(dims[1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stage1(channel_norm(self.stem_norm, self.stem(x)))
        out = self.stage2(self.down(channel_norm(self.down_norm, out)))
        return self.classifier(self.norm(out.mean((2, 3))))
