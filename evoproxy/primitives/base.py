"""What a primitive operation is, and the registry that every operation module adds to.

An operation is defined once, by decorating its torch implementation with `@primitive(...)`.
The decorator records everything else the engine needs: arity, which value kinds it accepts
and what it returns, its sympy counterpart, the formula template, the default OSP weight and
its domain rule. Values are float64 tensors; a "scalar" is a 0-d tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import sympy as sp
import torch

from .symbolic import opaque_function

TENSOR, SCALAR = "tensor", "scalar"
KINDS = (TENSOR, SCALAR)
EPS = 1e-9  # the ε of every protected operation (the EMQ code uses the same value)


def guarded(y: torch.Tensor) -> torch.Tensor:
    """`y` moved ε away from zero, keeping its sign (zero counts as positive): the protected
    denominator of div and reciprocal, never zero."""
    return torch.where(y >= 0, y + EPS, y - EPS)


# sympy counterpart of `guarded`, printed y ± ε.
Guard = opaque_function("guard", r"\left({0} \pm \epsilon\right)", guarded)


@dataclass(frozen=True)
class Op:
    """One primitive. `fn` is the torch implementation (pure: it never modifies its inputs).

    - `arity`: 1 (unary) or 2 (binary).
    - `accepts`: the kinds a unary op takes; binary ops take any pair and return a tensor when
      either operand is one (tensor ⊗ tensor needs equal shapes, checked by the engine).
    - `reduces`: a unary op that returns a scalar (an aggregation); others keep the kind.
    - `template`: the formula string, `{0}`/`{1}` the operands.
    - `sympy`: builds the sympy counterpart from the operands' expressions.
    - `weight`: default operation-sampling-prioritization weight (relative, within its arity).
    - `nonneg`: the output is never negative, whatever the input.
    """

    name: str
    arity: int
    fn: Callable
    sympy: Callable[..., sp.Expr]
    template: str
    accepts: frozenset = frozenset(KINDS)
    reduces: bool = False
    weight: float = 1.0
    commutative: bool = False
    nonneg: bool = False
    domain: str = ""

    def out_kind(self, *kinds: str) -> str:
        """The kind this op returns for operands of `kinds` (which it must accept)."""
        if self.arity == 2:
            return TENSOR if TENSOR in kinds else SCALAR
        return SCALAR if self.reduces else kinds[0]

    @property
    def variants(self) -> int:
        """How many (input kinds → output kind) variants the op has, as the paper counts them."""
        return 4 if self.arity == 2 else len(self.accepts)


OPS: dict[str, Op] = {}


def primitive(
    name: str,
    *,
    template: str,
    sympy: Callable[..., sp.Expr] | None = None,
    latex: str | None = None,
    arity: int = 1,
    accepts=KINDS,
    reduces: bool = False,
    weight: float = 1.0,
    commutative: bool = False,
    nonneg: bool = False,
    domain: str = "",
) -> Callable:
    """Register the decorated torch function as the primitive `name`.

    Give either `sympy` (an exact sympy formula of the operands) or `latex` (a LaTeX template
    with `{0}`): the latter makes an opaque sympy function that prints with that template and,
    evaluated on numbers, runs `fn` on a one-element tensor."""
    if (sympy is None) == (latex is None):
        raise ValueError(f"primitive {name}: give exactly one of sympy= and latex=")

    def register(fn: Callable) -> Callable:
        if name in OPS:
            raise ValueError(f"primitive {name} is defined twice")
        counterpart = sympy or opaque_function(name, latex, fn, nonneg)
        OPS[name] = Op(
            name, arity, fn, counterpart, template, frozenset(accepts), reduces, weight, commutative, nonneg, domain
        )
        return fn

    return register
