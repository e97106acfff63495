"""`evoproxy mpq`: per-layer bit-widths by one of the papers' own methods (EdMIPS) instead of a proxy,
under the same budget and written in the same file as `evoproxy allocate` writes."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import EvoproxyError
from .args import add_data_args, add_model_args, data_source, load_user_model, output_file, parse_bits, parse_fixed


def _train_subset(train, n: int | None, seed: int):
    """The whole train part, or `n` of its images drawn with `seed`."""
    import torch
    if n is None:
        return train
    if not 1 <= n <= len(train[0]):
        raise EvoproxyError(f"--train-images must be between 1 and {len(train[0])} (the training images of the data)")
    pick = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(seed))[:n]
    return train[0][pick], train[1][pick]


def cmd_mpq(args) -> None:
    import numpy as np

    from ..allocation import average_bits, build_problem, plot_bits
    from ..methods import EdmipsSettings, search_edmips
    from ..model import check_device
    from ..table import format_table

    settings = EdmipsSettings(args.epochs, args.gamma, args.lr, args.alpha_lr, args.batch_size, args.seed)
    output_file(args.out, "--out")
    output_file(args.plot, "--plot")
    device = check_device(args.device)
    source = data_source(args)
    model, name, layers = load_user_model(args, source)
    fixed = {i: (b, args.act_bits) for i, b in parse_fixed(args.fixed, layers, args.fixed_bits).items()}
    problem = build_problem(layers, np.zeros(len(layers)), args.size_mb, w_bits=parse_bits(args.bits, "--bits"),
                            a_bits=(args.act_bits,), fixed=fixed)
    problem.check_feasible()
    train = _train_subset(source.training(), args.train_images, args.seed)
    print(f"EdMIPS on {name}: weight bits {','.join(map(str, problem.w_choices))} for {len(problem.free)} layers, "
          f"activations {args.act_bits}-bit; {settings.epochs} epoch(s) on {len(train[0])} training images, "
          f"γ {settings.gamma:g}", flush=True)
    result = search_edmips(model.to(device), problem, train, source.calibration()[0].to(device), settings,
                           lambda msg: print(f"[edmips] {msg}", file=sys.stderr, flush=True))
    alloc, record = result.allocation, result.record(model=name)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    if args.plot:
        plot_bits([l.name for l in layers], alloc.w_bits, problem.fixed, args.plot,
                  f"EdMIPS on {name}: {alloc.size_mb:.4f} MB of {args.size_mb} MB")
    rows = [{"index": l.index, "name": l.name, "params": l.params, "bits": w,
             "role": "fixed" if l.index in problem.fixed else "",
             "p": " ".join(f"{p:.2f}" for p in row.get("probabilities", {}).values())}
            for l, w, row in zip(layers, alloc.w_bits, record["layers"])]
    print(format_table(rows, ["index", "name", "params", "bits", "role", "p"],
                       ["#", "layer", "params", "W bits", "", f"softmax(α) over {','.join(map(str, problem.w_choices))}"]))
    print(f"size {alloc.size_mb:.6f} MB (budget {args.size_mb} MB); BOPs {alloc.bops / 1e9:.4f} G; average "
          f"{average_bits(layers, alloc.w_bits):.3f} weight bits")
    changed = sum(a != b for a, b in zip(alloc.w_bits, result.argmax.w_bits))
    print(f"argmax α: {result.argmax.size_mb:.6f} MB, "
          + (f"over the budget: projected onto it (knapsack over log softmax(α)), {changed} layer(s) changed"
             if result.projected else "within the budget") + f"; search {result.seconds:.1f} s")
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))


def register(sub) -> None:
    """Add the mpq command to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser("mpq", help="per-layer bit-widths by a competing method (EdMIPS) under a size budget",
                       description="Search each layer's weight bits with a mixed-precision method from the papers "
                                   "instead of a proxy, training on the data's train part, and write the same JSON bit "
                                   "configuration as `evoproxy allocate` (for `evoproxy quantize --bits-file`). "
                                   "edmips: a supernet mixing each layer's candidate bit-widths (LSQ fake quantizers) "
                                   "with softmax(α) weights; loss = cross-entropy + γ × expected size / size at the most "
                                   "bits; weights (SGD) and α (Adam) updated alternately; the policy is argmax α, "
                                   "projected onto the budget (the most probable configuration within it) when over.")
    p.add_argument("--method", choices=("edmips",), default="edmips", help="the method (default edmips)")
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--size-mb", type=float, required=True,
                   help="budget on the quantizable layers' size in MB (10^6 bytes; biases at 32 bits)")
    p.add_argument("--bits", default="2,3,4", help="weight bit choices per layer (default 2,3,4)")
    p.add_argument("--act-bits", type=int, default=8, help="activation bits of every layer (default 8)")
    p.add_argument("--fixed", default="first,last",
                   help="layers kept at --fixed-bits weights: first, last, indices or names, or none "
                        "(default first,last)")
    p.add_argument("--fixed-bits", type=int, default=8)
    p.add_argument("--epochs", type=int, default=1, help="epochs over the training images (default 1)")
    p.add_argument("--gamma", type=float, default=0.0,
                   help="weight of the expected size (relative to the size at the most bits) in the loss; 0, the "
                        "default, leaves the budget to the projection")
    p.add_argument("--lr", type=float, default=0.01, help="SGD learning rate of the weights, cosine to 0 (default 0.01)")
    p.add_argument("--alpha-lr", type=float, default=0.01, help="Adam learning rate of α (default 0.01)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default 128)")
    p.add_argument("--train-images", type=int, help="search on this many training images drawn with --seed "
                                                    "(default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and the shuffles (default 0)")
    p.add_argument("--out", default="alloc.json", help="JSON bit configuration to write (default alloc.json)")
    p.add_argument("--plot", help="PNG file: bits per layer as bars")
    p.set_defaults(func=cmd_mpq)
