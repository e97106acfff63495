"""Sympy side of the primitives: the ε symbol, opaque functions for operations that have no
closed elementary form (reductions, softmax, the ε-guard, ...), and the numeric namespace that
`sympy.lambdify` needs to evaluate them on numbers."""

from __future__ import annotations

from typing import Callable

import sympy as sp
import torch

EPS_SYMBOL = sp.Symbol("epsilon", positive=True)

# Name of each opaque sympy function → its value on one number (for lambdify).
NUMERIC: dict[str, Callable[[float], float]] = {}


def _class_name(name: str) -> str:
    # The "Op" prefix keeps clear of sympy's own classes (Sum, Max, ...), whose printers would
    # otherwise be picked by name.
    return "Op" + "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def opaque_function(
    name: str, latex: str, fn: Callable[[torch.Tensor], torch.Tensor], nonneg: bool = False
) -> type[sp.Function]:
    """A sympy Function class standing for the torch function `fn` of one tensor.

    It prints in LaTeX with `latex` (`{0}` is the operand) and evaluates on a number x as `fn`
    of the one-element tensor [x], which is what the tensor operation gives on a one-element
    statistic (a reduction returns x itself, softmax 1, a z-score 0, ...)."""

    def _latex(self, printer, exp=None) -> str:
        body = latex.replace("{0}", printer._print(self.args[0]))
        # sympy asks a function raised to a power to print the power itself
        return body if exp is None else rf"\left({body}\right)^{{{exp}}}"

    def numeric(x: float) -> float:
        return fn(torch.tensor([float(x)], dtype=torch.float64)).reshape(-1)[0].item()

    attrs = {"nargs": 1, "_latex": _latex, "_eval_is_extended_real": lambda self: True}
    if nonneg:
        attrs["_eval_is_extended_nonnegative"] = lambda self: True
    cls = type(_class_name(name), (sp.Function,), attrs)
    NUMERIC[cls.__name__] = numeric
    return cls
