"""Latency budgets (HAWQ-V3) end to end: measure the model's latency table on this machine, allocate
at three latency budgets, export each allocation to ONNX (`evoproxy export --kernels int8`, int8
kernels where weights and input have 2 to 8 bits) and time the exported file in onnxruntime;
print per budget the table's predicted latency, the measured one, their ratio and whether the budget
is met, beside uniform W8A8 and W32A32 for reference.

    python benchmarks/latency.py [--model resnet20-fmnist] [--proxy hawq-v2] [--graph int8]
        [--kernels int8] [--size-mb 10] [--bits 2,4,8,32] [--act-bits 8,32] [--fractions 0.75,0.5,0.25]
        [--repeats 100] [--rounds 3] [--threads 1] [--dir runs/latency]

The table (`evoproxy latency --graph G`) sets the budgets: they lie the given fractions of the way
from the fastest configuration within the size budget to the allocation without a latency budget.
Then, --rounds times, the table is measured again with the exported files (`evoproxy export
--kernels K --eval-size 0`) timed among every layer's graphs (`measure_latency(beside=...)`), so
that the load of a shared machine falls on table and files alike: batch 1, --threads intra-op
threads, the median of --repeats runs, 10 at a time, per layer, and the median over the layers.
Each row gives the medians over the rounds of the predicted and the measured latency and of their
ratio; a budget is met if the median measured latency is within it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from pathlib import Path

import numpy as np

from evoproxy.allocation import allocate, build_problem, load_latency_table
from evoproxy.cli import main
from evoproxy.model import default_data, layer_registry, load_model, open_data, DataSettings
from evoproxy.quant.latency import LatencySettings, measure_latency
from evoproxy.table import format_table


def log(msg: str) -> None:
    print(f"[latency {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def evoproxy(*argv: str) -> str:
    """Run an evoproxy command in this process; its stdout, or exit with its error."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    if code:
        sys.exit(f"evoproxy {argv[0]} failed (its error is above)")
    return out.getvalue()


def fastest_ms(table, layers, bits: list[int], act: list[int], size_mb: float) -> float:
    """The fastest configuration of `table` within the size budget and the bit choices, first and last
    layer at W8 and the most activation bits (allocate's default --fixed): the ILP with each option
    valued at minus its latency."""
    values = -np.array([[[table.layer_ms(l.index, w, a) for a in act] for w in bits] for l in layers])
    fixed = {0: (8, act[-1]), len(layers) - 1: (8, act[-1])}
    problem = build_problem(layers, values, size_mb, w_bits=bits, a_bits=act, fixed=fixed)
    return allocate(problem.with_latency(table, None)).latency_ms


def main_() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20-fmnist")
    p.add_argument("--proxy", default="hawq-v2")
    p.add_argument("--graph", default="int8", choices=("int8", "export"), help="the table the budgets are set by")
    p.add_argument("--kernels", default="int8", choices=("int8", "float"), help="export --kernels")
    p.add_argument("--size-mb", type=float, default=10.0, help="size budget (default 10 MB: loose)")
    p.add_argument("--bits", default="2,4,8,32")
    p.add_argument("--act-bits", default="8,32")
    p.add_argument("--fractions", default="0.75,0.5,0.25")
    p.add_argument("--repeats", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3, help="table and files timed in turn, this many times")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dir", default="runs/latency", help="folder for the tables, bits files and ONNX files")
    args = p.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    bits, act = [int(b) for b in args.bits.split(",")], [int(a) for a in args.act_bits.split(",")]
    common = ["--model", args.model, "--threads", args.threads, "--repeats", args.repeats]
    table_path = folder / f"{args.graph}.json"
    log(f"measuring the {args.graph} table")
    evoproxy("latency", *common, "--graph", args.graph, "--out", table_path)
    table = load_latency_table(table_path)
    allocate = ["allocate", "--model", args.model, "--proxy", args.proxy, "--size-mb", args.size_mb]
    allocate += ["--bits", args.bits, "--act-bits", args.act_bits, "--latency-table", table_path]

    log("allocating without a latency budget")
    evoproxy(*allocate, "--out", folder / "free.json")
    free_ms = json.loads((folder / "free.json").read_text())["latency_ms"]
    model, _ = load_model(args.model)
    source = open_data(default_data(args.model), DataSettings())
    layers = layer_registry(model, source.input_shape)
    low = fastest_ms(table, layers, bits, act, args.size_mb)
    budgets = [round(low + float(f) * (free_ms - low), 4) for f in args.fractions.split(",")]
    rows = [("no latency budget", None, folder / "free.json")]
    for budget in budgets:
        log(f"allocating under {budget} ms")
        evoproxy(*allocate, "--latency-ms", budget, "--out", folder / f"budget_{budget}.json")
        rows.append((f"{budget} ms", budget, folder / f"budget_{budget}.json"))
    n = len(layers)
    for name, w, a in (("uniform W8A8", 8, 8), ("uniform W32A32", 32, 32)):
        (folder / f"{name[8:]}.json").write_text(json.dumps({"bits": [w] * n, "act_bits": a}))
        rows.append((name, None, folder / f"{name[8:]}.json"))
    for _, _, path in rows:
        log(f"exporting {path.name}")
        evoproxy(
            "export",
            *("--model", args.model, "--bits-file", path, "--onnx", path.with_suffix(".onnx")),
            *("--kernels", args.kernels, "--eval-size", 0),
        )

    configs = []
    for _, _, path in rows:
        record = json.loads(path.read_text())
        a = record["act_bits"]
        configs.append((record["bits"], a if isinstance(a, list) else [a] * n))
    predicted, measured = [], []
    images = source.calibration(8)[0]
    settings = LatencySettings(args.graph, threads=args.threads, repeats=args.repeats)
    for r in range(args.rounds):
        log(f"round {r + 1}/{args.rounds}: the table with the exported files among its layers")
        beside = [path.with_suffix(".onnx") for _, _, path in rows]
        measured_table = measure_latency(model, layers, images, model_name=args.model, settings=settings, beside=beside)
        (folder / f"round{r}.json").write_text(json.dumps(measured_table))
        round_table = load_latency_table(folder / f"round{r}.json")
        predicted.append([round_table.total_ms(w, a) for w, a in configs])
        measured.append(measured_table["beside_ms"])
    predicted, measured = np.array(predicted), np.array(measured)
    out = []
    for k, ((name, budget, _), (w, a)) in enumerate(zip(rows, configs)):
        ms, ratios = float(np.median(measured[:, k])), measured[:, k] / predicted[:, k]
        kernels = [table.kernel[i, wb, ab] for i, (wb, ab) in enumerate(zip(w, a))]
        int8 = [table.is_int8(i, wb, ab) for i, (wb, ab) in enumerate(zip(w, a))]
        switches = sum(int8[i] != int8[i - 1] for i in range(1, n))  # as the table charges them
        out.append(
            {
                "row": name,
                "predicted": float(np.median(predicted[:, k])),
                "measured": ms,
                "ratio": float(np.median(ratios)),
                "spread": f"{ratios.min():.3f}-{ratios.max():.3f}",
                "met": "-" if budget is None else "yes" if ms <= budget else "no",
                "kernels": f"{kernels.count('int8')} int8, {kernels.count('float')} float, {switches} switches",
            }
        )
    machine = json.loads(table_path.read_text())["machine"]
    print(
        f"{args.model}, {args.proxy}, W {args.bits} A {args.act_bits}, size budget {args.size_mb} MB, budgets by the "
        f"{args.graph} table; export --kernels {args.kernels}; batch 1, {args.threads} thread(s), median of "
        f"{args.repeats} runs, {args.rounds} rounds; "
        f"{machine['processor']}, {machine['cpu_count']} CPUs, onnxruntime {machine['onnxruntime']}"
    )
    print(
        format_table(
            out,
            ["row", "predicted", "measured", "ratio", "spread", "met", "kernels"],
            [
                "allocation",
                "table (ms)",
                "measured (ms)",
                "measured/table",
                "over rounds",
                "budget met",
                "kernels (table)",
            ],
        )
    )


if __name__ == "__main__":
    main_()
