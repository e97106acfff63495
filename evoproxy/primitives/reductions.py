"""Aggregations: unary operations that turn a tensor into a scalar (0-d tensor). On a scalar they
act as on a one-element tensor. Search spaces use them inside chains and as the final step
that gives each layer its one sensitivity number."""

from __future__ import annotations

import torch

from .base import EPS, primitive


@primitive("sum", template="Σ({0})", latex=r"\sum\left({0}\right)", reduces=True, domain="all reals")
def sum_op(x: torch.Tensor) -> torch.Tensor:
    return x.sum()


@primitive(
    "mean",
    template="mean({0})",
    latex=r"\operatorname{mean}\left({0}\right)",
    reduces=True,
    domain="the numel-normalized sum Σx/numel (EMQ's element_wise_normalized_sum, whose "
    "+ε only matters for empty tensors, which never occur)",
)
def mean(x: torch.Tensor) -> torch.Tensor:
    return x.mean()


@primitive(
    "l1_mean",
    template="Σ|{0}|/(numel({0})+ε)",
    latex=r"\frac{\sum \left|{0}\right|}{\operatorname{numel}\left({0}\right) + \epsilon}",
    reduces=True,
    nonneg=True,
    domain="Σ|x| / (numel + ε), EMQ's l1_norm (equation 5)",
)
def l1_mean(x: torch.Tensor) -> torch.Tensor:
    return x.abs().sum() / (x.numel() + EPS)


@primitive(
    "frobenius_norm",
    template="‖{0}‖",
    latex=r"\left\|{0}\right\|_F",
    reduces=True,
    nonneg=True,
    domain="sqrt(Σx²) over all elements",
)
def frobenius_norm(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x)


@primitive(
    "std",
    template="std({0})",
    latex=r"\operatorname{std}\left({0}\right)",
    reduces=True,
    nonneg=True,
    domain="population standard deviation; 0 on a scalar",
)
def std(x: torch.Tensor) -> torch.Tensor:
    return x.std(correction=0)


@primitive("max", template="max({0})", latex=r"\max\left({0}\right)", reduces=True, domain="largest element")
def max_op(x: torch.Tensor) -> torch.Tensor:
    return x.max()


@primitive("min", template="min({0})", latex=r"\min\left({0}\right)", reduces=True, domain="smallest element")
def min_op(x: torch.Tensor) -> torch.Tensor:
    return x.min()
