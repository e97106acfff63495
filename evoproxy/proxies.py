"""The one interface every proxy offers (evolved genome, handcrafted method, user function), and
the lookup `get_proxy`. Later stages (fitness, ranking, allocation) only use this interface.

A proxy gives one sensitivity per layer; a bit configuration b (one bit-width per layer, in the
layer registry's order) scores Σ_l b_l·s_l, higher meaning better predicted accuracy (EMQ,
equation 3). A proxy may override `score` where its method defines a bit-dependent score.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Protocol, runtime_checkable

import torch

from .errors import EvoproxyError
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
        raise EvoproxyError(f"bit configurations must have shape ({n_layers},) or (M, {n_layers}), "
                            f"one bit-width per layer; got {tuple(b.shape)}")
    return b


def bit_score(sensitivities: torch.Tensor, bits) -> torch.Tensor:
    """Σ_l b_l·s_l for `bits` of shape (L,) (gives a 0-d tensor) or (M, L) (gives (M,))."""
    return as_bits(bits, len(sensitivities)) @ sensitivities


class FunctionProxy:
    """A proxy from a function `fn(stats) -> per-layer sensitivities` (any sequence of L numbers
    or a tensor), scored Σ_l b_l·s_l."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name = fn, name
        self.__doc__ = fn.__doc__

    def sensitivities(self, stats) -> torch.Tensor:
        result = self.fn(stats)
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


def load_function_proxy(ref: str) -> FunctionProxy:
    """The user function `package.module:function` (taking a ModelStats and returning one
    sensitivity per layer) as a proxy. Importing the module runs the user's code."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise EvoproxyError(f"a function proxy is written package.module:function, got {ref!r}")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        raise EvoproxyError(f"cannot import {module_name}: {exc}") from None
    except AttributeError:
        raise EvoproxyError(f"module {module_name} has no attribute {attr}") from None
    if not callable(fn):
        raise EvoproxyError(f"{ref} is not callable")
    return FunctionProxy(fn, ref)


def available_proxies() -> list[str]:
    """Names `get_proxy` knows (besides genome files and module:function references)."""
    from .methods.handcrafted import HANDCRAFTED
    return list(HANDCRAFTED)


def get_genome(name: str):
    """A proxy as a genome, to start a search from: a handcrafted proxy that has a genome form
    (fisher, emq-paper), a genome JSON file, or a run directory (its best.json)."""
    from .genome import Genome
    from .methods.handcrafted import GENOME_FORMS, genome_form
    if name in GENOME_FORMS:
        return genome_form(name)
    proxy = get_proxy(name) if name.endswith(".json") or Path(name).is_dir() else None
    if not isinstance(proxy, Genome):
        raise EvoproxyError(f"{name!r} is not a genome: use {', '.join(GENOME_FORMS)}, a genome .json file "
                            "or a run directory")
    return proxy


def get_proxy(name: str) -> Proxy:
    """A proxy by name: a handcrafted one (see `available_proxies`), a genome JSON file (a path
    ending in .json; loading it runs no code), a run directory `runs/<name>/` (its best.json), or a
    user function `package.module:function`."""
    from .methods.handcrafted import HANDCRAFTED
    if name in HANDCRAFTED:
        return HANDCRAFTED[name]()
    if Path(name).is_dir():
        name = str(Path(name) / "best.json")
    if name.endswith(".json"):
        from .genome import Genome
        return Genome.load(Path(name))
    if ":" in name:
        return load_function_proxy(name)
    raise EvoproxyError(f"unknown proxy {name!r}: use one of {', '.join(HANDCRAFTED)}, a genome .json file "
                        "or package.module:function")
