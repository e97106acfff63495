"""The splits of a data source read as (train, test) parts: checked, shuffled (seeded), cut into
train and test when the source is a single set, normalised (see sources.py for the rules)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import EvoproxyError, ParameterError
from .data_settings import DataSettings
from .readers import Pair

TEST_FRACTION = 0.2  # the test part of a source that is a single set

Loader = Callable[[], Pair]  # reads one split


def _as_float(images: torch.Tensor, options: DataSettings, where: str) -> torch.Tensor:
    """uint8 images to [0, 1] floats, then the options' per-channel normalisation."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif not images.is_floating_point():
        raise EvoproxyError(f"{where}: images must be uint8 or float, got {images.dtype}")
    images = images.float()
    if options.mean is not None or options.std is not None:
        if images.dim() != 4:
            raise EvoproxyError(f"{where}: mean and std need (N, C, H, W) images, got shape {tuple(images.shape)}")
        c = images.shape[1]
        mean = torch.tensor(options.mean or (0.0,), dtype=torch.float32)
        std = torch.tensor(options.std or (1.0,), dtype=torch.float32)
        for name in ("mean", "std"):
            values = getattr(options, name)
            if values is not None and len(values) not in (1, c):
                raise ParameterError("DataSettings", name, f"one value or {c}, one per channel of {where}", values)
        images = (images - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
    return images


def _check_pair(images, labels, where: str) -> Pair:
    """Tensors of a split, in the layout the models take: channels first, int64 labels."""
    images, labels = torch.as_tensor(images), torch.as_tensor(labels)
    if images.dim() < 2 or len(images) == 0:
        raise EvoproxyError(
            f"{where}: images must be a non-empty array shaped (N, ...), got shape {tuple(images.shape)}"
        )
    if labels.dim() != 1 or len(labels) != len(images):
        raise EvoproxyError(
            f"{where}: labels must be shaped ({len(images)},) to match the images, got {tuple(labels.shape)}"
        )
    if labels.dtype == torch.bool or (labels.is_floating_point() and not torch.equal(labels, labels.round())):
        raise EvoproxyError(f"{where}: labels must be integer class indices")
    labels = labels.long()
    if int(labels.min()) < 0:
        raise EvoproxyError(f"{where}: labels must be class indices from 0, found {int(labels.min())}")
    if images.dtype == torch.uint8 and images.dim() == 3:  # (N, H, W) grey images
        images = images.unsqueeze(1)
    elif images.dim() == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] > 4:
        images = images.permute(0, 3, 1, 2)  # (N, H, W, C) as most image tools store it: C ≤ 4 < H
    return images.contiguous(), labels


def _shuffled(pair: Pair, seed: int) -> Pair:
    order = torch.randperm(len(pair[0]), generator=torch.Generator().manual_seed(seed))
    return pair[0][order], pair[1][order]


def split_parts(
    spec: str, options: DataSettings, parts: Callable[[], tuple[Pair, Pair | None]]
) -> tuple[Loader, Loader, Loader]:
    """The loaders of the calibration, test and train splits (a DataSource's) of the source
    `spec` whose (train, test) parts `parts` reads (test None for a single set). The parts are
    read once, when a split is first asked for."""
    cache: dict = {}

    def split() -> tuple[Pair, Pair]:
        if not cache:
            train, test = parts()
            train = _check_pair(*train, spec)
            if test is None:
                n = len(train[0])
                if n < 2:
                    raise EvoproxyError(f"{spec} holds {n} image(s); at least 2 are needed (train and test)")
                images, labels = _shuffled(train, options.seed)
                cut = n - max(1, round(TEST_FRACTION * n))
                train, test = (images[:cut], labels[:cut]), (images[cut:], labels[cut:])
            else:
                test = _shuffled(_check_pair(*test, spec), options.seed)
            train = _shuffled(train, options.seed + 1)
            cache["train"] = (_as_float(train[0], options, spec), train[1])
            cache["test"] = (_as_float(test[0], options, spec), test[1])
        return cache["train"], cache["test"]

    def calib() -> Pair:
        images, labels = split()[0]
        n = min(options.calib_images, len(images))
        return images[:n], labels[:n]

    return calib, lambda: split()[1], lambda: split()[0]
