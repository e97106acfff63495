"""Data-free calibration (ZeroQ's distilled images) against real calibration images, per model:

(a) rank ρ of proxies on the held-out split of the model's shipped bench, with the statistics computed
    on the first --stats-batch distilled images against the first --stats-batch real calibration images;
(b) PTQ top-1 (round-to-nearest, 8-bit activations, BatchNorm re-estimated, as `evoproxy quantize` does)
    on the first --eval-size test images, at size budgets: "real" allocates with --proxy on real
    statistics and calibrates on --images real images; "distilled calib" quantizes the same bits
    calibrated on --images distilled ones; "data-free" also allocates on the distilled images' statistics.

    python benchmarks/distilled.py [--models resnet20-fmnist,mobilenetv2-fmnist]
        [--budgets-mb resnet20-fmnist=0.085,0.095,0.1,0.105] [--proxies hawq-v2,fisher,evoproxy-zoo,mean-bits]
        [--proxy hawq-v2] [--images 256] [--stats-batch 64] [--eval-size 10000] [--iters 200] [--lr 0.1]

Distillation and statistics are cached (the statistics cache), so a rerun prints the tables in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time

from evoproxy.allocation import allocate, proxy_problem
from evoproxy.bench import bench_model, load_bench, rank_proxy
from evoproxy.model import DistillSettings, open_data
from evoproxy.model.distill import DISTILL_BATCH
from evoproxy.proxy import get_proxy, needs_hessian
from evoproxy.quant import PtqEvaluator, QuantSettings
from evoproxy.stats import StatsSettings, cache_dir, load_or_compute_stats
from evoproxy.table import format_table

BENCHES = {"resnet20-fmnist": "fmnist-resnet20-w234", "mobilenetv2-fmnist": "fmnist-mobilenetv2-w234"}
# ResNet-20: the README's 0.1 MB and docs/results.md's end-to-end budgets; MobileNetV2: the end-to-end
# benchmark's rule (a quarter, half and three quarters of the way from every free layer at 2 bits to 4).
BUDGETS = {"resnet20-fmnist": "0.085,0.095,0.1,0.105", "mobilenetv2-fmnist": "0.0269,0.0319,0.037"}


def log(msg: str) -> None:
    print(f"[distilled {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def per_model(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def run_model(model_name: str, args, budgets: list[float]) -> tuple[list[dict], list[dict]]:
    bench = load_bench(BENCHES[model_name])
    model, layers, real = bench_model(bench)
    settings = DistillSettings(args.iters, args.lr)
    marks = [(time.perf_counter(), "")]  # (time, message) of each batch distilled

    def timed(msg: str) -> None:
        marks.append((time.perf_counter(), msg))
        log(msg)

    distilled = open_data(
        f"distilled:{args.images}", model=model, evaluate_on=real, distill=settings, cache=cache_dir(), log=timed
    )
    distilled.calibration()
    if "from the cache" in marks[-1][1]:
        print(f"{model_name}: {args.images} distilled images read from the cache ({cache_dir()})")
    else:
        print(
            f"{model_name}: {args.images} images distilled in {marks[-1][0] - marks[0][0]:.1f} s on one thread, "
            f"the first {min(args.images, DISTILL_BATCH)} in {marks[1][0] - marks[0][0]:.1f} s"
        )
    proxies = [get_proxy(name) for name in args.proxies.split(",")]
    alloc_proxy = get_proxy(args.proxy)
    stats_settings = StatsSettings(hessian=any(needs_hessian(p) for p in [*proxies, alloc_proxy]))
    stats = {}
    for label, source in (("real", real), ("distilled", distilled)):
        x, y = source.calibration(args.stats_batch)
        stats[label], _ = load_or_compute_stats(model, x, y, model_name, stats_settings, log=log)
    entries = bench.split("held-out")
    rank_rows = []
    for proxy in proxies:
        row = {"model": model_name, "proxy": proxy.name}
        for label in stats:
            r = rank_proxy(proxy, stats[label], entries)
            row[f"{label}_draws"], row[f"{label}_all"] = 100 * r.rho_mean, 100 * r.rho_all
        rank_rows.append(row)
    quant = QuantSettings(8, True)
    real_calib, images, labels = real.ptq_data(args.eval_size)
    measured = {
        label: PtqEvaluator(model, layers, calib, images, labels, quant)
        for label, calib in (("real", real_calib[: args.images]), ("distilled", distilled.calibration()[0]))
    }
    fp, ptq_rows = measured["real"].fp_value(), []
    for size in budgets:
        bits = {label: allocate(proxy_problem(alloc_proxy, stats[label], size)).w_bits for label in stats}
        row = {
            "model": model_name,
            "budget": size,
            "fp": fp,
            "real": measured["real"].measure(bits["real"]),
            "calib": measured["distilled"].measure(bits["real"]),
            "free": measured["distilled"].measure(bits["distilled"]),
            "same": "yes" if bits["real"] == bits["distilled"] else "no",
        }
        row["gap"] = row["free"] - row["real"]
        ptq_rows.append(row)
        log(f"{model_name} at {size:g} MB: {row}")
    return rank_rows, ptq_rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(BENCHES), help=f"comma-separated, of {', '.join(BENCHES)}")
    p.add_argument("--budgets-mb", action="append", default=[], help="MODEL=S1,S2 size budgets in MB (repeatable)")
    p.add_argument("--proxies", default="hawq-v2,fisher,evoproxy-zoo,mean-bits", help="proxies ranked in (a)")
    p.add_argument("--proxy", default="hawq-v2", help="the proxy that allocates in (b)")
    p.add_argument("--images", type=int, default=256, help="calibration images, distilled and real (default 256)")
    p.add_argument("--stats-batch", type=int, default=64, help="images the statistics are computed on (default 64)")
    p.add_argument("--eval-size", type=int, default=10000, help="test images PTQ is measured on (default 10000)")
    p.add_argument("--iters", type=int, default=DistillSettings.iters, help="Adam steps of the distillation")
    p.add_argument("--lr", type=float, default=DistillSettings.lr, help="Adam's learning rate of the distillation")
    args = p.parse_args()
    budgets = {**BUDGETS, **per_model(args.budgets_mb)}
    rank_rows, ptq_rows = [], []
    for model_name in args.models.split(","):
        ranks, ptq = run_model(model_name, args, [float(b) for b in budgets[model_name].split(",")])
        rank_rows += ranks
        ptq_rows += ptq
    print(
        f"(a) mean ρ (%) on each bench's held-out split, statistics on {args.stats_batch} real or distilled "
        "calibration images: 5 draws of 50 configurations, and all configurations at once"
    )
    cols = ["model", "proxy", "real_draws", "distilled_draws", "real_all", "distilled_all"]
    print(format_table(rank_rows, cols, ["model", "proxy", "real 5×50", "distilled 5×50", "real all", "distilled all"]))
    print(
        f"\n(b) PTQ top-1 (%), W2-4 (first and last layer 8) A8, BatchNorm re-estimated, {args.eval_size} test images; "
        f"{args.proxy}'s allocation on real statistics, calibrated on {args.images} real images (real) or on "
        f"{args.images} distilled ones (distilled calib); data-free: allocated on distilled statistics too "
        f"(same bits: whether the two allocations agree); distillation {args.iters} Adam steps, lr {args.lr:g}"
    )
    cols = ["model", "budget", "fp", "real", "calib", "free", "gap", "same"]
    heads = ["model", "budget (MB)", "float", "real", "distilled calib", "data-free", "data-free − real", "same bits"]
    print(format_table(ptq_rows, cols, heads))


if __name__ == "__main__":
    main()
