"""`evoproxy allocate` and `evoproxy pareto`: a proxy's bit-widths under one budget, or under a
sweep of budgets beside other proxies."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import EvoproxyError
from ..files import output_file, write_atomically
from .args import (
    EVAL_SIZE,
    TEXT_EVAL_SIZE,
    add_model_args,
    add_stats_args,
    data_source,
    evaluated_on,
    model_stats,
    resolve_proxies,
)
from .bits import (
    add_bit_choice_args,
    add_budget_args,
    add_latency_args,
    budget_text,
    check_budget,
    check_budgets,
    fixed_layers,
    parse_act_bits,
    parse_bits,
    size_budget,
    weight_format_args,
)
from .allocators import act_bits_note, add_method_args, allocators, method_list, methods_help, search_method
from .latency import latency_column, latency_table, latency_text


def _parse_budgets(text: str, flag: str) -> list[float]:
    """--sizes (MB) or --avg-bits (bits per weight): comma-separated budgets, ascending."""
    from ..allocation import MAX_SIZE_MB
    from ..quant import SCALE_BITS

    unit, bound, example = (
        ("MB", MAX_SIZE_MB, "0.08,0.1") if flag == "--sizes" else ("bits", 32.0 + SCALE_BITS, "2.5,3")
    )
    try:
        budgets = sorted({float(x) for x in text.split(",")})
    except ValueError:
        raise EvoproxyError(f"{flag} takes comma-separated budgets in {unit} such as {example}; got {text!r}") from None
    for budget in budgets:
        check_budget(budget, flag, f"{unit} each", bound)
    return budgets


SOLVERS = "ilp (exact, size and BOPs), dp (exact, size only) or sample (the paper's random search)"


def _add_allocation_args(p: argparse.ArgumentParser, methods: bool = False) -> None:
    """Model, bit choices, fixed layers, solver and statistics: what `_proxy_problem` reads; with
    `methods`, the allocators of the registry as further --method choices and their flags."""
    add_model_args(p)
    add_bit_choice_args(p, act_bits_note() if methods else "")
    if methods:
        p.add_argument(
            "--method",
            default="ilp",
            choices=("ilp", "dp", "sample", *allocators()),
            help=f"how: a proxy's solver, {SOLVERS}; or a method from the papers that searches without a "
            f"proxy, training on the data's train part: {method_list(allocators())} (see below; the "
            "same as `evoproxy mpq`). Default ilp",
        )
    else:
        p.add_argument("--method", default="ilp", help=f"solver: {SOLVERS}; default ilp")
    add_stats_args(p, training=methods)
    if methods:
        p.set_defaults(method_flags=add_method_args(p))


def _proxy_problem(proxy, stats, args, size_mb: float, bops: float | None = None):
    """The allocation problem of `proxy` under --bits, --act-bits, --fixed and --fixed-bits (fixed
    layers keep the most of --act-bits activations: with one choice, that one, as in a benchmark)."""
    from ..allocation import proxy_problem

    layers = [layer.info for layer in stats.layers]
    act = parse_act_bits(args.act_bits)
    return proxy_problem(
        proxy,
        stats,
        size_mb,
        bops=bops,
        w_bits=parse_bits(args.bits, "--bits"),
        act_bits=act,
        fixed=fixed_layers(args, layers, act),
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )


def cmd_allocate(args) -> None:
    from ..allocation import act_bits_label, allocate, allocation_record, plot_bits
    from ..proxy import get_proxy
    from ..quant import average_bits
    from ..table import format_table

    check_budgets(args)
    table = latency_table(args)
    if args.method in allocators():
        if args.proxy is not None:
            raise EvoproxyError(
                f"--method {args.method} searches without a proxy: leave out --proxy, or give a "
                "solver (--method ilp, dp or sample) to allocate by the proxy"
            )
        return search_method(args)
    if args.proxy is None:
        raise EvoproxyError(
            f"--method {args.method} allocates by a proxy: give --proxy NAME (e.g. hawq-v2), or "
            f"--method {method_list(allocators())} to search without one"
        )
    given = [f"--{dest.replace('_', '-')}" for dest in args.method_flags if getattr(args, dest) is not None]
    if given:
        raise EvoproxyError(
            f"{', '.join(given)} {'is an option' if len(given) == 1 else 'are options'} of the search "
            f"methods (--method {', '.join(allocators())}), not of the solver {args.method}"
        )
    parse_bits(args.bits, "--bits")  # here, so that bad bits are refused before the statistics
    act_choices = parse_act_bits(args.act_bits)
    output_file(args.out, "--out")
    output_file(args.plot, "--plot")
    proxy = get_proxy(args.proxy)
    _, name, stats, _ = model_stats(args, proxies=[proxy])
    act_choices = parse_act_bits(args.act_bits)  # the data's default, once the model and data are read
    bops = None if args.bops_g is None else args.bops_g * 1e9
    fmt = stats.settings.weight_format
    problem = _proxy_problem(proxy, stats, args, size_budget(args, [layer.info for layer in stats.layers], fmt), bops)
    problem = problem if table is None else problem.with_latency(table, args.latency_ms)
    result = allocate(problem, args.method)
    layers, sensitivities = problem.layers, proxy.sensitivities(stats).tolist()
    write_atomically(
        args.out,
        json.dumps(
            allocation_record(result, layers, sensitivities, model=name, proxy=proxy.name, weight_format=fmt), indent=2
        )
        + "\n",
    )
    if args.plot:
        plot_bits(
            [l.name for l in layers],
            result.w_bits,
            problem.fixed,
            args.plot,
            f"{proxy.name} on {name}: {result.size_mb:.4f} MB of {budget_text(args)}",
        )
    rows = [
        {
            "index": l.index,
            "name": l.name,
            "params": l.params,
            "bits": w,
            "act": a,
            "role": "fixed" if l.index in problem.fixed else "",
            "sensitivity": s,
        }
        for l, w, a, s in zip(layers, result.w_bits, result.a_bits, sensitivities)
    ]
    print(
        f"{proxy.name} on {name}: weight bits {','.join(map(str, problem.w_choices))} per layer, "
        + (
            f"activation bits {','.join(map(str, act_choices))} per layer"
            if len(act_choices) > 1
            else f"activations {act_choices[0]}-bit"
        )
        + (f"; perturbations measured around {b} bits" if (b := stats.settings.perturb_around) is not None else "")
    )
    act_column = (["act"], ["A bits"]) if len(set(result.a_bits)) > 1 else ([], [])
    lat_column = latency_column(rows, table, result)
    print(
        format_table(
            rows,
            ["index", "name", "params", "bits", *act_column[0], *lat_column[0], "role", "sensitivity"],
            ["#", "layer", "params", "W bits", *act_column[1], *lat_column[1], "", "sensitivity"],
        )
    )
    print(
        f"size {result.size_mb:.6f} MB (budget {budget_text(args)}); BOPs {result.bops / 1e9:.4f} G "
        + (f"(budget {args.bops_g} G)" if bops else "(no BOPs budget)")
        + f"; average {average_bits(layers, result.w_bits, fmt):.3f} weight bits ({fmt.describe()}); activations "
        + act_bits_label(result.a_bits)
        + latency_text(result, args)
    )
    print(
        f"{result.method}: {'proven optimal' if result.optimal else 'not proven optimal'} "
        f"in {result.seconds * 1e3:.1f} ms" + (f"; {result.note}" if result.note else "")
    )
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))


def cmd_pareto(args) -> None:
    from ..allocation import act_bits_label, evaluate_points, plot_pareto, sweep
    from ..quant import PtqEvaluator, QuantSettings, size_mb_at_average_bits
    from ..table import format_table

    if (args.sizes is None) == (args.avg_bits is None):
        raise EvoproxyError("give the budgets as --sizes (MB) or as --avg-bits (bits per weight)")
    budgets = _parse_budgets(*((args.sizes, "--sizes") if args.sizes else (args.avg_bits, "--avg-bits")))
    parse_bits(args.bits, "--bits")  # here, so that bad bits are refused before the statistics
    parse_act_bits(args.act_bits)
    if args.plot and not args.evaluate:
        raise EvoproxyError("--plot draws accuracy against size: add --evaluate ptq")
    output_file(args.plot, "--plot")
    proxies = resolve_proxies(args.proxies)
    source = data_source(args)
    model, name, stats, _ = model_stats(args, source=source, proxies=proxies)
    act_choices = parse_act_bits(args.act_bits)  # the data's default, once the model and data are read
    fmt, layers = stats.settings.weight_format, [layer.info for layer in stats.layers]
    sizes = budgets if args.sizes else [size_mb_at_average_bits(layers, b, fmt=fmt) for b in budgets]
    problems = [(p.name, _proxy_problem(p, stats, args, sizes[0])) for p in proxies]
    points = sweep(problems, sizes, args.method)
    fp_accuracy = None
    if args.evaluate:
        # Each point is measured at its own activation bits (evaluate_points); the settings' are the most.
        log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
        evaluator = PtqEvaluator.on_data(
            model,
            problems[0][1].layers,
            len(source.evaluation(args.eval_size, most=EVAL_SIZE)[0]),
            QuantSettings(act_choices[-1], not args.no_bn_recal, **weight_format_args(args)),
            source,
            args.device,
            log,
        )
        fp_accuracy = evaluator.fp_value()
        points = evaluate_points(points, evaluator, log)
    if args.plot:
        plot_pareto(
            points,
            args.plot,
            fp_accuracy,
            f"{name}, PTQ W{args.bits}A{','.join(map(str, act_choices))}"
            f"{'' if args.no_bn_recal else ' with BatchNorm re-estimated'}, first {len(evaluator.images)} test "
            f"images of {evaluated_on(args)}",
        )
    if args.json:
        print(
            json.dumps(
                {
                    "model": name,
                    "sizes_mb": sizes,
                    **({"avg_bits": budgets} if args.avg_bits else {}),
                    "method": args.method,
                    "evaluate": args.evaluate,
                    "eval_size": len(evaluator.images) if args.evaluate else None,
                    "fp_accuracy": fp_accuracy,
                    "points": [p.to_dict() for p in points],
                },
                indent=2,
            )
        )
        return
    rows = [
        {
            "proxy": p.proxy,
            "kind": p.kind,
            "budget": "-" if p.budget_mb is None else p.budget_mb,
            "size": p.size_mb,
            "gbops": p.bops / 1e9,
            "avg": p.avg_bits,
            "act": act_bits_label(p.a_bits),
            "optimal": {True: "yes", False: "no", None: "-"}[p.optimal],
            "acc": p.accuracy,
        }
        for p in points
    ]
    columns, headers = (
        ["proxy", "kind", "budget", "size", "gbops", "avg", "optimal"],
        ["proxy", "kind", "budget (MB)", "size (MB)", "GBOPs", "avg W bits", "optimal"],
    )
    if len(act_choices) > 1:
        columns[6:6], headers[6:6] = ["act"], ["A bits"]
    if args.evaluate:
        metric = evaluator.metric
        columns, headers = columns + ["acc"], headers + ["top-1 (%)" if metric.unit == "%" else metric.title]
        print(
            f"{name}: PTQ {metric.name} on the first {len(evaluator.images)} test "
            f"{'windows' if source.is_text else 'images'} of {evaluated_on(args)}, BatchNorm "
            f"{'kept' if args.no_bn_recal else 're-estimated'}; full precision {metric.format(fp_accuracy)}"
        )
    print(format_table(rows, columns, headers))
    if args.plot:
        print(f"wrote {args.plot}")


def _allocate_args(p: argparse.ArgumentParser) -> None:
    """The allocate command's flags, with the allocators of the registry (added when it is first used)."""
    p.description = (
        "Choose each layer's weight (and with several --act-bits, activation) bits to maximise the proxy's score "
        "(Σ_l b_l·s_l, or the proxy's own bit-dependent score) under the size budget and optionally a BOPs budget "
        f"(multiple-choice knapsack, EMQ eq. 3), or search them without a proxy by --method "
        f"{method_list(allocators())}; print the per-layer bits and write them as a JSON bit configuration. "
        + methods_help()
    )
    p.add_argument(
        "--proxy",
        help="handcrafted name, genome .json file, run directory runs/<name>/ or package.module:function "
        "(needed by the solvers ilp, dp and sample)",
    )
    add_budget_args(p)
    add_latency_args(p)
    _add_allocation_args(p, methods=True)
    p.add_argument("--out", default="alloc.json", help="JSON bit configuration to write (default alloc.json)")
    p.add_argument("--plot", help="PNG file: bits per layer as bars (EMQ Figure 6)")
    p.set_defaults(func=cmd_allocate)


def register(sub) -> None:
    """Add the allocate and pareto commands to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser(
        "allocate",
        help="per-layer bit-widths under a size or average-bits (and BOPs) budget, by a proxy or by a method "
        "from the papers",
    )
    p.defer(_allocate_args)

    p = sub.add_parser(
        "pareto",
        help="allocations of several proxies at several size budgets (EMQ Figure 5)",
        description="Allocate bits with each proxy at each size budget, list them with the "
        "uniform-precision configurations (every free layer at one bit choice) and, "
        "with --evaluate ptq, their post-training-quantization accuracy.",
    )
    p.add_argument(
        "--proxies",
        required=True,
        help="all, or comma-separated names, genome .json files, run directories or package.module:function",
    )
    p.add_argument("--sizes", help="comma-separated size budgets in MB; or --avg-bits")
    p.add_argument("--avg-bits", help="comma-separated budgets in bits per weight (scales included); or --sizes")
    _add_allocation_args(p)
    p.add_argument("--evaluate", choices=["ptq"], help="measure each configuration's accuracy by PTQ")
    p.add_argument(
        "--eval-size",
        type=int,
        help=f"first N test images used (default: all, up to {EVAL_SIZE}; language models {TEXT_EVAL_SIZE} windows)",
    )
    p.add_argument(
        "--no-bn-recal", action="store_true", help="do not re-estimate BatchNorm statistics after weight quantization"
    )
    p.add_argument("--plot", help="PNG file: accuracy against size per proxy (needs --evaluate)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_pareto)
