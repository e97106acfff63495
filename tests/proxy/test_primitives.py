"""The operation library: completeness, purity, protection and sympy counterparts."""

import itertools
import math
import re

import pytest
import sympy as sp
import torch

from evoproxy import primitives
from evoproxy.primitives import EPS, EPS_SYMBOL, NUMERIC, OPS, SCALAR, TENSOR

UNARY = [op for op in OPS.values() if op.arity == 1]
BINARY = [op for op in OPS.values() if op.arity == 2]


def _probes() -> list[torch.Tensor]:
    """Tensors and scalars with zeros, negatives, huge, tiny and non-finite values."""
    gen = torch.Generator().manual_seed(0)
    return [
        torch.randn(4, 3, 2, 2, generator=gen, dtype=torch.float64),
        torch.zeros(3, 5, dtype=torch.float64),
        -torch.rand(6, generator=gen, dtype=torch.float64) - 1,
        torch.tensor([[1e300, -1e300], [1e-300, -0.0]], dtype=torch.float64),
        torch.tensor([float("inf"), float("nan"), 1.0], dtype=torch.float64),
        torch.tensor(0.0, dtype=torch.float64),
        torch.tensor(-7.5, dtype=torch.float64),
        torch.tensor(1e308, dtype=torch.float64),
    ]


def _kind(x: torch.Tensor) -> str:
    return SCALAR if x.dim() == 0 else TENSOR


def test_library_covers_the_paper():
    names = set(OPS)
    assert len(UNARY) >= 24 and {op.name for op in BINARY} == {"add", "sub", "mul", "div"}
    assert {
        "no_op",
        "abs",
        "neg",
        "square",
        "sqrt",
        "exp",
        "log",
        "abslog",
        "reciprocal",
        "relu",
        "sigmoid",
        "tanh",
        "softmax",
        "logsoftmax",
        "normalize",
        "minmax_normalize",
        "frobenius_norm",
        "l1_mean",
        "mean",
        "sum",
        "std",
        "max",
        "sign",
        "gram",
    } <= names
    assert sum(op.variants for op in OPS.values()) >= 56
    assert {"A", "G", "W", "H", "V", "GxW"} <= set(primitives.INPUTS)
    for op in OPS.values():
        assert op.domain and op.weight > 0
        assert {int(i) for i in re.findall(r"\{(\d)\}", op.template)} == set(range(op.arity))


@pytest.mark.parametrize("op", UNARY, ids=lambda op: op.name)
def test_unary_ops_are_pure_and_never_raise(op):
    for x in _probes():
        if _kind(x) not in op.accepts:
            continue
        before, version = x.clone(), x._version
        out = op.fn(x)
        assert x._version == version and torch.equal(x.nan_to_num(), before.nan_to_num())
        assert x.isnan().equal(before.isnan())
        assert out.dtype == torch.float64
        assert _kind(out) == op.out_kind(_kind(x))


@pytest.mark.parametrize("op", BINARY, ids=lambda op: op.name)
def test_binary_ops_are_pure_and_never_raise(op):
    probes = _probes()
    for a, b in itertools.product(probes, probes):
        if _kind(a) == _kind(b) == TENSOR and a.shape != b.shape:
            continue  # the engine rejects these before calling the op
        copies, versions = (a.clone(), b.clone()), (a._version, b._version)
        out = op.fn(a, b)
        assert (a._version, b._version) == versions
        assert torch.equal(a.nan_to_num(), copies[0].nan_to_num()) and torch.equal(
            b.nan_to_num(), copies[1].nan_to_num()
        )
        assert _kind(out) == op.out_kind(_kind(a), _kind(b))


@pytest.mark.parametrize("name", ["log", "abslog", "sqrt", "reciprocal"])
def test_protected_unary_ops_are_finite_on_their_whole_domain(name):
    x = torch.tensor([-1e6, -3.0, -1e-12, -0.0, 0.0, 1e-300, 2.0, 1e6], dtype=torch.float64)
    assert torch.isfinite(OPS[name].fn(x)).all()


def test_protected_division_rules():
    a = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    b = torch.tensor([0.0, -0.0, -2.0], dtype=torch.float64)
    assert torch.allclose(OPS["div"].fn(a, b), torch.tensor([1 / EPS, 1 / EPS, 1 / (-2 - EPS)], dtype=torch.float64))
    assert torch.allclose(OPS["reciprocal"].fn(b), OPS["div"].fn(a, b))
    assert OPS["abslog"].fn(torch.tensor(0.0, dtype=torch.float64)).item() == pytest.approx(math.log(EPS))
    assert OPS["log"].fn(torch.tensor(-5.0, dtype=torch.float64)).item() == pytest.approx(math.log(EPS))
    assert OPS["sqrt"].fn(torch.tensor(-4.0, dtype=torch.float64)).item() == 2.0


@pytest.mark.parametrize("op", list(OPS.values()), ids=lambda op: op.name)
def test_sympy_counterpart_matches_on_numbers(op):
    symbols = sp.symbols("a b", real=True)[: op.arity]
    expr = op.sympy(*symbols)
    sp.latex(expr)  # every counterpart prints
    fn = sp.lambdify([*symbols, EPS_SYMBOL], expr, modules=[NUMERIC, "numpy"])
    values = [-2.5, -0.0, 0.0, 0.3, 4.0]
    for args in itertools.product(values, repeat=op.arity):
        tensors = [torch.tensor([v], dtype=torch.float64) for v in args]
        expected = op.fn(*tensors).reshape(-1)[0].item()
        assert float(fn(*args, EPS)) == pytest.approx(expected, rel=1e-12, abs=1e-12), args
