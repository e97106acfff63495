"""The end-to-end table (EMQ Tables 4-6 analog): top-1 on the test images after round-to-nearest
PTQ, after AdaRound and after a short QAT, for the allocations of proxies, of uniform precision
and of the competing methods, per model at several size budgets and one BOPs budget.

    python benchmarks/end_to_end.py [--models resnet20-fmnist,mobilenetv2-fmnist]
        [--budgets-mb resnet20-fmnist=0.085,0.095,0.105] [--bops-g MODEL=SIZE_MB:GBOPS]
        [--proxies evoproxy-zoo,hawq-v2,fisher,taylor,mean-bits] [--methods edmips,seam,smpq,adaqat]
        [--eval-size 10000] [--adaround-iters 200] [--qat-epochs 1] [--qat-images 2048]
        [--search-images 2048] [--threads 1] [--device cpu] [--seed 0]
        [--out benchmarks/results/end_to_end.jsonl] [--table-only]

Per model: the statistics are computed once (the Hessian only if a proxy reads it) and every
proxy's allocation solved by the ILP; "uniform" is the largest uniform weight width that fits the
budget (its real size shown). Methods (searched for --search-epochs on a seeded subset of the train
part; SMPQ's Shapley values on 512 other training images; AdaQAT with one bit-width per layer) come
after every model's proxy rows, each row's cost being its search seconds. Each (model, budget,
allocator) row is appended whole to --out as one JSON line as soon as it is finished; a rerun
with the same --out and settings skips finished rows, and a configuration already measured under
the same settings is copied (`same_as`) instead of measured again. The table is printed at the
end, or alone with --table-only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from evoproxy.allocation import allocate, build_problem, proxy_problem, uniform_points
from evoproxy.allocators import ALLOCATORS
from evoproxy.cli.args import add_data_args, data_source
from evoproxy.cli.bits import parse_bits
from evoproxy.errors import EvoproxyError
from evoproxy.model import accuracy, check_device, layer_registry, load_model
from evoproxy.proxy import get_proxy, needs_hessian, needs_perturbations
from evoproxy.quant import (
    AdaRoundSettings,
    PtqEvaluator,
    QatSettings,
    QuantSettings,
    adaround_model,
    average_bits,
    lsq_model,
    model_bops,
    model_size_mb,
    train_qat,
)
from evoproxy.stats import StatsSettings, load_or_compute_stats

# Where the pareto table of docs/results.md shows allocations differ.
DEFAULT_BUDGETS = {"resnet20-fmnist": [0.085, 0.095, 0.105]}
RULE_FRACTIONS = (0.25, 0.5, 0.75)  # of the way from every free layer at the fewest bits to every one at the most
BOPS_FRACTION = 0.4  # below uniform W3's BOPs, so that the BOPs budget binds where the size budget does not
SEARCH_SETTINGS = {"adaqat": {"per_layer": True}}  # beside --search-epochs and --seed; the methods' defaults otherwise


def log(msg: str) -> None:
    print(f"[end_to_end {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def per_model(items: list[str], flag: str) -> dict[str, str]:
    """`MODEL=VALUE` items as {model: value}."""
    out = {}
    for item in items:
        model, sep, value = item.partition("=")
        if not sep or not value:
            raise EvoproxyError(f"{flag} takes MODEL=VALUE such as resnet20-fmnist=0.085,0.095; got {item!r}")
        out[model] = value
    return out


def numbers(text: str, flag: str, sep: str = ",") -> list[float]:
    try:
        return [float(x) for x in text.split(sep)]
    except ValueError:
        raise EvoproxyError(f"{flag}: {text!r} is not a list of numbers separated by {sep!r}") from None


def budgets_of(problem, model: str, args) -> list[tuple[float, float | None]]:
    """The (size MB, BOPs or None) budgets of `model`: --budgets-mb (else docs/results.md's for
    ResNet-20, else the rule), then --bops-g's pair (else the largest size budget with the BOPs 40 % of the
    way from every free layer at the fewest bits to every one at the most)."""
    given = per_model(args.budgets_mb, "--budgets-mb")
    if model in given:
        sizes = numbers(given[model], "--budgets-mb")
    elif model in DEFAULT_BUDGETS:
        sizes = DEFAULT_BUDGETS[model]
    else:
        low, high = problem.min_size_mb, problem.max_size_bits / 8e6
        sizes = [round(low + f * (high - low), 4) for f in RULE_FRACTIONS]
    bops_given = per_model(args.bops_g, "--bops-g")
    if model in bops_given:
        size, gbops = numbers(bops_given[model], "--bops-g", ":")
        bops = gbops * 1e9
    else:
        points = uniform_points(problem)
        low, high = points[0].bops, points[-1].bops
        size, bops = max(sizes), round((low + BOPS_FRACTION * (high - low)) / 1e6) * 1e6
    return [(s, None) for s in sizes] + [(size, bops)]


def budget_label(size: float, bops: float | None) -> str:
    return f"{size:g} MB" + ("" if bops is None else f" + {bops / 1e9:g} GBOPs")


def row_budget(row: dict) -> tuple[float, float | None]:
    """The (size MB, BOPs or None) budget of a row (which stores GBOPs)."""
    return row["budget_mb"], None if row["budget_gbops"] is None else row["budget_gbops"] * 1e9


def markdown(lines: list[list[str]]) -> str:
    """`lines` (a header, then rows) as a Markdown table."""
    return "\n".join("| " + " | ".join(line) + " |" for line in [lines[0], ["---"] * len(lines[0]), *lines[1:]])


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"GPU {torch.cuda.get_device_name(torch.device(device))}"
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [
            l.split(":", 1)[1].strip()
            for l in Path("/proc/cpuinfo").read_text().splitlines()
            if l.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


def same_search(row: dict, args) -> bool:
    """Whether `row` is a proxy's or uniform's (found without a search), or a method's searched
    with `args`' --search-images and --search-epochs (other searches are other rows of one file)."""
    return row["kind"] != "method" or (row["search"]["train_images"], row["search"]["epochs"]) == (
        args.search_images,
        args.search_epochs,
    )


def read_rows(path: Path) -> list[dict]:
    """The finished rows of `path` (a line cut short by a kill is ignored: it is redone)."""
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def append_row(path: Path, row: dict) -> None:
    """One whole line per write, synced, so a kill loses at most the row in progress."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


class Runner:
    """Measures rows of one model: PTQ, AdaRound and QAT accuracy of a bit configuration."""

    def __init__(self, name: str, args, source, train, qat_train, settings: dict, out: Path):
        self.name, self.args, self.settings, self.out = name, args, settings, out
        model, _ = load_model(name)
        self.layers = layer_registry(model, source.input_shape)
        self.quant = QuantSettings(args.act_bits, True)
        self.evaluator = PtqEvaluator.on_data(model, self.layers, args.eval_size, self.quant, source, args.device)
        self.source, self.train, self.qat_train = source, train, qat_train
        last = len(self.layers) - 1
        self.fixed = {0: (args.fixed_bits, args.act_bits), last: (args.fixed_bits, args.act_bits)}
        self.w_bits = parse_bits(args.bits, "--bits")
        # The cost tables of every allocator's problem (values do not matter for sizes, BOPs and uniform points).
        self.base = build_problem(
            self.layers, np.zeros(len(self.layers)), 1.0, w_bits=self.w_bits, a_bits=(args.act_bits,), fixed=self.fixed
        )
        self.budgets = budgets_of(self.base, name, args)
        self.fp = None
        self._stats = None

    def done(self) -> list[dict]:
        return [r for r in read_rows(self.out) if r["model"] == self.name and r["settings"] == self.settings]

    def pending(self, allocators: list[str]) -> list[tuple[float, float | None, str]]:
        finished = {
            (r["budget_mb"], r["budget_gbops"], r["allocator"]) for r in self.done() if same_search(r, self.args)
        }
        return [
            (s, b, a)
            for s, b in self.budgets
            for a in allocators
            if (s, None if b is None else b / 1e9, a) not in finished
        ]

    def stats(self, proxies: list) -> tuple:
        """The statistics all proxies share (the Hessian, the output perturbations only if one reads
        them) and their seconds; computed, not read from the cache, so that the seconds are the real cost."""
        if self._stats is None:
            hessian = any(needs_hessian(p) for p in proxies)
            perturbations = any(needs_perturbations(p) for p in proxies)
            images, labels = self.source.calibration(self.args.stats_batch)
            log(f"{self.name}: statistics on {len(images)} calibration images{' with the Hessian' if hessian else ''}")
            start = time.perf_counter()
            stats, _ = load_or_compute_stats(
                self.evaluator.model,
                images,
                labels,
                self.name,
                StatsSettings(seed=self.args.seed, hessian=hessian, perturbations=perturbations),
                use_cache=False,
                device=self.args.device,
            )
            self._stats = stats, time.perf_counter() - start
        return self._stats

    def measure(
        self,
        size: float,
        bops: float | None,
        allocator: str,
        kind: str,
        w_bits,
        seconds: dict,
        extra: dict | None = None,
    ) -> dict:
        """Measure `w_bits` (PTQ, AdaRound, QAT), or copy an equal configuration's accuracies, and append the row."""
        w_bits = [int(b) for b in w_bits]
        row = {
            "model": self.name,
            "budget_mb": size,
            "budget_gbops": None if bops is None else bops / 1e9,
            "allocator": allocator,
            "kind": kind,
            "w_bits": w_bits,
            "size_mb": model_size_mb(self.layers, w_bits),
            "gbops": model_bops(self.layers, w_bits, self.args.act_bits) / 1e9,
            "avg_bits": average_bits(self.layers, w_bits),
            **(extra or {}),
        }
        same = next((r for r in self.done() if r["w_bits"] == w_bits and "same_as" not in r), None)
        if same is not None:
            row.update(
                acc=same["acc"],
                seconds=seconds,
                machine=same["machine"],
                same_as=f"{same['allocator']} at {budget_label(*row_budget(same))}",
            )
        else:
            row.update(self._accuracies(w_bits, seconds))
        row["settings"] = self.settings
        append_row(self.out, row)
        log(
            f"{self.name} {budget_label(size, bops)} {allocator}: {row['size_mb']:.4f} MB, "
            f"PTQ {row['acc']['ptq']:.2f} / AdaRound {row['acc']['adaround']:.2f} / QAT {row['acc']['qat']:.2f}"
            + (f" (same configuration as {row['same_as']})" if "same_as" in row else "")
        )
        return row

    def _accuracies(self, w_bits: list[int], seconds: dict) -> dict:
        ev, args = self.evaluator, self.args
        if self.fp is None:
            self.fp = ev.fp_value()
        start = time.perf_counter()
        ptq = ev.measure(w_bits)
        seconds["ptq"] = time.perf_counter() - start
        start = time.perf_counter()
        qmodel, _ = adaround_model(
            ev.model,
            self.layers,
            w_bits,
            ev.calib_images,
            AdaRoundSettings(iters=args.adaround_iters, seed=args.seed),
            self.quant,
            ev.cache,
            log=lambda m: None,
        )
        ada = accuracy(qmodel, ev.images, ev.labels)
        seconds["adaround"] = time.perf_counter() - start
        start = time.perf_counter()
        qmodel = lsq_model(ev.model, self.layers, w_bits, args.act_bits, ev.calib_images, True)
        history = train_qat(
            qmodel,
            ev.model,
            self.qat_train,
            (ev.images, ev.labels),
            QatSettings(args.qat_epochs, seed=args.seed),
            log=lambda m: None,
        )
        seconds["qat"] = time.perf_counter() - start
        return {
            "acc": {"fp": self.fp, "ptq": ptq, "adaround": ada, "qat": history[-1].accuracy},
            "seconds": seconds,
            "machine": machine(args.device),
        }

    def proxy_rows(self, names: list[str]) -> None:
        todo = self.pending(names + ["uniform"])
        proxies = {n: get_proxy(n) for n in names}
        for size, bops, allocator in todo:
            if allocator == "uniform":
                fits = [
                    p
                    for p in uniform_points(self.base)
                    if p.size_mb <= size + 1e-12 and (bops is None or p.bops <= bops)
                ]
                if not fits:
                    log(f"{self.name} {budget_label(size, bops)}: no uniform width fits; row skipped")
                    continue
                self.measure(size, bops, "uniform", "uniform", fits[-1].w_bits, {})
                continue
            stats, stats_s = self.stats(list(proxies.values()))
            problem = proxy_problem(
                proxies[allocator],
                stats,
                size,
                bops=bops,
                w_bits=self.w_bits,
                act_bits=self.args.act_bits,
                fixed=self.fixed,
            )
            result = allocate(problem)
            self.measure(
                size, bops, allocator, "proxy", result.w_bits, {"statistics": stats_s, "allocation": result.seconds}
            )

    def method_rows(self, names: list[str]) -> None:
        args = self.args
        for size, bops, allocator in self.pending(names):
            method = ALLOCATORS[allocator]
            settings = method.settings(epochs=args.search_epochs, seed=args.seed, **SEARCH_SETTINGS.get(allocator, {}))
            data = method.search_data(
                self.train, self.evaluator.calib_images, train_images=args.search_images, seed=args.seed
            )
            problem = build_problem(
                self.layers,
                np.zeros(len(self.layers)),
                size,
                bops=bops,
                w_bits=self.w_bits,
                a_bits=(args.act_bits,),
                fixed=self.fixed,
            )
            model = load_model(self.name)[0].to(self.evaluator.images.device)
            log(f"{self.name} {budget_label(size, bops)}: {allocator} search on {len(data.train[0])} training images")
            result = method.search(model, problem, data, settings, lambda m: None)
            self.measure(
                size,
                bops,
                allocator,
                "method",
                result.allocation.w_bits,
                {"search": result.seconds},
                {
                    "search": {
                        "train_images": len(data.train[0]),
                        "validation_images": len(data.validation[0]),
                        "epochs": args.search_epochs,
                    }
                },
            )


def cell(row: dict | None) -> str:
    if row is None:
        return "-"
    acc = row["acc"]
    text = f"{acc['ptq']:.2f} / {acc['adaround']:.2f} / {acc['qat']:.2f}"
    if row["kind"] == "uniform":
        text = f"W{min(row['w_bits'])} ({row['size_mb']:.3f} MB): " + text  # free layers at W, the ends at more
    return text


def cost(rows: list[dict]) -> str:
    """Proxies: statistics + allocation seconds; methods: search seconds (mean over budgets)."""
    secs = [r["seconds"] for r in rows]
    if not secs or rows[0]["kind"] == "uniform":
        return "-"
    if rows[0]["kind"] == "proxy":
        return f"{secs[0]['statistics']:.1f} + {np.mean([s['allocation'] for s in secs]):.3f}"
    return f"{np.mean([s['search'] for s in secs]):.1f}"


def print_tables(rows: list[dict], order: list[str]) -> None:
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == model]
        budgets = list(dict.fromkeys(row_budget(r) for r in mine))
        allocators = sorted(
            dict.fromkeys(r["allocator"] for r in mine), key=lambda a: order.index(a) if a in order else len(order)
        )
        fp = mine[0]["acc"]["fp"]
        table = []
        for allocator in allocators:
            got = {row_budget(r): r for r in mine if r["allocator"] == allocator}
            machines = sorted({r["machine"] for r in got.values()})
            table.append(
                {
                    "allocator": allocator,
                    **{str(b): cell(got.get(b)) for b in budgets},
                    "cost": cost(list(got.values())),
                    "on": "; ".join(machines),
                }
            )
        settings = mine[0]["settings"]
        print(
            f"\n{model}: top-1 % on {settings['eval_size']} test images, PTQ / AdaRound "
            f"({settings['adaround_iters']} iterations per block) / QAT ({settings['qat_epochs']} "
            f"epoch{'s' * (settings['qat_epochs'] != 1)} on "
            f"{settings['qat_images']} training images); full precision {fp:.2f} %\n"
        )
        headers = ["allocator", *(budget_label(*b) for b in budgets), "cost (s)", "measured on"]
        print(markdown([headers, *(list(r.values()) for r in table)]))
        print(
            "\ncost (s): proxies, the statistics they share + the allocation (mean over budgets); methods, the "
            "search (mean over budgets). uniform: the largest uniform width within the budget, its size shown."
        )
        print_gains(model, mine, budgets)


def print_gains(model: str, rows: list[dict], budgets: list[tuple]) -> None:
    """What AdaRound and QAT add to round-to-nearest per budget: the mean over the proxies'
    allocations, [smallest, largest], and uniform's, in points of top-1."""
    lines = [["budget", "AdaRound − RTN (proxies)", "QAT − RTN (proxies)", "uniform: AdaRound − RTN, QAT − RTN"]]
    for budget in budgets:
        here = [r for r in rows if row_budget(r) == budget]
        cells = []
        for stage in ("adaround", "qat"):
            gains = [r["acc"][stage] - r["acc"]["ptq"] for r in here if r["kind"] == "proxy"]
            cells.append(f"{sum(gains) / len(gains):+.2f} [{min(gains):+.2f}, {max(gains):+.2f}]" if gains else "-")
        uniform = [r for r in here if r["kind"] == "uniform"]
        cells.append(
            ", ".join(f"{r['acc'][stage] - r['acc']['ptq']:+.2f}" for r in uniform[:1] for stage in ("adaround", "qat"))
            or "-"
        )
        lines.append([budget_label(*budget), *cells])
    print(f"\n{model}: what AdaRound and QAT add to round-to-nearest (points of top-1)\n")
    print(markdown(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet20-fmnist,mobilenetv2-fmnist", help="registry names, comma-separated")
    p.add_argument(
        "--budgets-mb",
        action="append",
        default=[],
        help="MODEL=S1,S2,S3 size budgets in MB (repeatable; default docs/results.md's 0.085,0.095,0.105 for "
        "ResNet-20, else 1/4, 1/2, 3/4 of the way from all-fewest to all-most bits)",
    )
    p.add_argument(
        "--bops-g",
        action="append",
        default=[],
        help="MODEL=SIZE_MB:GBOPS, the BOPs budget and its size budget (default: the largest size budget "
        "and the GBOPs 40 %% of the way from the uniform fewest- to most-bits configuration)",
    )
    p.add_argument("--proxies", default="evoproxy-zoo,hawq-v2,fisher,taylor,mean-bits")
    p.add_argument("--methods", default="edmips,seam,smpq,adaqat", help="competing allocators; '' for none")
    p.add_argument("--search-images", type=int, default=2048, help="methods: seeded training subset searched on")
    p.add_argument("--search-epochs", type=int, default=1, help="methods: epochs of the search")
    p.add_argument("--bits", default="2,3,4", help="weight bit choices")
    p.add_argument("--act-bits", type=int, default=8)
    p.add_argument("--fixed-bits", type=int, default=8, help="bits of the first and last layer")
    p.add_argument("--stats-batch", type=int, default=64, help="calibration images of the statistics")
    p.add_argument("--eval-size", type=int, default=10000, help="test images measured (default all 10 000)")
    p.add_argument("--adaround-iters", type=int, default=200, help="AdaRound iterations per block")
    p.add_argument("--qat-epochs", type=int, default=1)
    p.add_argument("--qat-images", type=int, default=2048, help="seeded subset of the train part for QAT")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/end_to_end.jsonl")
    p.add_argument("--table-only", action="store_true", help="print the table of --out and stop")
    add_data_args(p)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.device = check_device(args.device)
    out = Path(args.out)
    proxies = [n for n in args.proxies.split(",") if n]
    methods = [n for n in args.methods.split(",") if n]
    order = proxies + ["uniform"] + methods
    settings = {
        "eval_size": args.eval_size,
        "adaround_iters": args.adaround_iters,
        "qat_epochs": args.qat_epochs,
        "qat_images": args.qat_images,
        "bits": args.bits,
        "act_bits": args.act_bits,
        "fixed_bits": args.fixed_bits,
        "stats_batch": args.stats_batch,
        "calib_images": args.calib_images,
        "data": args.data,
        "seed": args.seed,
    }
    if not args.table_only:
        out.parent.mkdir(parents=True, exist_ok=True)
        source = data_source(args)
        train = source.training()
        pick = torch.randperm(len(train[0]), generator=torch.Generator().manual_seed(args.seed))[: args.qat_images]
        qat_train = (train[0][pick], train[1][pick])
        runners = [Runner(m, args, source, train, qat_train, settings, out) for m in args.models.split(",") if m]
        for runner in runners:
            runner.proxy_rows(proxies)
        for runner in runners:
            runner.method_rows(methods)
    rows = [r for r in read_rows(out) if r["settings"] == settings and same_search(r, args)]
    if not rows:
        raise EvoproxyError(f"{out} holds no rows of these settings: run without --table-only first")
    print_tables(rows, order)


if __name__ == "__main__":
    try:
        main()
    except EvoproxyError as exc:
        sys.exit(f"error: {exc}")
