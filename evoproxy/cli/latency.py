"""`evoproxy latency`: each layer's latency at each bit option on this machine (HAWQ-V3's table),
and how `allocate --latency-ms --latency-table` reads that table."""

from __future__ import annotations

import json
import sys

from ..errors import EvoproxyError
from ..files import output_file
from .args import add_data_args, add_model_args, data_source, load_user_model


def latency_table(args):
    """The table of --latency-table, read and checked now, before any work; None without one.
    A search method (--method edmips...) takes no latency budget."""
    from ..allocation import load_latency_table
    from .allocators import allocators

    if args.latency_table is None:
        return None
    if args.method in allocators():
        raise EvoproxyError(
            f"--method {args.method} searches without the latency table: leave out --latency-ms and "
            "--latency-table, or allocate by a proxy with --method ilp"
        )
    return load_latency_table(args.latency_table)


def latency_column(rows: list[dict], table, result) -> tuple[list[str], list[str]]:
    """Each layer's latency at its bits (from `table`) into `rows`, and the column and header that
    show it; none without a table."""
    if table is None:
        return [], []
    for row, w, a in zip(rows, result.w_bits, result.a_bits):
        key = (row["index"], w, a)
        row["latency"], row["kernel"] = table.ms[key], table.kernel[key]
    return ["latency", "kernel"], ["latency (ms)", "kernel"]


def latency_text(result, args) -> str:
    """The allocation's predicted latency beside its budget, for the line of its costs."""
    if result.latency_ms is None:
        return ""
    budget = "no latency budget" if args.latency_ms is None else f"budget {args.latency_ms} ms"
    return f"; latency {result.latency_ms:.4f} ms predicted by {args.latency_table} ({budget})"


def cmd_latency(args) -> None:
    from ..files import write_atomically
    from ..quant.latency import GRAPHS, LatencySettings, measure_latency
    from ..table import format_table

    output_file(args.out, "--out")
    if args.device != "cpu":
        raise EvoproxyError("--device: evoproxy latency measures onnxruntime on this machine's CPU; give cpu")
    settings = LatencySettings(args.graph, args.batch_size, args.threads, args.repeats, args.warmup)
    source = data_source(args)
    model, name, layers = load_user_model(args, source)
    print(
        f"[latency] {name}: {len(layers)} layers × {len(GRAPHS)} graphs, {settings.repeats} runs each "
        f"after {settings.warmup}, batch {settings.batch_size}, {settings.threads} thread(s)",
        file=sys.stderr,
    )
    images = source.calibration(min(max(8, settings.batch_size), len(source.calibration()[0])))[0]
    table = measure_latency(
        model,
        layers,
        images,
        model_name=name,
        settings=settings,
        log=lambda m: print(f"[latency] {m}", file=sys.stderr),
    )
    write_atomically(args.out, json.dumps(table, indent=1) + "\n")
    graphs = [f"W{w}A{a}" for w, a in GRAPHS]
    rows = [
        {"index": r["index"], "name": r["name"], "shape": r["input_shape"]}
        | {g: f"{r['measured'][g]['ms']:.4f} {r['measured'][g]['kernel']}" for g in graphs}
        for r in table["layers"]
    ]
    print(f"{name}: latency per layer in ms (net of an empty graph's run) and the kernel onnxruntime ran")
    print(format_table(rows, ["index", "name", "shape", *graphs], ["#", "layer", "input", *graphs]))
    totals = ", ".join(
        f"{g} {table['overhead_ms'] + sum(r['measured'][g]['ms'] for r in table['layers']):.4f} ms" for g in graphs
    )
    machine = table["machine"]
    print(
        f"every layer at one graph: {totals} (overhead {table['overhead_ms']:.4f} ms included); {settings.graph} "
        f"graphs on {machine['processor']}, {machine['cpu_count']} CPUs, onnxruntime {machine['onnxruntime']}; "
        "2 to 7 bits cost what 8 bits cost"
    )
    print(f"wrote {args.out}")


def register(sub) -> None:
    """Add the latency command to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser(
        "latency",
        help="measure each layer's latency at each bit option on this machine (for allocate --latency-ms)",
        description="Time each quantizable layer alone, at the input it receives from the data, in onnxruntime "
        "on this machine's CPU, at weight bits 2 to 8 and 32 (float) and activation bits 8 and 32: "
        "QuantizeLinear/DequantizeLinear graphs that onnxruntime runs with its int8 kernels (--graph int8) or as "
        "`evoproxy export` writes them (--graph export); 2 to 7 bits run the 8-bit kernel and cost what it costs. "
        "Each layer is timed with the BatchNorm and ReLU after it, median of --repeats runs (10 at a time) after "
        "--warmup, net of an empty graph's run; beside it, what an int8/float switch at its input costs, and the "
        "whole float model, whose time beyond its layers is the table's overhead. Progress on stderr. The JSON "
        "table is what `evoproxy allocate --latency-ms B --latency-table FILE` sums.",
    )
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--out", default="latency.json", help="JSON latency table to write (default latency.json)")
    p.add_argument(
        "--graph",
        default="int8",
        choices=["int8", "export"],
        help="int8: quantized layers as onnxruntime's int8 kernels (an output QDQ pair lets it fuse them); "
        "export: as `evoproxy export` writes them, which onnxruntime runs as float kernels with QDQ ops "
        "(default int8)",
    )
    p.add_argument("--batch-size", type=int, default=1, help="samples per timed run (default 1)")
    p.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (default 1)")
    p.add_argument("--repeats", type=int, default=100, help="timed runs per graph; the median counts (default 100)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs per graph first (default 10)")
    p.set_defaults(func=cmd_latency)
