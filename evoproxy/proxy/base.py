"""The one interface every proxy offers (evolved genome, handcrafted method, user function), and
when its sensitivities are usable. Later stages (fitness, ranking, allocation) only use this
interface.

A proxy gives one sensitivity per layer; a bit configuration b (one bit-width per layer, in the
layer registry's order) scores Σ_l b_l·s_l, higher meaning better predicted accuracy (EMQ,
equation 3). A proxy may override `score` where its method defines a bit-dependent score.
"""

from __future__ import annotations

from typing import Callable, Protocol, runtime_checkable

import torch

from ..errors import EvoproxyError, exception_line
from .inputs import n_layers


@runtime_checkable
class Proxy(Protocol):
    """What ranking and allocation code may rely on."""

    name: str

    def sensitivities(self, stats) -> torch.Tensor:
        """One float64 sensitivity per layer, shape (L,), for a ModelStats."""

    def score(self, stats, bits) -> torch.Tensor:
        """Score of a bit configuration (L,) → 0-d tensor, or of a batch (M, L) → (M,)."""


def as_bits(bits, n_layers: int) -> torch.Tensor:
    """`bits` as a float64 tensor of shape (L,) or (M, L) with L = `n_layers`, or EvoproxyError."""
    b = torch.as_tensor(bits, dtype=torch.float64)
    if b.dim() not in (1, 2) or b.shape[-1] != n_layers:
        raise EvoproxyError(
            f"bit configurations must have shape ({n_layers},) or (M, {n_layers}), "
            f"one bit-width per layer; got {tuple(b.shape)}"
        )
    return b


def bit_score(sensitivities: torch.Tensor, bits) -> torch.Tensor:
    """Σ_l b_l·s_l for `bits` of shape (L,) (gives a 0-d tensor) or (M, L) (gives (M,))."""
    return as_bits(bits, len(sensitivities)) @ sensitivities


MAX_BITS = 32  # the largest bit-width a score Σ b_l·s_l may multiply by
RTOL = 1e-9  # values closer than this (relative to the largest) count as equal


def validity_reason(values: torch.Tensor) -> str | None:
    """None if the sensitivities `values` (shape (L,)) are usable, else why not: a value that is
    nan or inf, the same value for every layer (every configuration with the same total bits
    would tie), every value in {-1, 0, 1} (an indicator, not a sensitivity), or values so large
    that Σ b_l·s_l overflows. "Same" and "in" allow a relative difference of RTOL."""
    if not bool(torch.isfinite(values).all()):
        return "not finite (nan or inf)"
    # Equalities hold up to rounding: softmax sums to 1 only within a few ulps, for instance.
    if bool(values.max() - values.min() <= RTOL * values.abs().max()):
        return "constant across layers"
    # Zero relative to the largest value: tiny sensitivities still rank (Σ b·s ignores scale).
    zero = values.abs() <= RTOL * values.abs().max()
    if bool((zero | ((values.abs() - 1).abs() <= RTOL)).all()):
        return "every value is -1, 0 or 1"
    if not bool(torch.isfinite(values.abs().sum() * MAX_BITS)):
        return "too large: the bit-configuration score overflows"
    return None


def perturbations_around(proxies, given: int | None) -> int | None:
    """The bits every other layer sits at where the output perturbations that `proxies` read are to
    be measured: those a genome was evolved on (Genome.perturb_around), else `given` (None: float).
    EvoproxyError where proxies, or a proxy and `given`, ask for two."""
    wanted = {p.name: b for p in proxies if (b := getattr(p, "perturb_around", None)) is not None}
    if given is not None:
        wanted = {**{n: b for n, b in wanted.items() if b != given}, "--perturb-around": given}
    if len(set(wanted.values())) > 1:
        asked = ", ".join(f"{n} {b} bits" for n, b in wanted.items())
        raise EvoproxyError(f"the output perturbations cannot be measured around two bit-widths at once: {asked}")
    return next(iter(wanted.values()), given)


def needs_hessian(proxy) -> bool:
    """Whether `proxy` reads Hessian statistics (H, its trace or top eigenvalue), which are most of
    the statistics' cost. A proxy that does not say is assumed to."""
    return getattr(proxy, "needs_hessian", True)


def needs_perturbations(proxy) -> bool:
    """Whether `proxy` reads the measured output perturbations (a forward pass per layer and
    bit-width). A proxy that does not say is assumed to."""
    return getattr(proxy, "needs_perturbations", True)


class FunctionProxy:
    """A proxy from a function `fn(stats) -> per-layer sensitivities` (any sequence of L numbers
    or a tensor), scored Σ_l b_l·s_l. `needs_hessian`, `needs_perturbations`: whether `fn` reads
    Hessian statistics, the measured output perturbations (a user's function is assumed to)."""

    def __init__(self, fn: Callable, name: str, needs_hessian: bool = True, needs_perturbations: bool = True):
        self.fn, self.name = fn, name
        self.needs_hessian, self.needs_perturbations = needs_hessian, needs_perturbations
        self.__doc__ = fn.__doc__

    def sensitivities(self, stats) -> torch.Tensor:
        try:
            result = self.fn(stats)
        except Exception as exc:  # the user's code: its failure is a one-line error, like any bad input
            raise EvoproxyError(f"proxy {self.name} raised {exception_line(exc)}") from exc
        try:
            values = torch.as_tensor(result, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise EvoproxyError(f"proxy {self.name} must return one number per layer: {exc}") from None
        if len(values) != n_layers(stats):
            raise EvoproxyError(f"proxy {self.name} returned {len(values)} values for {n_layers(stats)} layers")
        return values

    def score(self, stats, bits) -> torch.Tensor:
        return bit_score(self.sensitivities(stats), bits)

    def __repr__(self) -> str:
        return f"FunctionProxy({self.name!r})"
