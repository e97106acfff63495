"""`evoproxy allocate --method NAME` (and its older name `evoproxy mpq`): per-layer bit-widths by one
of the allocators of `evoproxy.allocators.ALLOCATORS` (the papers' own methods) instead of a proxy,
under the same budgets and written in the same file as a proxy's allocation. Their flags come from
the registry: one per field of each method's settings class, named as `flag_of` names it."""

from __future__ import annotations

import argparse
import json
import sys
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace

from ..errors import EvoproxyError
from ..files import output_file, write_atomically
from .args import add_data_args, add_model_args, data_source, flag_of, load_user_model
from .bits import (
    add_bit_choice_args,
    add_budget_args,
    budget_text,
    check_budgets,
    size_budget,
    fixed_layers,
    parse_act_bits,
    parse_bits,
)

# Settings that the commands' own --batch-size and --seed give (--seed also draws the training subset).
COMMAND_SETTINGS = ("batch_size", "seed")


def allocators() -> dict:
    """`ALLOCATORS`, imported when a command needs it (so that `evoproxy --help` loads no stage)."""
    from ..allocators import ALLOCATORS

    return ALLOCATORS


def method_list(names: Iterable[str]) -> str:
    """`names` as "a, b or c"."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


@dataclass
class MethodFlag:
    """A flag of the methods: its `flag`, the argparse `kind` of its value (int, float or bool), the
    methods that take it (`uses`: method → the field of its settings that it sets, None for the
    flags of the training subset) and, per method, the help phrase and the default (`helps`)."""

    flag: str
    kind: type
    uses: dict[str, str | None] = field(default_factory=dict)
    helps: dict[str, tuple[str, object]] = field(default_factory=dict)

    @property
    def dest(self) -> str:
        return self.flag[2:].replace("-", "_")

    def help(self, methods: int) -> str:
        """Its help among `methods` methods: phrase and default, after the methods that take it unless all do."""
        by_phrase: dict[tuple[str, object], list[str]] = {}
        for name, phrase in self.helps.items():
            by_phrase.setdefault(phrase, []).append(name)
        parts = []
        for (phrase, default), users in by_phrase.items():
            number = isinstance(default, (int, float)) and not isinstance(default, bool)
            text = phrase.replace("%", "%%") + (f" (default {default:g})" if number else "")
            parts.append(text if len(users) == methods else f"{', '.join(users)}: {text}")
        return "; ".join(parts)


def per_method(values: dict) -> str:
    """Values by method in words: the one value where all are the same, else "edmips 1, adaqat 2"."""
    if len(set(values.values())) <= 1:
        return str(next(iter(values.values()), ""))
    return ", ".join(f"{m} {v}" for m, v in values.items())


def method_flags() -> dict[str, MethodFlag]:
    """The flags of the registry's methods by flag, in registry order: the training subset's
    (--train-images, --train-fraction, --val-images for the methods that read validation images),
    then one per field of each method's settings class but those of `COMMAND_SETTINGS`."""
    registry = allocators()
    fractions = {n: e.train_fraction for n, e in registry.items() if e.train_fraction}
    validation = {n: e.validation_images for n, e in registry.items() if e.validation_images}
    subset = (
        (
            "--train-images",
            int,
            registry,
            "search on this many training images drawn with --seed (default: all"
            + "".join(f", {n} {f * 100:g} %" for n, f in fractions.items())
            + ")",
        ),
        (
            "--train-fraction",
            float,
            registry,
            "search on this fraction of the training images drawn with --seed (default: all"
            + "".join(f", {n} {f:g}" for n, f in fractions.items())
            + ")",
        ),
        (
            "--val-images",
            int,
            validation,
            "held-out training images drawn with --seed apart from the searched ones "
            f"(default {per_method(validation)})",
        ),
    )
    flags = {
        flag: MethodFlag(flag, kind, dict.fromkeys(users), {n: (phrase, None) for n in users})
        for flag, kind, users, phrase in subset
        if users
    }
    for name, entry in registry.items():
        hints = typing.get_type_hints(entry.settings)
        for f in fields(entry.settings):
            if f.name in COMMAND_SETTINGS:
                continue
            flag = flag_of(entry.settings.__name__, f.name)
            kind = next((t for t in typing.get_args(hints[f.name]) if t is not type(None)), hints[f.name])
            known = flags.setdefault(flag, MethodFlag(flag, kind))
            known.uses[name] = f.name
            known.helps[name] = (f.metadata.get("help", f.name.replace("_", " ")), f.default)
    return flags


def add_method_args(p: argparse.ArgumentParser) -> tuple[str, ...]:
    """Add the methods' own flags to `p` and return their destinations (each None unless given, so
    that `allocate` can refuse them beside a proxy)."""
    names = list(allocators())
    group = p.add_argument_group(f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0])
    flags = method_flags()
    for flag in flags.values():
        if flag.kind is bool:
            group.add_argument(flag.flag, dest=flag.dest, action="store_true", default=None, help=flag.help(len(names)))
        else:
            group.add_argument(flag.flag, dest=flag.dest, type=flag.kind, help=flag.help(len(names)))
    return tuple(flag.dest for flag in flags.values())


def methods_help() -> str:
    """How each method of the registry works, for a command's description."""
    return " ".join(f"{name}: {entry.summary}" for name, entry in allocators().items()) + (
        " All train on the data's train part."
    )


def act_bits_note() -> str:
    """What --act-bits means to each method, for its help."""
    groups: dict[tuple[bool, tuple[int, ...]], list[str]] = {}
    for name, entry in allocators().items():
        groups.setdefault((entry.act_per_layer, entry.act_bits), []).append(name)
    return "; ".join(
        f"{', '.join(names)}: "
        + ("each layer's choices" if per_layer else "the choices of its one activation bit-width")
        + ("" if list(bits) == parse_act_bits(None) else f", default {','.join(map(str, bits))}")
        for (per_layer, bits), names in groups.items()
    )


def _settings(args, method: str):
    """The settings of --method from its flags (the settings class's defaults for those left out),
    refusing the flags of other methods."""
    flags = method_flags()
    foreign: dict[tuple[str, ...], list[str]] = {}
    for flag in flags.values():
        if getattr(args, flag.dest) is not None and method not in flag.uses:
            foreign.setdefault(tuple(flag.uses), []).append(flag.flag)
    if foreign:
        uses, given = next(iter(foreign.items()))
        raise EvoproxyError(
            f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of "
            f"--method {', '.join(uses)}, not of {method}"
        )
    if args.train_images is not None and args.train_fraction is not None:
        raise EvoproxyError("give --train-images or --train-fraction, not both")
    values = {"batch_size": args.batch_size, "seed": args.seed}
    values.update((flag.uses[method], getattr(args, flag.dest)) for flag in flags.values() if flag.uses.get(method))
    settings_class = allocators()[method].settings
    return settings_class(**{f.name: values[f.name] for f in fields(settings_class) if values[f.name] is not None})


def search_method(args) -> None:
    """Run --method (an allocator of the registry) under the budget flags and write its bits file."""
    import numpy as np

    from ..allocation import act_bits_label, build_problem, plot_bits
    from ..model import check_device
    from ..quant import WeightFormat, average_bits
    from ..table import format_table

    check_budgets(args)
    method = allocators()[args.method]
    settings = _settings(args, args.method)
    act_choices = parse_act_bits(args.act_bits, ",".join(map(str, method.act_bits)))
    output_file(args.out, "--out")
    output_file(args.plot, "--plot")
    device = check_device(args.device)
    source = data_source(args)
    model, name, layers = load_user_model(args, source)
    problem = build_problem(
        layers,
        np.zeros(len(layers)),
        size_budget(args, layers, WeightFormat()),
        w_bits=parse_bits(args.bits, "--bits"),
        a_bits=act_choices,
        fixed=fixed_layers(args, layers, act_choices),
        bops=None if args.bops_g is None else args.bops_g * 1e9,
    )
    problem.check_feasible()
    data = method.search_data(
        source.training(),
        source.calibration()[0],
        train_images=args.train_images,
        train_fraction=args.train_fraction,
        val_images=args.val_images,
        seed=args.seed,
    )
    knobs = settings.knobs(data)
    print(
        f"{method.title} on {name}: {settings.scope(problem)}; {settings.epochs} epoch(s) on {len(data.train[0])} of "
        f"{len(source.training()[0])} training images" + (f", {knobs}" if knobs else ""),
        flush=True,
    )
    model, data = model.to(device), replace(data, calibration=data.calibration.to(device))

    def log(msg: str) -> None:
        print(f"[{args.method}] {msg}", file=sys.stderr, flush=True)

    result = method.search(model, problem, data, settings, log)
    alloc, record = result.allocation, result.record(model=name)
    record[result.method]["train_images"] = len(data.train[0])
    write_atomically(args.out, json.dumps(record, indent=2) + "\n")
    if args.plot:
        plot_bits(
            [l.name for l in layers],
            alloc.w_bits,
            problem.fixed,
            args.plot,
            f"{method.title} on {name}: {alloc.size_mb:.4f} MB of {budget_text(args)}",
        )
    columns = list(result.columns.items())
    rows = [
        {
            "index": l.index,
            "name": l.name,
            "params": l.params,
            "bits": w,
            "act": a,
            "role": "fixed" if l.index in problem.fixed else "",
            **{f"column {k}": texts[i] for k, (_, texts) in enumerate(columns)},
        }
        for i, (l, w, a) in enumerate(zip(layers, alloc.w_bits, alloc.a_bits))
    ]
    table = [
        ("index", "#"),
        ("name", "layer"),
        ("params", "params"),
        ("bits", "W bits"),
        ("act", "A bits"),
        ("role", ""),
        *((f"column {k}", header) for k, (header, _) in enumerate(columns)),
    ]
    if not (method.act_per_layer and len(act_choices) > 1):  # one activation bit-width: no column
        table.remove(("act", "A bits"))
    print(format_table(rows, [c for c, _ in table], [h for _, h in table]))
    bops_budget = "" if args.bops_g is None else f" (budget {args.bops_g:g} G)"
    print(
        f"size {alloc.size_mb:.6f} MB (budget {budget_text(args)}); BOPs {alloc.bops / 1e9:.4f} G{bops_budget}; "
        f"average {average_bits(layers, alloc.w_bits):.3f} weight bits, {act_bits_label(alloc.a_bits)}"
    )
    found = result.found
    changed = sum(a != b for a, b in zip(zip(alloc.w_bits, alloc.a_bits), zip(found.w_bits, found.a_bits)))
    print(
        f"{result.found_as}: {found.size_mb:.6f} MB, "
        + (
            f"over the budget: projected onto it ({result.projection}), {changed} layer(s) changed"
            if result.projected
            else "within the budget"
        )
        + f"; search {result.seconds:.1f} s"
        + (f", {result.spent}" if result.spent else "")
    )
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))


def _mpq_args(p: argparse.ArgumentParser) -> None:
    """The mpq command's flags, from the registry (added when the command is first used)."""
    names = list(allocators())
    p.description = (
        "Search each layer's weight bits with a mixed-precision method from the papers instead of a proxy "
        "and write the same JSON bit configuration as `evoproxy allocate` (for `evoproxy quantize "
        "--bits-file`); the same as `evoproxy allocate --method METHOD`. " + methods_help()
    )
    p.add_argument("--method", choices=names, default=names[0], help=f"the method (default {names[0]})")
    add_model_args(p)
    add_data_args(p)
    add_budget_args(p)
    add_bit_choice_args(p, act_bits_note())
    p.add_argument(
        "--batch-size",
        type=int,
        help="training batch size (default "
        + per_method({m: e.settings.batch_size for m, e in allocators().items()})
        + ")",
    )
    add_method_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and the shuffles (default 0)")
    p.add_argument("--out", default="alloc.json", help="JSON bit configuration to write (default alloc.json)")
    p.add_argument("--plot", help="PNG file: bits per layer as bars")
    p.set_defaults(func=search_method)


def register(sub) -> None:
    """Add the mpq command (the methods of `allocate --method`, under their older name) to the
    `evoproxy` subcommands `sub`."""
    p = sub.add_parser("mpq", help="the same as `evoproxy allocate --method METHOD` with a method from the papers")
    p.defer(_mpq_args)
