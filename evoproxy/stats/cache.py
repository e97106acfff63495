"""The on-disk cache of the statistics: one entry per (model weights, model behaviour, batch,
settings), a plain blob of tensors with its sha256 beside it, under $EVOPROXY_CACHE_DIR or
~/.cache/evoproxy. The behaviour (the model's output on the batch's first sample) tells apart two
models that share a state_dict but not a forward."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from ..errors import EvoproxyWarning
from ..files import CHECKSUM_MISMATCH, cache_dir, open_with_checksum, save_with_checksum
from ..model import behaviour_hash, weights_hash
from .compute import batch_hash, check_batch, compute_stats
from .model_stats import FORMAT_VERSION, ModelStats, StatsSettings


def _model_key(model: nn.Module, images: torch.Tensor) -> str:
    """The model's weights_hash and behaviour_hash on the first calibration sample."""
    first = images[:1] if not images.is_floating_point() else images[:1].float()  # token ids stay integers
    return f"{weights_hash(model)}+{behaviour_hash(model, first)}"


def _entry_path(model_key: str, batch: str, settings: StatsSettings, cache) -> Path:
    payload = {"model": model_key, "batch": batch, "settings": asdict(settings), "format": FORMAT_VERSION}
    key = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]
    return cache_dir(cache) / f"stats-{key}.pt"


def stats_cache_path(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: StatsSettings,
    cache: str | os.PathLike | None = None,
) -> Path:
    """The cache file of the statistics of (model weights and behaviour, batch, settings)."""
    return _entry_path(_model_key(model, images), batch_hash(images, labels), settings, cache)


def load_stats_file(path: str | os.PathLike | BinaryIO) -> ModelStats:
    """Statistics from a cache file or its open bytes (loading runs no code: plain tensors and numbers)."""
    return ModelStats.from_blob(torch.load(path, weights_only=True))


def _read_cache_entry(path: Path, log) -> ModelStats | None:
    """A cache entry whose bytes match the sha256 recorded beside it; None (recompute) for an
    entry without a checksum (written by an earlier version), a doctored or damaged one."""
    file, sha256 = open_with_checksum(path)
    if sha256 == CHECKSUM_MISMATCH:
        warnings.warn(
            f"the statistics cache entry {path} does not match the checksum recorded beside it "
            "(changed or damaged since it was written); recomputing it",
            EvoproxyWarning,
            stacklevel=3,
        )
        return None
    if file is None:
        log(f"recomputing cache entry {path}: {sha256}")
        return None
    with file:
        try:
            stats = load_stats_file(file)
        except Exception:  # a matching but unreadable entry: another format, recomputed, never trusted
            log(f"recomputing unreadable cache entry {path}")
            return None
    stats.cache_entry = {"path": str(path), "sha256": sha256}
    return stats


def load_or_compute_stats(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    model_name: str = "model",
    settings: StatsSettings = StatsSettings(),
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
    log=lambda msg: None,
    device: str = "cpu",
) -> tuple[ModelStats, bool]:
    """The statistics from the on-disk cache if present and matching the sha256 recorded beside
    it, else computed and stored there with their checksum. Returns them, the entry's path and
    sha256 in their `cache_entry`, and whether they came from the cache. A cache hit gives
    identical tensors. Statistics without the Hessian or the output perturbations are also served
    by a cached entry that has them (they are then simply there)."""
    check_batch(images, labels)
    if not use_cache:
        return compute_stats(model, images, labels, model_name, settings, log, device), False
    model_key, batch = _model_key(model, images), batch_hash(images, labels)
    fuller = [
        replace(settings, hessian=h, perturbations=p)
        for h in dict.fromkeys((True, settings.hessian))
        for p in dict.fromkeys((True, settings.perturbations))
    ]
    for candidate in dict.fromkeys(_entry_path(model_key, batch, s, cache) for s in fuller):
        if candidate.is_file() and (stats := _read_cache_entry(candidate, log)) is not None:
            return stats, True
    stats = compute_stats(model, images, labels, model_name, settings, log, device)
    path = _entry_path(model_key, batch, settings, cache)
    # saved straight to the file: in memory, the bytes would be a second copy of the statistics
    sha256 = save_with_checksum(path, lambda tmp: torch.save(stats.to_blob(), tmp))
    stats.cache_entry = {"path": str(path), "sha256": sha256}
    return stats, False
