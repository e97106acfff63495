"""`evoproxy bench build|show` and `evoproxy rank`: benchmarks of measured bit configurations, and
the ranking of proxies on them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import EvoproxyError
from .args import (
    EVAL_SIZE,
    TEXT_EVAL_SIZE,
    add_data_args,
    add_model_args,
    add_perturb_around_arg,
    data_source,
    evaluated_on,
    exclude_patterns,
    load_user_model,
    resolve_proxies,
)
from .bits import add_weight_format_args, parse_bits, parse_fixed, weight_format_args
from .parallel import add_backend_args, parallel_backend


def cmd_bench_build(args) -> None:
    from ..bench import build_bench, describe
    from ..table import printable_lines
    from ..model import check_device
    from ..quant import QuantSettings

    backend = parallel_backend(args, lambda msg: print(msg, file=sys.stderr))  # before any work
    source = data_source(args)
    model, name, layers = load_user_model(args, source)
    calib, images, labels = source.ptq_data(args.eval_size, most=EVAL_SIZE)
    provenance = {
        "weights": str(Path(args.weights).resolve()) if args.weights else None,
        "output": args.output,
        "exclude": list(exclude_patterns(args.exclude)) or None,
        "data": None if source.is_default else source.describe(),
    }
    bench = build_bench(
        Path(args.out),
        model,
        name,
        layers,
        calib,
        images,
        labels,
        bit_choices=parse_bits(args.bits, "--bits"),
        n_configs=args.configs,
        fixed=parse_fixed(args.fixed, layers, args.fixed_bits),
        settings=QuantSettings(args.act_bits, not args.no_bn_recal, **weight_format_args(args)),
        seed=args.seed,
        jobs=args.jobs,
        backend=backend,
        device=check_device(args.device),
        eval_desc={
            "dataset": "fashion-mnist" if evaluated_on(args) == "fmnist" else evaluated_on(args),
            "split": "test",
            "first": len(images),
        },
        name=args.name,
        provenance={k: v for k, v in provenance.items() if v is not None},
    )
    print(printable_lines(describe(bench)))


def cmd_bench_show(args) -> None:
    from ..bench import describe, load_bench, shipped_benches
    from ..table import printable_lines

    for ref in args.bench or shipped_benches():
        print(printable_lines(describe(load_bench(ref))))


def cmd_rank(args) -> None:
    from ..bench import TABLE_COLUMNS, TABLE_HEADERS, bench_stats, check_draws, load_bench, plot_ranking, rank_proxy
    from ..model import check_device
    from ..proxy import perturbations_around
    from ..stats import StatsSettings, quant_errors
    from ..table import format_table, printable, printable_lines

    check_draws(args.samples, args.repeats, args.seed)  # before the statistics
    bench = load_bench(args.bench)
    proxies = resolve_proxies(args.proxies)
    entries = bench.split(args.split)
    if len(entries) < 2:
        raise EvoproxyError(f"the {args.split} split of {bench.name} has {len(entries)} configurations; need 2 or more")
    log = (lambda msg: None) if args.json else (lambda msg: print(f"[stats] {msg}", file=sys.stderr))
    settings = StatsSettings(perturb_around=perturbations_around(proxies, args.perturb_around))
    stats, stats_seconds, _ = bench_stats(
        bench, settings=settings, weights=args.weights, log=log, data=args.data, device=check_device(args.device)
    )
    with quant_errors.reporting(len(stats.layers), log):  # the proxies' first reads of Q take long on a big model
        results = [rank_proxy(p, stats, entries, args.samples, args.repeats, args.seed) for p in proxies]
    if args.plot:
        plot_ranking(results, entries, args.plot)
    if args.json:
        print(
            json.dumps(
                {
                    "bench": bench.name,
                    "split": args.split,
                    "configs": len(entries),
                    "samples": args.samples,
                    "repeats": args.repeats,
                    "stats_seconds": stats_seconds,
                    "results": [r.to_dict() for r in results],
                },
                indent=2,
            )
        )
        return
    rows = []
    for r in results:
        row = {**r.table_row(r.proxy), "ms": 1e3 * r.seconds_per_config}
        if r.error:
            row.update({k: r.error for k in ("rho@20%", "rho@50%", "rho@100%")})
        rows.append(row)
    print(
        f"{printable(bench.name)}, {args.split} split: {len(entries)} configurations; ρ in %, mean ± std over "
        f"{args.repeats} draws of {args.samples or 'all'}; mean ρ (all) and τ over the whole split"
        + (f"; perturbations measured around {b} bits" if (b := stats.settings.perturb_around) is not None else "")
    )
    print(printable_lines(format_table(rows, [*TABLE_COLUMNS, "ms"], [*TABLE_HEADERS, "ms/config"])))  # proxy names
    print(f"statistics (computed once, cached): {stats_seconds:.2f} s")
    if args.plot:
        print(f"wrote {args.plot}")


def register(sub) -> None:
    """Add the bench and rank commands to the `evoproxy` subcommands `sub`."""
    bench = sub.add_parser(
        "bench",
        help="build or inspect benchmarks of bit configurations with measured accuracy or perplexity",
        description="Benchmarks (MQ-Bench style) hold bit configurations of one model and their "
        "measured post-training-quantization accuracy.",
    )
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    p = bsub.add_parser(
        "build",
        help="measure configurations into a bench file (resumable)",
        description="Sample distinct bit configurations (seeded), fake-quantize the model for each "
        "(weights per-channel MSE-clipped, activations per-tensor, BatchNorm "
        "re-estimated), measure test accuracy on --data and append the results to --out, "
        "16 configurations at a time, in sorted order so that neighbours share the "
        "work of their common leading layers. Rerunning the same command continues a "
        "killed build; a larger --configs adds the configurations the file lacks.",
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--bits", default="2,3,4", help="weight bit choices per layer (default 2,3,4)")
    p.add_argument("--configs", type=int, default=500, help="number of distinct configurations (default 500)")
    p.add_argument(
        "--fixed",
        help="layers kept at --fixed-bits: first, last, indices or names, or none (default first,last; language "
        "models none)",
    )
    p.add_argument("--fixed-bits", type=int, default=8)
    p.add_argument(
        "--act-bits", type=int, help="activation bits of every layer (default 8; language models 32: weights only)"
    )
    p.add_argument(
        "--no-bn-recal", action="store_true", help="do not re-estimate BatchNorm statistics after weight quantization"
    )
    add_weight_format_args(p)
    p.add_argument(
        "--eval-size",
        type=int,
        help=f"first N test images used (default: all, up to {EVAL_SIZE}; language models {TEXT_EVAL_SIZE} windows)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the configuration sampling")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="joblib worker processes of one thread each; -1: one per core (on 2 cores, 1.1× as fast as "
        "one worker; default 1, with a thread per core); with --backend dask, every worker of the cluster",
    )
    add_backend_args(p)
    p.add_argument("--name", help="bench name (default: the file name)")
    p.add_argument("--out", required=True, help="bench file to write or continue (.jsonl)")
    p.set_defaults(func=cmd_bench_build)

    p = bsub.add_parser("show", help="summarise benchmarks (default: the shipped ones)")
    p.add_argument("bench", nargs="*", help="shipped bench names or bench files")
    p.set_defaults(func=cmd_bench_show)

    p = sub.add_parser(
        "rank",
        help="rank proxies on a benchmark by Spearman@topk (EMQ Table 1)",
        description="Score each configuration of a benchmark split with each proxy "
        "(Σ_l b_l·s_l unless the proxy defines its own score) and report Spearman ρ on "
        "the top 20 %, 50 % and 100 % by measured accuracy (EMQ eq. 4), over repeated "
        "draws of --samples configurations, plus Kendall τ over the whole split.",
    )
    p.add_argument("--bench", default="fmnist-resnet20-w234", help="shipped bench name or bench file")
    p.add_argument(
        "--proxies", default="all", help="all, or comma-separated names, genome .json files or package.module:function"
    )
    p.add_argument("--samples", type=int, default=50, help="configurations per draw (0 = the whole split)")
    p.add_argument("--repeats", type=int, default=5, help="number of draws (default 5)")
    p.add_argument("--split", default="held-out", choices=["search", "held-out", "all"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--weights", help="the state_dict the bench was made with, if it is no longer where the bench records it"
    )
    p.add_argument("--data", help="the data the bench was made on, if it is no longer where the bench records it")
    p.add_argument("--device", default="cpu", help="torch device the statistics are computed on (default cpu)")
    add_perturb_around_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", help="PNG file: score against accuracy per proxy, coloured by size")
    p.set_defaults(func=cmd_rank)
