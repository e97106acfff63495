"""Unary operations that keep a value's kind: element-wise ones (tensor or scalar) and
whole-tensor ones (softmax, z-score, ...; tensors only, on a scalar they would be constant).

Every function returns a new tensor and never writes to its argument (the EMQ reference
operators assign into their input, corrupting cached statistics; this library must not)."""

from __future__ import annotations

import sympy as sp
import torch

from .base import EPS, TENSOR, Guard, guarded, primitive
from .symbolic import EPS_SYMBOL as E


@primitive(
    "no_op",
    template="{0}",
    sympy=lambda x: x,
    weight=2.0,
    domain="identity; OSP samples it more often, which shortens chains (EMQ, Sec. 3.2)",
)
def no_op(x: torch.Tensor) -> torch.Tensor:
    return x


@primitive("abs", template="|{0}|", sympy=sp.Abs, nonneg=True, domain="all reals")
def abs_op(x: torch.Tensor) -> torch.Tensor:
    return x.abs()


@primitive("neg", template="(-{0})", sympy=lambda x: -x, domain="all reals (EMQ's 'revert')")
def neg(x: torch.Tensor) -> torch.Tensor:
    return -x


@primitive(
    "square",
    template="{0}²",
    sympy=lambda x: x**2,
    nonneg=True,
    domain="all reals; above ~1e154 the result is inf and the candidate invalid",
)
def square(x: torch.Tensor) -> torch.Tensor:
    return x * x


@primitive(
    "sqrt",
    template="sqrt(|{0}|)",
    sympy=lambda x: sp.sqrt(sp.Abs(x)),
    nonneg=True,
    domain="protected: sqrt(|x|), defined on all reals",
)
def sqrt(x: torch.Tensor) -> torch.Tensor:
    return x.abs().sqrt()


@primitive(
    "exp",
    template="exp({0})",
    sympy=sp.exp,
    nonneg=True,
    domain="all reals; above ~709 the result is inf and the candidate invalid",
)
def exp(x: torch.Tensor) -> torch.Tensor:
    return x.exp()


@primitive(
    "log",
    template="log(max({0}, 0)+ε)",
    sympy=lambda x: sp.log(sp.Max(x, 0) + E),
    domain="protected: log(max(x, 0) + ε); non-positive inputs give log ε",
)
def log(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(min=0) + EPS).log()


@primitive(
    "abslog",
    template="log(|{0}|+ε)",
    sympy=lambda x: sp.log(sp.Abs(x) + E),
    domain="protected: log(|x| + ε); zero gives log ε",
)
def abslog(x: torch.Tensor) -> torch.Tensor:
    return (x.abs() + EPS).log()


@primitive(
    "reciprocal",
    template="(1/({0} ± ε))",
    sympy=lambda x: 1 / Guard(x),
    domain="protected: 1/(x + ε) for x ≥ 0, 1/(x − ε) for x < 0 (EMQ's 'invert')",
)
def reciprocal(x: torch.Tensor) -> torch.Tensor:
    return 1 / guarded(x)


@primitive("relu", template="max({0}, 0)", sympy=lambda x: sp.Max(x, 0), nonneg=True, domain="all reals")
def relu(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(min=0)


@primitive("sigmoid", template="σ({0})", sympy=lambda x: 1 / (1 + sp.exp(-x)), nonneg=True, domain="all reals")
def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


@primitive("tanh", template="tanh({0})", sympy=sp.tanh, domain="all reals")
def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


@primitive("sign", template="sign({0})", sympy=sp.sign, domain="all reals; sign(0) = 0")
def sign(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x)


@primitive(
    "softmax",
    template="softmax({0})",
    latex=r"\operatorname{softmax}\left({0}\right)",
    accepts=[TENSOR],
    nonneg=True,
    domain="over all elements of the tensor",
)
def softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x.reshape(-1), 0).reshape(x.shape)


@primitive(
    "logsoftmax",
    template="logsoftmax({0})",
    latex=r"\operatorname{logsoftmax}\left({0}\right)",
    accepts=[TENSOR],
    domain="over all elements of the tensor",
)
def logsoftmax(x: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(x.reshape(-1), 0).reshape(x.shape)


@primitive(
    "normalize",
    template="zscore({0})",
    latex=r"\operatorname{zscore}\left({0}\right)",
    accepts=[TENSOR],
    domain="protected: (x − mean) / (std + ε), population std",
)
def normalize(x: torch.Tensor) -> torch.Tensor:
    return (x - x.mean()) / (x.std(correction=0) + EPS)


@primitive(
    "minmax_normalize",
    template="minmax({0})",
    latex=r"\operatorname{minmax}\left({0}\right)",
    accepts=[TENSOR],
    nonneg=True,
    domain="protected: (x − min) / (max − min + ε)",
)
def minmax_normalize(x: torch.Tensor) -> torch.Tensor:
    low = x.min()
    return (x - low) / (x.max() - low + EPS)


@primitive(
    "channel_sum",
    template="Σc({0})",
    latex=r"\sum_{c}\left({0}\right)",
    accepts=[TENSOR],
    domain="sum over all but the first dimension, giving shape (first dim,): per output channel "
    "for W, G, H, V and G×W (the inner sum of Fisher), per sample for A",
)
def channel_sum(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).sum(1)


@primitive(
    "gram",
    template="gram({0})",
    latex=r"\operatorname{gram}\left({0}\right)",
    accepts=[TENSOR],
    domain="X·Xᵀ / numel with X the tensor as (first dim, rest); a vector gives its outer "
    "product. Changes the shape, so most binary partners then mismatch",
)
def gram(x: torch.Tensor) -> torch.Tensor:
    rows = x.reshape(x.shape[0], -1)
    return rows @ rows.T / x.numel()
