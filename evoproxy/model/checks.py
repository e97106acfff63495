"""What every data source must be before any model sees it: arrays of sane size (checked from a
file's header before its data is read), uint8 or float images whose values are finite once scaled
and normalised, whole-number labels from 0 (DataSource.check_classes compares them with a model's outputs)."""

from __future__ import annotations

import torch

from ..errors import EvoproxyError, ParameterError, exception_line
from .data_settings import DataSettings

Pair = tuple[torch.Tensor, torch.Tensor]

MAX_VALUES = 2**30  # values in one array: 4 GiB once images are float32, so that a typo or a bomb cannot exhaust memory
MAX_MAGNITUDE = 1e6  # of a prepared input value: beyond it the statistics' squares and products overflow float32
MAX_LABEL = 2**31 - 1  # a class index (labels beyond it do not survive their conversion to int64 from floats)
NUMERIC_KINDS = "buif"  # numpy's dtype kinds of booleans, integers and floats: the only arrays a source may hold


def check_header(shape: tuple[int, ...], dtype, where: str) -> None:
    """Refuse, before its data is read, an array of `shape` and `dtype` (numpy's or torch's) that is
    not numeric or holds more than MAX_VALUES values."""
    kind = (
        dtype.kind if hasattr(dtype, "kind") else "f" if dtype.is_floating_point else "c" if dtype.is_complex else "i"
    )
    if kind not in NUMERIC_KINDS or getattr(dtype, "fields", None):
        raise EvoproxyError(f"{where}: arrays must be numbers (uint8 or float images, integer labels), got {dtype}")
    values = 1
    for n in shape:
        values *= n
    if values > MAX_VALUES:
        raise EvoproxyError(
            f"{where}: an array of shape {tuple(shape)} holds {values:,} values, more than the {MAX_VALUES:,} a "
            "data source may hold; use fewer or smaller images"
        )


def _as_tensors(images, labels, where: str) -> Pair:
    try:
        return torch.as_tensor(images), torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as exc:  # lists of strings, ragged lists, object arrays
        raise EvoproxyError(f"{where}: images and labels must be numeric arrays ({exception_line(exc)})") from None


def _check_labels(labels: torch.Tensor, n: int, where: str) -> torch.Tensor:
    """int64 class indices: whole numbers from 0 to MAX_LABEL, one per image."""
    if labels.dim() != 1 or len(labels) != n:
        raise EvoproxyError(f"{where}: labels must be shaped ({n},) to match the images, got {tuple(labels.shape)}")
    if labels.dtype == torch.bool or labels.is_complex():
        raise EvoproxyError(f"{where}: labels must be integer class indices, got {labels.dtype}")
    if labels.is_floating_point() and not (torch.isfinite(labels).all() and torch.equal(labels, labels.round())):
        raise EvoproxyError(f"{where}: labels must be integer class indices (whole numbers)")
    low, high = labels.min().item(), labels.max().item()
    if low < 0 or high > MAX_LABEL:
        raise EvoproxyError(f"{where}: labels must be class indices from 0 to {MAX_LABEL}, found {low:g} to {high:g}")
    return labels.long()


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


def prepared(images, labels, options: DataSettings, where: str) -> Pair:
    """A split of source `where` checked and prepared as the models take it: float32 images channels
    first ((N, H, W) uint8 grey images gain a channel, (N, H, W, C) ones with C ≤ 4 < H are permuted),
    uint8 scaled to [0, 1] then normalised by `options`, every value finite and of magnitude at most
    MAX_MAGNITUDE; int64 labels. An EvoproxyError says what is wrong otherwise."""
    images, labels = _as_tensors(images, labels, where)
    check_header(tuple(images.shape), images.dtype, where)
    if images.dim() < 2 or images.numel() == 0:
        raise EvoproxyError(
            f"{where}: images must be a non-empty array shaped (N, ...), got shape {tuple(images.shape)}"
        )
    labels = _check_labels(labels, len(images), where)
    if images.dtype == torch.uint8 and images.dim() == 3:  # (N, H, W) grey images
        images = images.unsqueeze(1)
    elif images.dim() == 4 and images.shape[-1] in (1, 3, 4) and images.shape[1] > 4:
        images = images.permute(0, 3, 1, 2)  # (N, H, W, C) as most image tools store it: C ≤ 4 < H
    images = _as_float(images.contiguous(), options, where)
    bad = ~(images.abs() <= MAX_MAGNITUDE)  # NaN compares false: it counts as bad
    if bad.any():
        i = int(bad.flatten(1).any(1).nonzero()[0])
        raise EvoproxyError(
            f"{where}: image {i} holds {images[i][bad[i]][0].item()} once prepared: values must be finite and of "
            f"magnitude at most {MAX_MAGNITUDE:g} (check the data, and mean and std)"
        )
    return images, labels
