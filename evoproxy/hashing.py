"""Content hashes of tensors, used to key caches and to identify models and batches."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def tensors_hash(items: Iterable[tuple[str, torch.Tensor]]) -> str:
    """SHA-256 (hex) over (name, dtype, shape, bytes) of each named tensor, in order."""
    h = hashlib.sha256()
    for name, t in items:
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
