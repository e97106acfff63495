"""The text shipped in the package for the language model: the King James Version of the Bible
(1611, public domain), 31 102 verses without their references, one per line, 4.1 MB as UTF-8
(plain ASCII), 0.9 MB compressed; from Debian's `bible-kjv-text`. Tokens are its bytes. The data
spec `kjv` names it (tokens.py cuts it into windows)."""

from __future__ import annotations

import lzma

import torch

from .data import asset_path

CORPUS_ASSET = "kjv.txt.xz"


def corpus_bytes() -> torch.Tensor:
    """The whole shipped text as uint8 tokens (4 137 850,)."""
    with lzma.open(asset_path(CORPUS_ASSET)) as f:
        return torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
