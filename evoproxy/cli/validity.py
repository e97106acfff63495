"""`evoproxy validity`: the share of valid proxies in a search space (EMQ Table 3)."""

from __future__ import annotations

import json

from ..errors import EvoproxyError
from .args import add_data_args, add_model_args, exclude_patterns, model_stats


def cmd_validity(args) -> None:
    from ..proxy import load_space, measure_validity
    from ..stats import StatsSettings

    if args.samples < 1:
        raise EvoproxyError("--samples must be at least 1")
    space = load_space(args.space)
    _, _, stats, _ = model_stats(args, StatsSettings(exclude=exclude_patterns(args.exclude), output=args.output))
    report = measure_validity(space, stats, args.samples, osp=not args.no_osp, seed=args.seed)
    if args.json:
        print(
            json.dumps(
                {
                    "space": report.space,
                    "osp": report.osp,
                    "seed": args.seed,
                    "model": stats.model,
                    "samples": report.samples,
                    "valid": report.valid,
                    "rate": report.rate,
                    "reasons": report.reasons,
                },
                indent=2,
            )
        )
        return
    print(
        f"{report.space} space, {'with' if report.osp else 'without'} OSP, seed {args.seed}, {stats.model}: "
        f"{report.valid}/{report.samples} sampled proxies valid ({100 * report.rate:.2f} %)"
    )
    for reason, count in report.reasons.items():
        print(f"  {count:7d}  {reason}")


def register(sub) -> None:
    """Add the validity command to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser(
        "validity",
        help="share of random proxies of a search space that are valid (EMQ Table 3)",
        description="Sample random proxies from a search space, evaluate each on the model's "
        "statistics, and print the share that is valid and why the others are not.",
    )
    p.add_argument(
        "--space",
        default="branched",
        help="search space: sequential, branched, dag or a space TOML file (default branched)",
    )
    p.add_argument("--samples", type=int, default=1000, help="proxies to sample (default 1000)")
    p.add_argument("--no-osp", action="store_true", help="sample operations uniformly, without OSP weights")
    p.add_argument("--seed", type=int, default=0)
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--batch-size", type=int, default=64, help="calibration images used (default 64)")
    p.add_argument("--cache-dir", help="statistics cache (default $EVOPROXY_CACHE_DIR or ~/.cache/evoproxy)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_validity)
