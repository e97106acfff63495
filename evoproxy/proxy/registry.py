"""The lookup of proxies by name, `get_proxy`: handcrafted names, the evolved proxies shipped
with the package, genome JSON files, run directories and user functions
`package.module:function`. It sits above both the genome and the handcrafted proxies, which know
nothing of it."""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path

from ..errors import EvoproxyError
from ..model import asset_path
from ..reference import import_callable
from .base import FunctionProxy, Proxy
from .genome import Genome
from .handcrafted import GENOME_FORMS, HANDCRAFTED, genome_form

# Evolved proxies shipped as genome files, evoproxy/assets/NAME.json. evoproxy-zoo is the result of
# `evoproxy evolve` (the zoo preset, seed 0) on the main bench of every shipped classifier, as the
# search was at commit 6af9ba6 (today's run ends elsewhere: docs/results.md, the shipped result).
SHIPPED = ("evoproxy-zoo",)


def _shipped(name: str) -> Genome:
    return Genome.load(asset_path(f"{name}.json"))


def load_function_proxy(ref: str) -> FunctionProxy:
    """The user function `package.module:function` (taking a ModelStats and returning one
    sensitivity per layer) as a proxy. Importing the module runs the user's code."""
    fn = import_callable(ref, "proxy")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have none: the call will tell
        return FunctionProxy(fn, ref)
    try:
        signature.bind(None)
    except TypeError:
        raise EvoproxyError(
            f"proxy {ref} must take one argument, the model's statistics (a ModelStats), "
            f"and return one sensitivity per layer; it takes {signature}"
        ) from None
    return FunctionProxy(fn, ref)


def _did_you_mean(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def available_proxies() -> list[str]:
    """Names `get_proxy` knows (besides genome files and module:function references)."""
    return [*HANDCRAFTED, *SHIPPED]


def get_genome(name: str) -> Genome:
    """A proxy as a genome, to start a search from: a handcrafted proxy that has a genome form
    (fisher, emq-paper, hawq-v2), a shipped evolved proxy, a genome JSON file, or a run directory
    (its best.json)."""
    if name in GENOME_FORMS:
        return genome_form(name)
    if name in SHIPPED:
        return _shipped(name)
    proxy = get_proxy(name) if name.endswith(".json") or "/" in name or Path(name).is_dir() else None
    if not isinstance(proxy, Genome):
        names = [*GENOME_FORMS, *SHIPPED]
        raise EvoproxyError(
            f"{name!r} is not a genome: {_did_you_mean(name, names)}use {', '.join(names)}, a genome "
            ".json file or a run directory"
        )
    return proxy


def get_proxy(name: str) -> Proxy:
    """A proxy by name: a handcrafted one (see `available_proxies`), a genome JSON file (a path
    ending in .json; loading it runs no code), a run directory `runs/<name>/` (its best.json), or a
    user function `package.module:function`."""
    if name in HANDCRAFTED:
        return HANDCRAFTED[name]()
    if name in SHIPPED:
        return _shipped(name)
    path = Path(name)
    if path.is_dir():
        if not (path / "best.json").is_file():
            raise EvoproxyError(
                f"run directory {name} has no best.json yet: it is written when the run ends "
                "(or is stopped with Ctrl-C)"
            )
        return Genome.load(path / "best.json")
    if name.endswith(".json"):
        return Genome.load(path)
    if ":" in name:
        return load_function_proxy(name)
    if "/" in name:
        raise EvoproxyError(f"no such run directory {name!r} (`evoproxy runs` lists the runs of a folder)")
    raise EvoproxyError(
        f"unknown proxy {name!r}: {_did_you_mean(name, available_proxies())}use one of "
        f"{', '.join(available_proxies())}, a genome .json file, a run directory or "
        "package.module:function"
    )
