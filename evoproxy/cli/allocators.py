"""`evoproxy allocate --method edmips|seam|smpq|adaqat` (and its older name `evoproxy mpq`): per-layer
bit-widths by one of the papers' own methods instead of a proxy, under the same budgets and written in
the same file as a proxy's allocation."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import EvoproxyError
from .args import (
    add_bit_choice_args,
    add_data_args,
    add_model_args,
    data_source,
    fixed_layers,
    load_user_model,
    output_file,
    parse_act_bits,
    parse_bits,
)


# Each method's own flags (default None: refused with another method, the method's default otherwise).
METHOD_FLAGS = {
    "seam": ("lam", "margin"),
    "smpq": ("val_images", "samples", "truncation", "xi", "beta"),
    "adaqat": ("bitops_lambda", "w_lr", "a_lr", "init_w_bits", "init_a_bits", "oscillations", "per_layer"),
}
SEARCH_METHODS = ("edmips", *METHOD_FLAGS)
SUPERNET = ("edmips", "seam", "smpq")  # the methods on EdMIPS's supernet, which --gamma and --alpha-lr steer
ADAQAT_ACT_CHOICES = "2,3,4,5,6,7,8"
# Flags every method reads, with their defaults (None on the command line: `allocate` refuses them with a proxy).
TRAINING_DEFAULTS = {"epochs": 1, "lr": 0.01, "batch_size": 128}
ADAQAT_NOTE = (
    f"edmips, seam, smpq: each layer's choices, mixed in the supernet; adaqat: the choices of its one "
    f"activation bit-width, default {ADAQAT_ACT_CHOICES}"
)
# SEAM searches on a small proxy subset (the paper's 4 %); EdMIPS and SMPQ on the whole train part.
DEFAULT_FRACTION = {"seam": 0.04}


def search_split(train, n: int | None, fraction: float | None, val: int, seed: int):
    """(search, validation) parts of the train part, disjoint and drawn with `seed`: `val` images
    for validation, then `n` images, or `fraction` of the train part, or all the rest, to search on."""
    import torch

    total = len(train[0])
    if not 0 <= val < total:
        raise EvoproxyError(f"--val-images must be from 0 to below {total} (the training images of the data)")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise EvoproxyError(f"--train-fraction must be above 0 and at most 1, got {fraction}")
        n = max(1, round(fraction * total))
    if n is None and val == 0:
        return train, (train[0][:0], train[1][:0])
    left = total - val
    n = left if n is None else n
    if not 1 <= n <= left:
        raise EvoproxyError(
            f"--train-fraction {fraction} gives {n} images, more than the {left} training images beside --val-images"
            if fraction is not None
            else f"--train-images must be between 1 and {left} (the training images of the data"
            f"{', less --val-images' if val else ''})"
        )
    pick = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    search, held = pick[val : val + n], pick[:val]
    return (train[0][search], train[1][search]), (train[0][held], train[1][held])


def search_method(args) -> None:
    """Run --method (edmips, seam, smpq, adaqat) under the budget flags and write its bits file."""
    import numpy as np

    from ..allocation import act_bits_label, average_bits, build_problem, plot_bits
    from ..allocators import (
        AdaqatSettings,
        EdmipsSettings,
        SeamSettings,
        SmpqSettings,
        search_adaqat,
        search_edmips,
        search_seam,
        search_smpq,
    )
    from ..model import check_device
    from ..table import format_table

    for method, flags in [*METHOD_FLAGS.items(), (", ".join(SUPERNET), ("gamma", "alpha_lr"))]:
        given = [f"--{f.replace('_', '-')}" for f in flags if getattr(args, f) is not None]
        if given and args.method not in method.split(", "):
            raise EvoproxyError(
                f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of "
                f"--method {method}, not of {args.method}"
            )
    if args.train_images is not None and args.train_fraction is not None:
        raise EvoproxyError("give --train-images or --train-fraction, not both")
    epochs, lr, batch_size = (
        TRAINING_DEFAULTS[f] if getattr(args, f) is None else getattr(args, f) for f in TRAINING_DEFAULTS
    )
    given = {f: getattr(args, f) for flags in METHOD_FLAGS.values() for f in flags if getattr(args, f) is not None}
    if args.method == "adaqat":
        names = {"bitops_lambda": "lam"}  # --lam is SEAM's
        settings = AdaqatSettings(
            epochs,
            lr=lr,
            batch_size=batch_size,
            seed=args.seed,
            **{names.get(f, f): given[f] for f in METHOD_FLAGS["adaqat"] if f in given},
        )
    else:
        gamma = EdmipsSettings.gamma if args.gamma is None else args.gamma
        alpha_lr = EdmipsSettings.alpha_lr if args.alpha_lr is None else args.alpha_lr
        settings = EdmipsSettings(epochs, gamma, lr, alpha_lr, batch_size, args.seed)
    seam = SeamSettings(**{f: given[f] for f in METHOD_FLAGS["seam"] if f in given})
    smpq = SmpqSettings(**{f: given[f] for f in METHOD_FLAGS["smpq"][1:] if f in given})
    # AdaQAT learns one activation bit-width for all layers among --act-bits; the supernet mixes them per layer.
    act_choices = parse_act_bits(args.act_bits, ADAQAT_ACT_CHOICES if args.method == "adaqat" else "8")
    val_images = (512 if args.val_images is None else args.val_images) if args.method == "smpq" else 0
    fraction = args.train_fraction
    if fraction is None and args.train_images is None:
        fraction = DEFAULT_FRACTION.get(args.method)
    output_file(args.out, "--out")
    output_file(args.plot, "--plot")
    device = check_device(args.device)
    source = data_source(args)
    model, name, layers = load_user_model(args, source)
    problem = build_problem(
        layers,
        np.zeros(len(layers)),
        args.size_mb,
        w_bits=parse_bits(args.bits, "--bits"),
        a_bits=act_choices,
        fixed=fixed_layers(args, layers, act_choices),
        bops=None if args.bops_g is None else args.bops_g * 1e9,
    )
    problem.check_feasible()
    train, val = search_split(source.training(), args.train_images, fraction, val_images, args.seed)
    title = {"edmips": "EdMIPS", "seam": "SEAM", "smpq": "SMPQ", "adaqat": "AdaQAT"}[args.method]
    if args.method == "adaqat":
        what = (
            f"weight bits {','.join(map(str, problem.w_choices))} for {len(problem.free)} layers "
            f"({'one each' if settings.per_layer else 'one for all'}), activation bits "
            f"{','.join(map(str, problem.a_choices))} (one for all layers)"
        )
        knobs = f"λ {settings.lam:g}, η_w {settings.w_lr:g}, η_a {settings.a_lr:g}"
    else:
        acts = f"{act_choices[0]}-bit" if len(act_choices) == 1 else f"{','.join(map(str, act_choices))} per layer"
        what = f"weight bits {','.join(map(str, problem.w_choices))} for {len(problem.free)} layers, activations {acts}"
        knobs = (
            f"γ {settings.gamma:g}"
            + {
                "edmips": "",
                "seam": f", λ {seam.lam:g}, margin {seam.margin:g}",
                "smpq": f", {smpq.samples} Shapley permutations per epoch valued on {len(val[0])} held-out images",
            }[args.method]
        )
    print(
        f"{title} on {name}: {what}; {settings.epochs} epoch(s) on {len(train[0])} of "
        f"{len(source.training()[0])} training images, {knobs}",
        flush=True,
    )
    model, calib = model.to(device), source.calibration()[0].to(device)

    def log(msg: str) -> None:
        print(f"[{args.method}] {msg}", file=sys.stderr, flush=True)

    if args.method == "seam":
        result = search_seam(model, problem, train, calib, settings, seam, log)
    elif args.method == "smpq":
        result = search_smpq(model, problem, train, val, calib, settings, smpq, log)
    elif args.method == "adaqat":
        result = search_adaqat(model, problem, train, calib, settings, log)
    else:
        result = search_edmips(model, problem, train, calib, settings, log)
    alloc, record = result.allocation, result.record(model=name)
    record[args.method]["train_images"] = len(train[0])
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    if args.plot:
        plot_bits(
            [l.name for l in layers],
            alloc.w_bits,
            problem.fixed,
            args.plot,
            f"{title} on {name}: {alloc.size_mb:.4f} MB of {args.size_mb} MB",
        )
    adaqat, act_mix = args.method == "adaqat", args.method != "adaqat" and len(act_choices) > 1

    def shares(probabilities: dict) -> str:
        return " ".join(f"{p:.2f}" for p in probabilities.values())

    rows = [
        {
            "index": l.index,
            "name": l.name,
            "params": l.params,
            "bits": w,
            "act": a,
            "role": "fixed" if l.index in problem.fixed else "",
            "p": f"{row['sensitivity']:.3f}" if adaqat else shares(row.get("probabilities", {})),
            "pa": shares(row.get("act_probabilities", {})),
        }
        for l, w, a, row in zip(layers, alloc.w_bits, alloc.a_bits, record["layers"])
    ]
    table = [
        ("index", "#"),
        ("name", "layer"),
        ("params", "params"),
        ("bits", "W bits"),
        ("act", "A bits"),
        ("role", ""),
        ("p", "N_w" if adaqat else f"softmax(α) over {','.join(map(str, problem.w_choices))}"),
        ("pa", f"softmax(β) over {','.join(map(str, act_choices))}"),
    ]
    table = [(c, h) for c, h in table if act_mix or c not in ("act", "pa")]  # one activation bit-width: no columns
    print(format_table(rows, [c for c, _ in table], [h for _, h in table]))
    bops_budget = "" if args.bops_g is None else f" (budget {args.bops_g:g} G)"
    print(
        f"size {alloc.size_mb:.6f} MB (budget {args.size_mb} MB); BOPs {alloc.bops / 1e9:.4f} G{bops_budget}; "
        f"average {average_bits(layers, alloc.w_bits):.3f} weight bits, {act_bits_label(alloc.a_bits)}"
    )
    found, how = (result.found, "nearest configuration") if adaqat else (result.argmax, "knapsack over log softmax(α)")
    changed = sum(a != b for a, b in zip(zip(alloc.w_bits, alloc.a_bits), zip(found.w_bits, found.a_bits)))
    print(
        (f"found bits (⌈N⌉, A{found.a_bits[0]}): " if adaqat else "argmax α: ")
        + f"{found.size_mb:.6f} MB, "
        + (
            f"over the budget: projected onto it ({how}), {changed} layer(s) changed"
            if result.projected
            else "within the budget"
        )
        + f"; search {result.seconds:.1f} s"
        + (f", {result.details['value_evaluations']} value evaluations" if args.method == "smpq" else "")
    )
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))


METHODS_HELP = (
    "edmips: a supernet mixing each layer's candidate weight bit-widths (LSQ fake quantizers) with "
    "softmax(α) weights, and with several --act-bits its input's activation bit-widths with "
    "softmax(β); loss = cross-entropy + γ × expected size / size at the most bits (+ expected BOPs / "
    "BOPs at the most bits under --bops-g); weights (SGD) and α, β (Adam) updated alternately; the "
    "policy is argmax α, β, projected onto the budget (the most probable configuration within it) "
    "when over. seam: EdMIPS on a small subset (4 %% by default) with SEAM's large-margin "
    "Gaussian-mixture loss on the last layer's input features. smpq: the same supernet, α moved by "
    "Monte Carlo Shapley values of the bit-widths on held-out images. adaqat: fractional weight and "
    "activation bit-widths N (quantizing at ⌈N⌉) learned during QAT by finite differences of "
    "cross-entropy + λ × BitOPs / BitOPs at the most bits, frozen once ⌈N⌉ oscillates; projected "
    "onto the budget (the nearest configuration within it) when over. All train on the data's train "
    "part."
)


def add_method_args(p) -> tuple[str, ...]:
    """Add the methods' own flags to `p` and return their destinations (each None unless given, so
    that `allocate` can refuse them beside a proxy)."""
    group, dests = p.add_argument_group("edmips, seam, smpq and adaqat"), []

    def add(*flags, **kwargs) -> None:
        dests.append(group.add_argument(*flags, **kwargs).dest)

    add("--epochs", type=int, help=f"epochs over the training images (default {TRAINING_DEFAULTS['epochs']})")
    add("--lr", type=float, help=f"SGD learning rate of the weights, cosine to 0 (default {TRAINING_DEFAULTS['lr']})")
    add(
        "--train-images",
        type=int,
        help="search on this many training images drawn with --seed (default: all, seam 4 %%)",
    )
    add(
        "--train-fraction",
        type=float,
        help="search on this fraction of the training images drawn with --seed (seam's default 0.04)",
    )
    add(
        "--gamma",
        type=float,
        help="edmips, seam, smpq: weight of the expected size (and, under --bops-g, BOPs), each relative to the "
        "most bits', in the loss; 0, the default, leaves the budget to the projection",
    )
    add("--alpha-lr", type=float, help="edmips, seam, smpq: Adam learning rate of α (default 0.01)")
    add("--lam", type=float, help="seam: weight λ of the intra-class compactness (default 0.1)")
    add("--margin", type=float, help="seam: class margin m (default 0.3)")
    add(
        "--val-images", type=int, help="smpq: held-out training images the Shapley values are measured on (default 512)"
    )
    add("--samples", type=int, help="smpq: permutations per Shapley round, one round per epoch (default 10)")
    add(
        "--truncation",
        type=float,
        help="smpq: a permutation stops once the value is this far below the whole supernet's "
        "(accuracy fraction, default 0.5)",
    )
    add("--xi", type=float, help="smpq: step ξ of α per round (default 0.1)")
    add("--beta", type=float, help="smpq: momentum β of the Shapley values (default 0.8)")
    add("--bitops-lambda", type=float, help="adaqat: weight λ of the BitOPs relative to the most bits (default 1)")
    add("--w-lr", type=float, help="adaqat: learning rate η_w of N_w (default 0.5)")
    add("--a-lr", type=float, help="adaqat: learning rate η_a of N_a (default 0.5)")
    add("--init-w-bits", type=float, help="adaqat: initial N_w (default: the most of --bits)")
    add("--init-a-bits", type=float, help="adaqat: initial N_a (default: the most of --act-bits)")
    add("--oscillations", type=int, help="adaqat: reversals of ⌈N⌉ after which it is frozen (default 10)")
    add(
        "--per-layer",
        action="store_true",
        default=None,
        help="adaqat: one N_w per free layer instead of one for the network (N_a stays one)",
    )
    return tuple(dests)


def register(sub) -> None:
    """Add the mpq command (the methods of `allocate --method`, under their older name) to the
    `evoproxy` subcommands `sub`."""
    p = sub.add_parser(
        "mpq",
        help="the same as `evoproxy allocate --method edmips|seam|smpq|adaqat`",
        description="Search each layer's weight bits with a mixed-precision method from the papers "
        "instead of a proxy and write the same JSON bit configuration as `evoproxy "
        "allocate` (for `evoproxy quantize --bits-file`); the same as `evoproxy allocate "
        "--method METHOD`. " + METHODS_HELP,
    )
    p.add_argument("--method", choices=SEARCH_METHODS, default="edmips", help="the method (default edmips)")
    add_model_args(p)
    add_data_args(p)
    p.add_argument(
        "--size-mb",
        type=float,
        required=True,
        help="budget on the quantizable layers' size in MB (10^6 bytes; biases at 32 bits)",
    )
    p.add_argument("--bops-g", type=float, help="budget in G bit operations per sample (default: none)")
    add_bit_choice_args(p, ADAQAT_NOTE)
    p.add_argument("--batch-size", type=int, help=f"training batch size (default {TRAINING_DEFAULTS['batch_size']})")
    add_method_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and the shuffles (default 0)")
    p.add_argument("--out", default="alloc.json", help="JSON bit configuration to write (default alloc.json)")
    p.add_argument("--plot", help="PNG file: bits per layer as bars")
    p.set_defaults(func=search_method)
