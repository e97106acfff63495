"""Binary operations. Each takes tensor ⊗ tensor (equal shapes; the engine reports a shape
mismatch as an invalid candidate rather than broadcasting by accident), tensor ⊗ scalar,
scalar ⊗ tensor or scalar ⊗ scalar: four variants each."""

from __future__ import annotations

import torch

from .base import Guard, guarded, primitive


@primitive(
    "add",
    arity=2,
    template="({0} + {1})",
    sympy=lambda a, b: a + b,
    commutative=True,
    weight=2.0,
    domain="all reals; OSP samples it more often, as it rarely breaks a candidate (EMQ, Sec. 3.2)",
)
def add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + b


@primitive("sub", arity=2, template="({0} - {1})", sympy=lambda a, b: a - b, domain="all reals")
def sub(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a - b


@primitive(
    "mul",
    arity=2,
    template="({0} · {1})",
    sympy=lambda a, b: a * b,
    commutative=True,
    domain="element-wise (Hadamard) product",
)
def mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a * b


@primitive(
    "div",
    arity=2,
    template="({0} / ({1} ± ε))",
    sympy=lambda a, b: a / Guard(b),
    domain="protected: a / (b + ε) for b ≥ 0, a / (b − ε) for b < 0",
)
def div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a / guarded(b)
