"""The shipped language model: a small decoder-only transformer over bytes (vocabulary 256), in
the shape of GPT-2 and Llama blocks (pre-norm, causal self-attention with separate q, k, v and
output projections, a two-layer MLP), so that every projection is an nn.Linear of the layer
registry. Its token embedding and position table are not layers, so they stay at full precision,
as the quantization tools for language models leave them."""

from __future__ import annotations

import math

import torch
from torch import nn

VOCAB = 256  # bytes: any text is a sequence of tokens without a tokenizer


class Attention(nn.Module):
    """Causal multi-head self-attention with four nn.Linear projections."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        split = lambda y: y.view(n, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        # Written out rather than scaled_dot_product_attention, whose CPU kernels have no second
        # derivative: the statistics take Hessian-vector products through it.
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        future = torch.ones_like(scores[0, 0], dtype=torch.bool).triu(1)  # built from the scores: fx traces it
        out = scores.masked_fill(future, float("-inf")).softmax(-1) @ v
        return self.o(out.transpose(1, 2).reshape(n, t, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int, hidden: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class TinyLM(nn.Module):
    """Byte-level decoder-only transformer: token ids (batch, T ≤ `context`) int64 to next-byte
    logits (batch, T, 256). Defaults: 4 blocks of width 256, 4 heads, MLP 1024 (3.36 M parameters;
    24 projections and the output head in the layer registry, 3.22 M)."""

    def __init__(self, dim: int = 256, blocks: int = 4, heads: int = 4, hidden: int = 1024, context: int = 256):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.position = nn.Parameter(torch.zeros(context, dim))
        self.blocks = nn.Sequential(*(Block(dim, heads, hidden) for _ in range(blocks)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, VOCAB)
        nn.init.normal_(self.position, std=0.02)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.position[: tokens.shape[1]]
        return self.head(self.norm(self.blocks(x)))
