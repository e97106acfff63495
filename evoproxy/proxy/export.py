"""Exports of a Genome: a sympy expression (and LaTeX, and a numeric sympy function) and a
standalone Python module that needs torch and the standard library only."""

from __future__ import annotations

import inspect
import textwrap
from functools import lru_cache
from typing import Callable

import numpy as np
import sympy as sp

from .. import primitives
from ..version import __version__
from .graph import INPUT, operands

# One real symbol per statistic field; an input is the product of its fields' symbols.
FIELD_SYMBOLS: dict[str, sp.Symbol] = {
    f: sp.Symbol(f, real=True) for f in dict.fromkeys(f for i in primitives.INPUTS.values() for f in i.factors)
}


def to_sympy(genome) -> sp.Expr:
    """The genome as a sympy expression in the field symbols W, G, A, H, V and ε (`epsilon`).

    Element-wise primitives are exact sympy (log, sqrt, Abs, Max, ...). Whole-tensor ones
    (reductions, softmax, z-score, gram) and the ε-guard of denominators are opaque functions
    that print as their definition in LaTeX and evaluate on numbers as the primitive does on a
    one-element tensor."""
    exprs: list[sp.Expr] = []
    for node, name in enumerate(genome.names):
        if genome.graph.nodes[node]["role"] == INPUT:
            exprs.append(sp.Mul(*(FIELD_SYMBOLS[f] for f in primitives.INPUTS[name].factors)))
        else:
            exprs.append(primitives.OPS[name].sympy(*(exprs[a] for a in operands(genome.graph, node))))
    return exprs[-1]


def to_latex(genome, notation: str = "short") -> str:
    """LaTeX of `to_sympy`; notation "paper" writes the fields as the EMQ paper does."""
    names = {FIELD_SYMBOLS[n]: i.paper_latex for n, i in primitives.INPUTS.items() if i.factors == (n,)}
    return sp.latex(to_sympy(genome), symbol_names=names if notation == "paper" else {})


def sympy_function(genome) -> Callable[[dict[str, float]], float]:
    """A function of {field: number} evaluating the sympy expression numerically (float64,
    overflow gives inf): the genome's value on statistics where every tensor has one element."""
    expr = to_sympy(genome)
    symbols = [s for s in FIELD_SYMBOLS.values() if s in expr.free_symbols]
    fn = sp.lambdify(
        [*symbols, primitives.EPS_SYMBOL], expr, modules=[primitives.NUMERIC, "numpy"], docstring_limit=0
    )  # printing the docstring would double the cost

    def evaluate(fields: dict[str, float]) -> float:
        with np.errstate(all="ignore"):
            return float(fn(*(np.float64(fields[s.name]) for s in symbols), primitives.EPS))

    return evaluate


@lru_cache(maxsize=None)
def _source(fn: Callable) -> str:
    """Source of a function without its decorator, dedented to module level."""
    lines = textwrap.dedent(inspect.getsource(fn)).splitlines()
    return "\n".join(lines[next(i for i, line in enumerate(lines) if line.startswith("def ")) :])


_SHAPE_CHECK = """def _same_shape(a, b):
    if a.shape != b.shape:
        raise ValueError(f"operands of shapes {tuple(a.shape)} and {tuple(b.shape)} do not match")"""


def to_python(genome) -> str:
    """Source of a module defining `sensitivities(stats) -> torch.Tensor (L,)`, where `stats` is
    an evoproxy ModelStats or a list of per-layer mappings/objects with tensors W, G, A, H, V;
    for a bit-aware genome, `score(stats, bits) -> torch.Tensor ()`, the score Σ_l s_l(b_l) of
    one configuration. It runs the same primitive code as the engine, so results agree to the
    last bit."""
    names, graph = genome.names, genome.graph
    used_inputs = tuple(dict.fromkeys(n for node, n in enumerate(names) if graph.nodes[node]["role"] == INPUT))
    used_ops = list(dict.fromkeys(n for node, n in enumerate(names) if graph.nodes[node]["role"] != INPUT))
    fns = {n: primitives.OPS[n].fn for n in used_ops}
    helpers = [_source(primitives.guarded)] if any(n in ("div", "reciprocal") for n in used_ops) else []
    body, checked = [], False
    for node, name in enumerate(names):
        if graph.nodes[node]["role"] == INPUT:
            body.append(f"    v{node} = x[{name!r}]" + ("[b]" if name in primitives.BIT_INPUTS else ""))
            continue
        args = operands(graph, node)
        if len(args) == 2 and all(genome.kinds[a] == primitives.TENSOR for a in args):
            body.append(f"    _same_shape(v{args[0]}, v{args[1]})")
            checked = True
        call = f"    v{node} = {fns[name].__name__}({', '.join(f'v{a}' for a in args)})"
        body.append(call if fns[name].__name__ == name else f"{call}  # {name}")
    body.append(f"    return v{len(names) - 1}")
    factors = {n: primitives.FACTORS[n] for n in used_inputs}
    if genome.bit_aware:
        use = (
            "Call `score(stats, bits)` with an evoproxy ModelStats (or a list of per-layer mappings or\n"
            "objects holding tensors W, G, A, H, V, and Q as a mapping bit-width → tensor) and one\n"
            "bit-width per layer, to get the configuration's score Σ_l s_l(b_l).\n"
        )
        layer_fn = (
            "def layer_value(x, b):\n"
            '    """The proxy on one layer at `b` bits: `x` maps input names to float64 tensors."""\n'
        )
        entry = (
            "def score(stats, bits):\n"
            '    """The score of one configuration, one bit-width per layer (0-d tensor)."""\n'
            "    values = [layer_value(x, b) for x, b in zip(load_inputs(stats, INPUTS), bits)]\n"
            "    return torch.stack(values).sum()"
        )
    else:
        use = (
            "Call `sensitivities(stats)` with an evoproxy ModelStats, or a list of per-layer mappings or\n"
            "objects holding tensors W, G, A, H, V, to get one float64 sensitivity per layer.\n"
        )
        layer_fn = (
            'def layer_sensitivity(x):\n    """The proxy on one layer: `x` maps input names to float64 tensors."""\n'
        )
        entry = (
            'def sensitivities(stats):\n    """One sensitivity per layer: a float64 tensor of shape (L,)."""\n'
            "    return torch.stack([layer_sensitivity(x) for x in load_inputs(stats, INPUTS)])"
        )
    parts = [
        f'"""Mixed-precision quantization proxy exported by evoproxy {__version__}.\n\n'
        f"    {genome.formula()}\n\n"
        f"Canonical hash {genome.wl_hash()}. Needs torch and the Python standard library only.\n"
        + use
        + (
            f"Evolved on output perturbations measured with every other layer at {genome.perturb_around} bits\n"
            f"(`evoproxy stats --perturb-around {genome.perturb_around}`): give it statistics measured so.\n"
            if genome.perturb_around is not None
            else ""
        )
        + '"""\n',
        "from collections.abc import Mapping\nfrom typing import Protocol, runtime_checkable\n\nimport torch",
        f"EPS = {primitives.EPS!r}\nFACTORS = {factors!r}\nINPUTS = {used_inputs!r}",
        *helpers,
        *(_source(fn) for fn in fns.values()),
        inspect.getsource(primitives.LazyPerBitInput).rstrip(),
        _source(primitives.load_inputs),
        *([_SHAPE_CHECK] if checked else []),
        layer_fn + "\n".join(body),
        entry,
    ]
    return parts[0] + "\n" + "\n\n\n".join(parts[1:]) + "\n"
