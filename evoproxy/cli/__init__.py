"""The `evoproxy` command line."""

from __future__ import annotations

import argparse
import sys
import warnings

from ..errors import EvoproxyError, EvoproxyWarning, ParameterError
from ..version import __version__
from . import allocation, allocators, bench, evolve, export, latency, model, quant, runs, validity
from .args import CommandParser, flag_for

# In the data flow's order, as --help lists them (show, runs and validity after evolve; latency, the
# table a latency budget reads, before allocate).
GROUPS = (model, bench, evolve, runs, validity, latency, allocation, allocators, quant, export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evoproxy",
        description=__doc__ + " Evolve training-free proxies for "
        "mixed-precision quantization and use them to allocate bit-widths.",
    )
    parser.add_argument("--version", action="version", version=f"evoproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)
    for group in GROUPS:
        group.register(sub)
    return parser


_default_format = warnings.formatwarning


def _one_line(message, category, filename, lineno, line=None) -> str:
    """Our warnings as one line, like our errors; any other warning as Python prints it."""
    if issubclass(category, EvoproxyWarning):
        return f"evoproxy: warning: {message}\n"
    return _default_format(message, category, filename, lineno, line)


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EvoproxyError as exc:  # a setting out of range is worded with its flag, as the user gave it
        from ..table import printable  # here, not at the top: building the parser loads no other module

        message = exc.worded(flag_for(exc)) if isinstance(exc, ParameterError) else exc
        print(f"evoproxy {args.command}: error: {printable(message)}", file=sys.stderr)  # names from files: data
        return 2
    except KeyboardInterrupt:
        print("evoproxy: interrupted", file=sys.stderr)
        return 130
    return 0
