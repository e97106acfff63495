"""The proxy stage. Takes ModelStats; gives one sensitivity per layer from any proxy behind the
Proxy interface: genomes (graphs of primitives drawn from a search space, varied, checked,
simplified, exported as Python / sympy / LaTeX), the handcrafted proxies and user functions, found
by name through `get_proxy`."""

from .base import (
    FunctionProxy,
    Proxy,
    as_bits,
    bit_score,
    needs_hessian,
    needs_perturbations,
    perturbations_around,
    validity_reason,
)
from .export import sympy_function, to_latex, to_python, to_sympy
from .genome import Genome
from .graph import AGGREGATE, BINARY, INPUT, ROLES, UNARY, canonical, operands
from .handcrafted import EMQ_EQUATION_5, GENOME_FORMS, HANDCRAFTED, emq_paper, genome_form
from .inputs import LayerInputs, PreparedInputs, n_layers, prepare_inputs
from .program import Evaluation, bit_columns, table_score
from .registry import available_proxies, get_genome, get_proxy, load_function_proxy
from .simplify import Simplification, rewrite, simplify
from .space import SearchSpace, available_spaces, load_space
from .validity import ValidityReport, measure_validity
from .variation import crossover, mutate, sample_genome, space_violation

__all__ = [
    "AGGREGATE",
    "BINARY",
    "EMQ_EQUATION_5",
    "GENOME_FORMS",
    "HANDCRAFTED",
    "INPUT",
    "ROLES",
    "UNARY",
    "Evaluation",
    "FunctionProxy",
    "Genome",
    "LayerInputs",
    "PreparedInputs",
    "Proxy",
    "SearchSpace",
    "Simplification",
    "ValidityReport",
    "as_bits",
    "available_proxies",
    "available_spaces",
    "bit_columns",
    "bit_score",
    "canonical",
    "crossover",
    "emq_paper",
    "genome_form",
    "get_genome",
    "get_proxy",
    "load_function_proxy",
    "load_space",
    "measure_validity",
    "mutate",
    "n_layers",
    "needs_hessian",
    "needs_perturbations",
    "perturbations_around",
    "operands",
    "prepare_inputs",
    "rewrite",
    "sample_genome",
    "simplify",
    "space_violation",
    "sympy_function",
    "table_score",
    "to_latex",
    "to_python",
    "to_sympy",
    "validity_reason",
]
