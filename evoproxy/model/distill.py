"""Data-free calibration images: ZeroQ's distilled data (Cai et al., CVPR 2020, section 3.1).

Inputs drawn from a standard normal are optimised with Adam so that, at every BatchNorm layer, the
statistics of the layer's input on them match the running statistics the layer learnt in training:

    loss = Σ_BN ‖μ̃ − μ‖² + ‖σ̃ − σ‖²,   σ = sqrt(running_var + eps),  σ̃ = sqrt(var + eps)

μ̃ and σ̃ are taken over the batch and the spatial positions, as BatchNorm takes them in training,
so that a (batch, features) BatchNorm1d counts as well. ZeroQ's code takes them per image instead;
on the shipped ResNet-20 the two gave PTQ top-1 within 0.2 points of each other when the defaults
were chosen, and the batch's leave each image freer. Images are distilled in batches of DISTILL_BATCH,
each from the next draw of one seeded generator, on one CPU thread (as the statistics are), so that
a seed gives the same images on any machine. The result is cached by (weights, n, seed, input shape,
settings) with its sha256 beside it, as the statistics are (evoproxy/files.py).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import EvoproxyError
from ..files import open_with_checksum, save_with_checksum
from ..params import Interval, check_parameters
from .layers import evaluating
from .registry import behaviour_hash, weights_hash

DISTILL_BATCH = 64  # images optimised together: the statistics are matched over each batch
MAX_IMAGES = 1 << 16  # a typo should not start hours of distillation
FORMAT_VERSION = 1  # of the cache entries: bumped when the recipe changes what a key's images are


@dataclass(frozen=True)
class DistillSettings:
    """How images are distilled: Adam's `iters` steps at learning rate `lr` on each batch."""

    iters: int = 200
    lr: float = 0.1

    CONSTRAINTS = {"iters": Interval(1, 100_000, integer=True), "lr": Interval(0, 100, closed="right")}

    def __post_init__(self):
        check_parameters(self)

    @classmethod
    def from_dict(cls, d: dict) -> DistillSettings:
        """The settings a bench recorded (`asdict`)."""
        try:
            return cls(**d)
        except TypeError:
            raise EvoproxyError(
                f"unknown distillation settings {sorted(d)}: this file was written by another version"
            ) from None


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of `model` that hold running statistics, in `modules()` order."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None and m.running_var is not None
    ]


def check_distillable(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers images are distilled from; an EvoproxyError for a model without any, or a
    language model."""
    if any(isinstance(m, nn.Embedding) for m in model.modules()):
        raise EvoproxyError(
            "distilled images are for image models: this is a language model (it embeds tokens); "
            "calibrate it on real text"
        )
    layers = batchnorm_layers(model)
    if not layers:
        raise EvoproxyError(
            "distilled images match a model's BatchNorm statistics, and this model has no BatchNorm layer "
            "with running statistics: calibrate it on real data"
        )
    return layers


def bn_statistics_loss(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The distillation loss of `images` (N, *input_shape) on `model` (eval mode): Σ over BatchNorm
    layers of ‖μ̃ − μ‖² + ‖σ̃ − σ‖² (the module docstring), differentiable in `images`."""
    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append((m, args[0]))) for m in check_distillable(model)]
    try:
        model(images)
    finally:
        for hook in hooks:
            hook.remove()
    loss = images.new_zeros(())
    for bn, x in seen:
        dims = [0, *range(2, x.dim())]  # all but the channel
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        std, running_std = (var + bn.eps).sqrt(), (bn.running_var + bn.eps).sqrt()
        loss = loss + (mean - bn.running_mean).square().sum() + (std - running_std).square().sum()
    return loss


def distill_images(
    model: nn.Module,
    input_shape: tuple[int, ...],
    n: int,
    seed: int = 0,
    settings: DistillSettings = DistillSettings(),
    cache: str | os.PathLike | None = None,
    log: Callable[[str], None] = lambda msg: None,
) -> torch.Tensor:
    """`n` float32 images of shape `input_shape` (no batch dimension) distilled from the BatchNorm
    statistics of `model` (the module docstring) on the model's device, the same for the same seed;
    returned on the CPU.

    `cache`, a folder (the statistics cache, `evoproxy.files.cache_dir()`), keeps them by (weights
    and behaviour, n, seed, input shape, settings): a second call reads them back instead of distilling again.
    A model without BatchNorm, or a language model, is an EvoproxyError. Cost: about
    `settings.iters` forward and backward passes of the model per DISTILL_BATCH images."""
    device = check_distillable(model)[0].running_mean.device
    check_parameters(
        {"n": n, "seed": seed},
        {"n": Interval(1, MAX_IMAGES, integer=True), "seed": Interval(0, 2**63 - 1, integer=True)},
        "distill_images",
    )
    shape = tuple(int(s) for s in input_shape)
    path = None
    if cache is not None:
        key = {
            "weights": weights_hash(model),
            "behaviour": behaviour_hash(model, torch.zeros(1, *shape, device=device)),
            "n": n,
            "seed": seed,
            "shape": shape,
            "format": FORMAT_VERSION,
        }
        digest = hashlib.sha256(json.dumps(key | asdict(settings), sort_keys=True).encode()).hexdigest()
        path = Path(cache) / f"distilled-{digest[:32]}.pt"
        file, _ = open_with_checksum(path)
        if file is not None:
            with file:
                log(f"{n} distilled images from the cache ({path})")
                return torch.load(file, weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one order of summation: the same images on any machine
    try:
        images = _distill(model, shape, n, seed, settings, log, device)
    finally:
        torch.set_num_threads(threads)
    if path is not None:
        save_with_checksum(path, lambda tmp: torch.save(images, tmp))
    return images


def _distill(model, shape, n, seed, settings, log, device) -> torch.Tensor:
    """Distil `n` images, DISTILL_BATCH at a time, from one seeded generator; the model is left as it was."""
    grads = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    out = []
    try:
        with evaluating(model):  # the running statistics are the target: eval mode keeps them
            for start in range(0, n, DISTILL_BATCH):
                x = torch.randn((min(DISTILL_BATCH, n - start), *shape), generator=generator).to(device)
                x.requires_grad_(True)
                optimizer = torch.optim.Adam([x], lr=settings.lr)
                for _ in range(settings.iters):
                    optimizer.zero_grad(set_to_none=True)
                    loss = bn_statistics_loss(model, x)
                    loss.backward()
                    optimizer.step()
                out.append(x.detach().cpu())
                log(f"distilled {start + len(x)} of {n} images (BatchNorm statistics loss {loss.item():.3g})")
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
    return torch.cat(out)


def distilled_labels(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """The labels of distilled images: the float model's own top-1 predictions (int64, on the CPU), which
    the statistics' gradients (G, the Hessian) are taken against, as they would be against true labels."""
    device = check_distillable(model)[0].running_mean.device
    with evaluating(model), torch.no_grad():
        return torch.cat([model(x.to(device)).argmax(1).cpu() for x in images.split(DISTILL_BATCH)])
