"""The operation library of evoproxy: every primitive a proxy may use, each defined once.

Adding an operation means adding one `@primitive(...)`-decorated torch function to one of the
modules below (unary, reductions, binary); search spaces then name it, and the engine (genome
evaluation, formula, sympy, export, hashing) picks it up without change.
"""

from .base import EPS, KINDS, OPS, SCALAR, TENSOR, Guard, Op, guarded, primitive
from .inputs import BIT_INPUTS, FACTORS, INPUTS, Input, LazyPerBitInput, load_inputs
from .symbolic import EPS_SYMBOL, NUMERIC
from . import binary, reductions, unary  # noqa: F401  (importing them registers their operations)

__all__ = [
    "BIT_INPUTS",
    "EPS",
    "EPS_SYMBOL",
    "FACTORS",
    "Guard",
    "INPUTS",
    "Input",
    "KINDS",
    "LazyPerBitInput",
    "NUMERIC",
    "OPS",
    "Op",
    "SCALAR",
    "TENSOR",
    "guarded",
    "load_inputs",
    "primitive",
]
