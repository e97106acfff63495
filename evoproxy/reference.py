"""A user's `package.module:function` reference (a model factory, a proxy function), imported with
the current folder on the import path, as `python -c` would have it: `--proxy myproxies:fn` works
from the folder that holds myproxies.py without setting PYTHONPATH."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

from .errors import EvoproxyError


def import_callable(ref: str, what: str) -> Callable:
    """The callable that `ref` ("package.module:function") names; EvoproxyError naming `what`
    (say "model" or "proxy") when the reference is malformed, fails to import or is not callable.
    Importing the module runs the user's code."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise EvoproxyError(f"a {what} given as code is written package.module:function, got {ref!r}")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())  # after the installed packages, so it cannot shadow them
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EvoproxyError(f"cannot import {module_name!r} for {what} {ref!r}: {exc}") from None
    target = getattr(module, attr, None)
    if not callable(target):
        raise EvoproxyError(f"{module_name} has no callable {attr!r}: give the {what} as package.module:function")
    return target
