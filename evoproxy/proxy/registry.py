"""The lookup of proxies by name, `get_proxy`: handcrafted names, the evolved proxies shipped
with the package, genome JSON files, run directories and user functions
`package.module:function`. It sits above both the genome and the handcrafted proxies, which know
nothing of it."""
from __future__ import annotations

from pathlib import Path

from ..errors import EvoproxyError
from ..model import asset_path
from ..reference import import_callable
from .base import FunctionProxy, Proxy
from .genome import Genome
from .handcrafted import GENOME_FORMS, HANDCRAFTED, genome_form

# Evolved proxies shipped as genome files, evoproxy/assets/NAME.json. evoproxy-zoo is the result of
# `evoproxy evolve` (the zoo preset, seed 0) on the main bench of every shipped model.
SHIPPED = ("evoproxy-zoo",)


def _shipped(name: str) -> Genome:
    return Genome.load(asset_path(f"{name}.json"))


def load_function_proxy(ref: str) -> FunctionProxy:
    """The user function `package.module:function` (taking a ModelStats and returning one
    sensitivity per layer) as a proxy. Importing the module runs the user's code."""
    return FunctionProxy(import_callable(ref, "proxy"), ref)


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
    proxy = get_proxy(name) if name.endswith(".json") or Path(name).is_dir() else None
    if not isinstance(proxy, Genome):
        raise EvoproxyError(f"{name!r} is not a genome: use {', '.join([*GENOME_FORMS, *SHIPPED])}, a genome "
                            ".json file or a run directory")
    return proxy


def get_proxy(name: str) -> Proxy:
    """A proxy by name: a handcrafted one (see `available_proxies`), a genome JSON file (a path
    ending in .json; loading it runs no code), a run directory `runs/<name>/` (its best.json), or a
    user function `package.module:function`."""
    if name in HANDCRAFTED:
        return HANDCRAFTED[name]()
    if name in SHIPPED:
        return _shipped(name)
    if Path(name).is_dir():
        name = str(Path(name) / "best.json")
    if name.endswith(".json"):
        return Genome.load(Path(name))
    if ":" in name:
        return load_function_proxy(name)
    raise EvoproxyError(f"unknown proxy {name!r}: use one of {', '.join(available_proxies())}, a genome .json file "
                        "or package.module:function")
