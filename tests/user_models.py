"""Models and data as a user would bring them (`--model module:function`, `--data module:function`):
a Linear-only net, a Conv1d net, a transformer-style block with nn.Linear projections, ones with
nn.MultiheadAttention, a model that returns a tuple, MobileNetV3-, ShuffleNetV2-, EfficientNet-,
ConvNeXt-, ViT- (with nn.Linear projections, and with nn.MultiheadAttention as torchvision's),
Swin- (its projections applied through F.linear, as torchvision's), DenseNet- and ResNeXt-style nets,
and data functions."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    """Pre-norm transformer block: attention with a fused q/k/v nn.Linear, then an MLP."""

    def __init__(self, d: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.norm1, self.qkv, self.proj = nn.LayerNorm(d), nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.norm2, self.mlp = nn.LayerNorm(d), nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1) / (d // self.heads) ** 0.5).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """Sequences (batch, 6, 4) → 3 classes."""

    def __init__(self):
        super().__init__()
        self.embed, self.block, self.head = nn.Linear(4, 16), Block(), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.block(self.embed(x)).mean(1))


class AttentionNet(nn.Module):
    def __init__(self, **options):
        super().__init__()
        self.embed, self.attn, self.head = (
            nn.Linear(4, 16),
            nn.MultiheadAttention(16, 2, batch_first=True, **options),
            nn.Linear(16, 3),
        )

    def forward(self, x):
        h = self.embed(x)
        return self.head(self.attn(h, h, h)[0].mean(1))


class TwoHeads(nn.Module):
    """Returns (logits, features), as many detection and distillation models do."""

    def __init__(self):
        super().__init__()
        self.body, self.fc = nn.Sequential(nn.Linear(12, 16), nn.ReLU()), nn.Linear(16, 3)

    def forward(self, x):
        h = self.body(x)
        return self.fc(h), h


def conv1d() -> nn.Module:
    """Signals (batch, 2, 32) → 3 classes: dense and depthwise Conv1d, then a Linear head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(2, 8, 3, padding=1),
        nn.BatchNorm1d(8),
        nn.ReLU(),
        nn.Conv1d(8, 8, 3, padding=1, groups=8),
        nn.ReLU(),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


def signals(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 2, 32) float signals of 3 classes (sines of three frequencies in noise)."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    t = torch.linspace(0, 1, 32)
    wave = torch.sin(2 * torch.pi * (2 + 3 * labels[:, None]) * t)
    return torch.stack([wave, -wave], 1) + 0.3 * torch.randn(n, 2, 32, generator=gen), labels


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 3))


class _SlowWhile:
    """Forward pre-hook: a pause of 20 ms while the file `flag` exists (a measurement that takes time)."""

    def __init__(self, flag: str):
        self.flag = flag

    def __call__(self, module: nn.Module, inputs: tuple) -> None:
        import os
        import time

        if os.path.exists(self.flag):
            time.sleep(0.02)


def slow_mlp() -> nn.Module:
    """`mlp`, each forward 20 ms slower while the file that $SLOW_MLP_FLAG names exists."""
    import os

    model = mlp()
    model.register_forward_pre_hook(_SlowWhile(os.environ["SLOW_MLP_FLAG"]))
    return model


def transformer() -> nn.Module:
    torch.manual_seed(0)
    return TinyTransformer()


def attention() -> nn.Module:
    torch.manual_seed(0)
    return AttentionNet()


def zero_attention() -> nn.Module:
    """`attention` with add_zero_attn, which no module of nn.Linear projections reproduces."""
    torch.manual_seed(0)
    return AttentionNet(add_zero_attn=True)


def two_heads() -> nn.Module:
    torch.manual_seed(0)
    return TwoHeads()


def vectors(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 12) float vectors of 3 classes that an MLP can tell apart."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=gen)
    centres = torch.randn(3, 12, generator=torch.Generator().manual_seed(99))
    return centres[labels] + 0.8 * torch.randn(n, 12, generator=gen), labels


def sequences(n: int = 240, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 6, 4) float sequences of 3 classes."""
    x, y = vectors(n, seed)
    return x.repeat(1, 2).reshape(n, 6, 4), y


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 60) -> nn.Module:
    """`model` trained briefly with Adam, so that quantization has accuracy to lose."""
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        nn.functional.cross_entropy(out[0] if isinstance(out, tuple) else out, y).backward()
        opt.step()
    return model.eval()


def brightness_task():
    """A small conv net with BatchNorm, trained briefly on 8×8 images whose class (of 3) is the
    brightest third of the image, and the data: (model, layers, train pair, evaluation pair)."""
    from evoproxy.model import layer_registry

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(192, 1, 8, 8, generator=gen)
    y = torch.stack([x[:, 0, :, :3].mean((1, 2)), x[:, 0, :, 3:5].mean((1, 2)), x[:, 0, :, 5:].mean((1, 2))]).argmax(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(384, 3))
    model = fit(model, x[:144], y[:144], steps=40)
    return model, layer_registry(model, (1, 8, 8)), (x[:144], y[:144]), (x[144:], y[144:])


def tiny_lm() -> nn.Module:
    """A byte-level TinyLM small enough for every command to run on it in a second."""
    from evoproxy.model import TinyLM

    torch.manual_seed(0)
    return TinyLM(dim=32, blocks=2, heads=2, hidden=64, context=32)


class SqueezeExcite(nn.Module):
    """torchvision's SqueezeExcitation as MobileNetV3 uses it: a Hardsigmoid gate per channel."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, squeezed, 1), nn.Conv2d(squeezed, channels, 1)
        self.relu, self.scale = nn.ReLU(), nn.Hardsigmoid()

    def forward(self, x):
        return x * self.scale(self.fc2(self.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


def mobilenet_v3() -> nn.Module:
    """MobileNetV3-small's layer kinds for 28×28 grey images: Hardswish, depthwise convolutions,
    a squeeze-and-excitation gate with Hardsigmoid, and a Hardswish classifier with dropout."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, 2, 1, bias=False),
        nn.BatchNorm2d(8),
        nn.Hardswish(),
        nn.Conv2d(8, 8, 3, 1, 1, groups=8, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        SqueezeExcite(8, 8),
        nn.Conv2d(8, 16, 1, bias=False),
        nn.BatchNorm2d(16),
        nn.Conv2d(16, 16, 3, 2, 1, groups=16, bias=False),
        nn.BatchNorm2d(16),
        nn.Hardswish(),
        SqueezeExcite(16, 8),
        nn.Conv2d(16, 24, 1, bias=False),
        nn.BatchNorm2d(24),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(24, 32),
        nn.Hardswish(),
        nn.Dropout(0.2),
        nn.Linear(32, 10),
    )


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 unit: half the channels (`chunk`) through a branch, concatenated
    back to the other half, then the channels interleaved by `view` and `transpose`."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            nn.Conv2d(half, half, 1), nn.BatchNorm2d(half), nn.ReLU(), nn.Conv2d(half, half, 3, 1, 1, groups=half)
        )

    def forward(self, x):
        kept, through = x.chunk(2, dim=1)
        x = torch.cat([kept, self.branch(through)], 1)
        n, c, h, w = x.shape
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)


class Inception(nn.Module):
    """GoogLeNet's pattern: two branches on the same tensor, concatenated."""

    def __init__(self, channels: int):
        super().__init__()
        self.a, self.b = nn.Conv2d(channels, channels // 2, 1), nn.Conv2d(channels, channels // 2, 3, 1, 1)

    def forward(self, x):
        return torch.cat([self.a(x), self.b(x)], 1)


def shuffle_se() -> nn.Module:
    """For 8×8 grey images: two concatenated branches, two ShuffleNetV2 units, a
    squeeze-and-excitation gate, Hardswish, a mean over the pixels and a Linear head of 3 classes."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, 1, 1),
        nn.ReLU(),
        Inception(8),
        ShuffleUnit(8),
        ShuffleUnit(8),
        SqueezeExcite(8, 4),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
    )


class MBConv(nn.Module):
    """EfficientNet's block: 1×1 expansion, depthwise convolution, a squeeze-and-excitation gate with
    SiLU and Sigmoid, 1×1 projection, residual."""

    def __init__(self, channels: int):
        super().__init__()
        wide = 2 * channels
        self.expand = nn.Sequential(nn.Conv2d(channels, wide, 1, bias=False), nn.BatchNorm2d(wide), nn.SiLU())
        self.depthwise = nn.Sequential(nn.Conv2d(wide, wide, 3, 1, 1, groups=wide, bias=False), nn.BatchNorm2d(wide))
        self.fc1, self.fc2 = nn.Conv2d(wide, channels // 2, 1), nn.Conv2d(channels // 2, wide, 1)
        self.project = nn.Sequential(nn.Conv2d(wide, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x):
        h = nn.functional.silu(self.depthwise(self.expand(x)))
        gate = torch.sigmoid(self.fc2(nn.functional.silu(self.fc1(h.mean((2, 3), keepdim=True)))))
        return x + self.project(h * gate)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: depthwise convolution, LayerNorm over the channels (channels last), Linear,
    GELU, Linear, a per-channel layer scale, residual."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise, self.norm = nn.Conv2d(channels, channels, 3, 1, 1, groups=channels), nn.LayerNorm(channels)
        self.fc1, self.fc2 = nn.Linear(channels, 4 * channels), nn.Linear(4 * channels, channels)
        self.scale = nn.Parameter(torch.full((channels,), 0.5))

    def forward(self, x):
        h = self.norm(self.depthwise(x).permute(0, 2, 3, 1))
        return x + (self.fc2(nn.functional.gelu(self.fc1(h))) * self.scale).permute(0, 3, 1, 2)


class EncoderBlock(nn.Module):
    """torchvision's ViT block: pre-norm nn.MultiheadAttention (batch first, called with
    need_weights=False), dropout, then an MLP."""

    def __init__(self, d: int = 16, heads: int = 2):
        super().__init__()
        self.ln_1, self.self_attention = nn.LayerNorm(d), nn.MultiheadAttention(d, heads, batch_first=True)
        self.dropout, self.ln_2 = nn.Dropout(0.1), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.dropout(self.self_attention(h, h, h, need_weights=False)[0])
        return x + self.mlp(self.ln_2(x))


class ViT(nn.Module):
    """A vision transformer on 8×8 grey images: 2×2 patches by a strided convolution, a class token
    and a position embedding, one pre-norm `block` (by default a `Block`), LayerNorm, the head on the
    class token."""

    def __init__(self, d: int = 16, block: type[nn.Module] = Block):
        super().__init__()
        self.patches, self.block, self.norm, self.head = (
            nn.Conv2d(1, d, 2, 2),
            block(d),
            nn.LayerNorm(d),
            nn.Linear(d, 3),
        )
        self.token, self.position = nn.Parameter(0.1 * torch.randn(1, 1, d)), nn.Parameter(0.1 * torch.randn(1, 17, d))

    def forward(self, x):
        h = self.patches(x).flatten(2).transpose(1, 2)
        h = torch.cat([self.token.expand(x.shape[0], -1, -1), h], 1) + self.position
        return self.head(self.norm(self.block(h))[:, 0])


class DenseLayer(nn.Module):
    """DenseNet's layer: BatchNorm, ReLU, 1×1 and 3×3 convolutions; its output concatenated to its input."""

    def __init__(self, channels: int, growth: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * growth, 1, bias=False),
            nn.BatchNorm2d(2 * growth),
            nn.ReLU(),
            nn.Conv2d(2 * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x):
        return torch.cat([x, self.net(x)], 1)


class GroupedBottleneck(nn.Module):
    """ResNeXt's (and RegNet's) bottleneck: 1×1, a grouped 3×3 convolution, 1×1, residual, ReLU."""

    def __init__(self, channels: int, groups: int = 4):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 1, 1, groups=groups, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x):
        return torch.relu(x + self.net(x))


def window_attention(x, qkv_weight, proj_weight, position_bias, window, heads, shift, qkv_bias, proj_bias):
    """torchvision's `shifted_window_attention` on (batch, H, W, C), without its padding and shift mask:
    its projections applied by F.linear to weights that it is given, not by modules."""
    b, h, w, c = x.shape
    x = torch.roll(x, (-shift, -shift), (1, 2))
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, window**2, c)
    qkv = nn.functional.linear(x, qkv_weight, qkv_bias)
    q, k, v = qkv.reshape(x.size(0), x.size(1), 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    attn = torch.softmax((q * (c // heads) ** -0.5) @ k.transpose(-2, -1) + position_bias, -1)
    x = nn.functional.linear((attn @ v).transpose(1, 2).reshape(x.size(0), x.size(1), c), proj_weight, proj_bias)
    x = x.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
    return torch.roll(x, (shift, shift), (1, 2))


class WindowAttention(nn.Module):
    """torchvision's ShiftedWindowAttention: nn.Linear `qkv` and `proj` that its forward never calls,
    passing their weights and biases to `window_attention`."""

    def __init__(self, d: int, window: int, heads: int, shift: int):
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.position_bias = nn.Parameter(0.1 * torch.randn(heads, window**2, window**2))
        self.window, self.heads, self.shift = window, heads, shift

    def forward(self, x):
        return window_attention(
            x,
            self.qkv.weight,
            self.proj.weight,
            self.position_bias,
            self.window,
            self.heads,
            self.shift,
            qkv_bias=self.qkv.bias,
            proj_bias=self.proj.bias,
        )


class SwinBlock(nn.Module):
    """Swin's block on (batch, H, W, C): pre-norm window attention, then an MLP, both residual."""

    def __init__(self, d: int, shift: int, window: int = 2, heads: int = 2):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), WindowAttention(d, window, heads, shift)
        self.norm2, self.mlp = nn.LayerNorm(d), nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Swin(nn.Module):
    """A Swin transformer on 8×8 grey images: 2×2 patches by a strided convolution (4×4 of them, channels
    last), a block on 2×2 windows and one on windows shifted by one, LayerNorm, a mean, a Linear head."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.patches, self.blocks = nn.Conv2d(1, d, 2, 2), nn.Sequential(SwinBlock(d, shift=0), SwinBlock(d, shift=1))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 3)

    def forward(self, x):
        return self.head(self.norm(self.blocks(self.patches(x).permute(0, 2, 3, 1))).mean((1, 2)))


def _on_8x8(*blocks: nn.Module) -> nn.Module:
    """`blocks`, 8 channels in and out, for 8×8 grey images: a 3×3 stem, the blocks, a mean over the
    pixels and a Linear head of 3 classes."""
    return nn.Sequential(nn.Conv2d(1, 8, 3, 1, 1), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))


COMMON_BLOCKS = {  # one small net per block of the common architectures, for 8×8 grey images, 3 classes
    "efficientnet": lambda: _on_8x8(MBConv(8), MBConv(8)),
    "convnext": lambda: _on_8x8(ConvNeXtBlock(8), ConvNeXtBlock(8)),
    "vit": ViT,
    "vit-mha": lambda: ViT(block=EncoderBlock),
    "swin": Swin,
    "densenet": lambda: _on_8x8(DenseLayer(8, 4), DenseLayer(12, 4), nn.Conv2d(16, 8, 1), nn.AvgPool2d(2)),
    "resnext": lambda: _on_8x8(GroupedBottleneck(8), GroupedBottleneck(8)),
}


def common_block(name: str) -> nn.Module:
    """The net of COMMON_BLOCKS `name`, its weights from seed 0, as `load_model` gives it (its
    nn.MultiheadAttention split into nn.Linear projections)."""
    from evoproxy.model import split_attention

    torch.manual_seed(0)
    return split_attention(COMMON_BLOCKS[name]())


class DiesInADaskWorker(nn.Module):
    """`inner`, except that its first forward in a Dask worker process ends that process, as a lost
    machine would, once per `marker` file."""

    def __init__(self, inner: nn.Module, marker: str):
        super().__init__()
        self.inner, self.marker = inner, marker

    def forward(self, x):
        import os

        from distributed import get_worker

        try:
            get_worker()
        except ValueError:  # not in a worker
            return self.inner(x)
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return self.inner(x)


class Branchy(nn.Module):
    """`mlp`, its output's sign chosen by its input's values: control flow that torch.fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.net = mlp()

    def forward(self, x):
        return self.net(x) if x.sum() > 0 else -self.net(x)


def branchy() -> nn.Module:
    return Branchy()
