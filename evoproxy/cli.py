"""The `evoproxy` command line."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from . import __version__
from .errors import EvoproxyError

if TYPE_CHECKING:  # imported lazily at run time, so that `evoproxy --help` starts fast
    from .stats import StatsSettings


# `evoproxy evolve --preset`: values of the flags left out. "paper" is the EMQ paper's (and
# EvolutionConfig's defaults); "strong" is the setting of README's study that beats every
# handcrafted proxy on the default bench's held-out split.
EVOLVE_PRESETS = {
    "paper": {"population": 20, "iterations": 1000, "samples": 50, "islands": 1, "init": "none"},
    "strong": {"population": 50, "iterations": 2000, "samples": 0, "islands": 4, "init": "fisher"},
}


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="registry name (default, resnet20-fmnist) or package.module:function returning an nn.Module")
    p.add_argument("--weights", help="state_dict file to load into the model (overrides a registry model's checkpoint)")


def _calibration(args) -> tuple[torch.Tensor, torch.Tensor]:
    from .data import calibration_batch
    if args.calib is None:
        return calibration_batch(args.batch_size)
    path = Path(args.calib)
    if not path.is_file():
        raise EvoproxyError(f"calibration file {path} does not exist")
    try:
        blob = torch.load(path, weights_only=True)
        images, labels = blob["images"][:args.batch_size], blob["labels"][:args.batch_size]
    except Exception:
        raise EvoproxyError(f"{path} must be a torch.save'd dict with 'images' (float, N×C×H×W, normalized) "
                            "and 'labels' (int64, N)") from None
    return images, labels


def _add_stats_args(p: argparse.ArgumentParser) -> None:
    """Calibration batch, statistics settings and cache: what `_stats_settings` and `_model_stats` read."""
    p.add_argument("--batch-size", type=int, default=64, help="calibration images used (default 64)")
    p.add_argument("--calib", help="calibration file (torch.save'd dict of 'images' and 'labels'); "
                                   "default: the Fashion-MNIST subset shipped in the package")
    p.add_argument("--hutchinson-samples", type=int, default=64, help="most Hutchinson samples (default 64)")
    p.add_argument("--hutchinson-tol", type=float, default=1e-3, help="relative trace change that stops sampling")
    p.add_argument("--power-iters", type=int, default=20, help="most power iterations per layer (default 20)")
    p.add_argument("--power-tol", type=float, default=1e-3, help="relative eigenvalue change that stops iterating")
    p.add_argument("--act-max-elems", type=int, default=65536,
                   help="cap on stored activation elements per layer (spatial subsampling; default 65536)")
    p.add_argument("--seed", type=int, default=0, help="seed of the statistics' random probes (default 0)")
    p.add_argument("--cache-dir", help="statistics cache (default $EVOPROXY_CACHE_DIR or ~/.cache/evoproxy)")


def _stats_settings(args) -> StatsSettings:
    """The StatsSettings of the flags `_add_stats_args` adds."""
    from .stats import StatsSettings
    return StatsSettings(args.hutchinson_samples, args.hutchinson_tol, args.power_iters, args.power_tol,
                         args.act_max_elems, args.seed)


def _model_stats(args, settings: StatsSettings | None = None) -> tuple:
    """The model of --model/--weights, its canonical name and its statistics (from the cache or
    computed, with progress on stderr), with `settings` or else those of the stats flags."""
    from .models import load_model
    from .stats import load_or_compute_stats
    model, name = load_model(args.model, args.weights)
    stats, _ = load_or_compute_stats(model, *_calibration(args), name, settings or _stats_settings(args),
                                     args.cache_dir, log=lambda msg: print(f"[stats] {msg}", file=sys.stderr))
    return model, name, stats


def cmd_stats(args) -> None:
    from .models import load_model
    from .stats import load_or_compute_stats
    from .table import format_table

    settings = _stats_settings(args)
    model, name = load_model(args.model, args.weights)
    images, labels = _calibration(args)
    log = (lambda msg: print(f"[stats] {msg}", file=sys.stderr)) if not args.json else (lambda msg: None)
    stats, hit = load_or_compute_stats(model, images, labels, name, settings, args.cache_dir, not args.no_cache, log)
    rows = stats.table()
    if args.json:
        print(json.dumps({"model": stats.model, "weights_hash": stats.weights_hash, "batch_hash": stats.batch_hash,
                          "batch_size": len(images), "settings": stats.to_blob()["settings"],
                          "synflow_log_scale": stats.synflow_log_scale,
                          "hutchinson_samples_used": stats.hutchinson_samples_used,
                          "timings_s": stats.timings, "from_cache": hit, "layers": rows}, indent=2))
        return
    print(f"{stats.model}: {len(rows)} quantizable layers, calibration batch {len(images)}, "
          f"{'from cache' if hit else 'computed'}")
    cols = ["index", "name", "kind", "shape", "params", "macs", "hessian_trace", "hessian_eig", "grad_norm",
            "act_std", "synflow"]
    print(format_table(rows, cols, ["#", "layer", "kind", "shape", "params", "MACs", "trace(H)", "λmax(H)",
                                    "‖G‖", "std(A)", "synflow"]))
    print(f"SynFlow values are scaled by e^-{stats.synflow_log_scale:.1f}; "
          f"Hutchinson used {stats.hutchinson_samples_used} samples; "
          + ", ".join(f"{k} {v:.2f} s" for k, v in stats.timings.items()))


def cmd_train(args) -> None:
    from .models import MODELS
    from .train import make_calibration_subset, train

    if args.model not in MODELS:
        raise EvoproxyError(f"unknown registry model {args.model!r}: use one of {', '.join(MODELS)}")
    model, acc = train(args.model, args.epochs, args.batch_size, args.lr, args.seed, args.data_dir, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / MODELS[args.model].checkpoint)
    make_calibration_subset(out / "calib_fmnist.pt", data_dir=args.data_dir)
    print(f"test accuracy {acc:.2f}%; wrote {out / MODELS[args.model].checkpoint} and {out / 'calib_fmnist.pt'}")


def _parse_bits(text: str, flag: str) -> list[int]:
    try:
        bits = sorted({int(b) for b in text.split(",")})
    except ValueError:
        raise EvoproxyError(f"{flag} takes comma-separated bit-widths such as 2,3,4; got {text!r}") from None
    return bits


def _parse_fixed(text: str, layers, bits: int) -> dict[int, int]:
    """--fixed: 'none', or comma-separated 'first', 'last', layer indices or layer names."""
    if text == "none":
        return {}
    names = {l.name: l.index for l in layers}
    fixed = {}
    for item in text.split(","):
        if item in ("first", "last"):
            fixed[0 if item == "first" else len(layers) - 1] = bits
        elif item.isdigit() and int(item) < len(layers):
            fixed[int(item)] = bits
        elif item in names:
            fixed[names[item]] = bits
        else:
            raise EvoproxyError(f"--fixed: {item!r} is not first, last, a layer index below {len(layers)} "
                                "or a layer name (see `evoproxy stats`)")
    return fixed


def cmd_bench_build(args) -> None:
    from .bench import describe
    from .bench_build import build_bench
    from .data import evaluation_data
    from .layers import layer_registry
    from .models import MODELS, load_model
    from .quant.fakequant import QuantSettings

    model, name = load_model(args.model, args.weights)
    if name not in MODELS:
        raise EvoproxyError("bench build measures Fashion-MNIST accuracy, so --model must be a registry model")
    layers = layer_registry(model, MODELS[name].input_shape)
    calib, images, labels = evaluation_data(args.eval_size, args.data_dir)
    bench = build_bench(Path(args.out), model, name, layers, calib, images, labels, bit_choices=_parse_bits(args.bits, "--bits"),
                        n_configs=args.configs, fixed=_parse_fixed(args.fixed, layers, args.fixed_bits),
                        settings=QuantSettings(args.act_bits, not args.no_bn_recal), seed=args.seed, jobs=args.jobs,
                        device=args.device,
                        eval_desc={"dataset": "fashion-mnist", "split": "test", "first": args.eval_size},
                        name=args.name)
    print(describe(bench))


def cmd_bench_show(args) -> None:
    from .bench import describe, load_bench, shipped_benches

    for ref in args.bench or shipped_benches():
        print(describe(load_bench(ref)))


def cmd_validity(args) -> None:
    from .space import load_space
    from .stats import StatsSettings
    from .validity import measure_validity

    if args.samples < 1:
        raise EvoproxyError("--samples must be at least 1")
    space = load_space(args.space)
    _, _, stats = _model_stats(args, StatsSettings())
    report = measure_validity(space, stats, args.samples, osp=not args.no_osp, seed=args.seed)
    if args.json:
        print(json.dumps({"space": report.space, "osp": report.osp, "seed": args.seed, "model": stats.model,
                          "samples": report.samples, "valid": report.valid, "rate": report.rate,
                          "reasons": report.reasons}, indent=2))
        return
    print(f"{report.space} space, {'with' if report.osp else 'without'} OSP, seed {args.seed}, {stats.model}: "
          f"{report.valid}/{report.samples} sampled proxies valid ({100 * report.rate:.2f} %)")
    for reason, count in report.reasons.items():
        print(f"  {count:7d}  {reason}")


def _resolve_proxies(spec: str) -> list:
    from .proxies import available_proxies, get_proxy
    names = available_proxies() if spec == "all" else [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        raise EvoproxyError("--proxies is empty: give all, names separated by commas, or a proxy .json file")
    return [get_proxy(n) for n in names]


def cmd_rank(args) -> None:
    from .bench import load_bench
    from .rank import TABLE_COLUMNS, TABLE_HEADERS, bench_stats, plot_ranking, rank_proxy
    from .table import format_table

    bench = load_bench(args.bench)
    proxies = _resolve_proxies(args.proxies)
    entries = bench.split(args.split)
    if len(entries) < 2:
        raise EvoproxyError(f"the {args.split} split of {bench.name} has {len(entries)} configurations; need 2 or more")
    log = (lambda msg: None) if args.json else (lambda msg: print(f"[stats] {msg}", file=sys.stderr))
    stats, stats_seconds, _ = bench_stats(bench, log=log)
    results = [rank_proxy(p, stats, entries, args.samples, args.repeats, args.seed) for p in proxies]
    if args.plot:
        plot_ranking(results, entries, args.plot)
    if args.json:
        print(json.dumps({"bench": bench.name, "split": args.split, "configs": len(entries),
                          "samples": args.samples, "repeats": args.repeats, "stats_seconds": stats_seconds,
                          "results": [r.to_dict() for r in results]}, indent=2))
        return
    rows = []
    for r in results:
        row = {**r.table_row(r.proxy), "ms": 1e3 * r.seconds_per_config}
        if r.error:
            row.update({k: r.error for k in ("rho@20%", "rho@50%", "rho@100%")})
        rows.append(row)
    print(f"{bench.name}, {args.split} split: {len(entries)} configurations; ρ in %, mean ± std over "
          f"{args.repeats} draws of {args.samples or 'all'}; mean ρ (all) and τ over the whole split")
    print(format_table(rows, [*TABLE_COLUMNS, "ms"], [*TABLE_HEADERS, "ms/config"]))
    print(f"statistics (computed once, cached): {stats_seconds:.2f} s")
    if args.plot:
        print(f"wrote {args.plot}")


def cmd_evolve(args) -> None:
    from .evolution import Evolution, EvolutionConfig
    from .fitness import CSPSettings
    from .proxies import get_genome
    from .report import full_report

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.resume:
        run_dir, config = Path(args.resume), None
    else:
        for key, value in EVOLVE_PRESETS[args.preset].items():
            if getattr(args, key) is None and not (key == "iterations" and args.hours):
                setattr(args, key, value)
        init = [] if args.init == "none" else args.init.split(",")
        config = EvolutionConfig(
            bench=args.bench, space=args.space, population=args.population,
            iterations=args.iterations or 0,  # unset only with --hours: 0, no limit but the time
            ratio=args.ratio, p_crossover=args.p_crossover, p_mutation=args.p_mutation, samples=args.samples,
            seed=args.seed, strategy=args.strategy, osp=not args.no_osp, dps=not args.no_dps,
            equivalence=not args.no_equivalence,
            csp=CSPSettings(conflict=not args.no_conflict, invalid=not args.no_invalid,
                            insensitive=not args.no_insensitive, timeout_s=args.candidate_timeout),
            offspring=args.offspring, islands=args.islands, migration=args.migration, select_top=args.select_top,
            init=tuple(get_genome(ref).to_json() for ref in init),
            patience=args.patience if args.patience is not None else (200 if args.hours else 0))
        name = args.name or f"{config.space}-{config.bench}-s{config.seed}"
        run_dir = Path(args.runs_dir) / name
    backend = None
    if args.backend == "dask":
        try:
            from dask.distributed import Client
        except ImportError:
            raise EvoproxyError("--backend dask needs dask.distributed: pip install 'dask[distributed]'") from None
        client = Client(args.scheduler) if args.scheduler else Client(processes=True)
        log(f"dask cluster: {client.dashboard_link}")
        backend = "dask"
    evo = Evolution(run_dir, config, jobs=args.jobs, backend=backend, log=log)
    try:
        islands = f"{evo.config.islands} islands of " if evo.config.islands > 1 else ""
        log(f"run {run_dir}: {evo.config.space} space on {evo.config.bench}, {islands}|P|={evo.config.population}, "
            f"{'until ' + str(args.hours) + ' h' if args.hours else str(evo.config.iterations) + ' iterations'}")
        evo.run(hours=args.hours, iterations=args.iterations if args.resume else None, log_every=args.log_every)
    finally:
        evo.close()
    if not args.no_report:
        print(full_report(run_dir)[0])
    print(f"\nsaved: {run_dir / 'best.json'}, {run_dir / 'best.py'}; continue or extend with "
          f"`evoproxy evolve --resume {run_dir} [--iterations N]`")


def cmd_show(args) -> None:
    from .report import full_report, run_summary

    if args.quick:
        s = run_summary(args.run)
        print(f"iteration {s['iteration']}, {s['candidates']} candidates, {s['choice']}:\n  {s['best']['formula']}")
        return
    print(full_report(args.run)[0])


def _parse_sizes(text: str) -> list[float]:
    try:
        return sorted({float(x) for x in text.split(",")})
    except ValueError:
        raise EvoproxyError(f"--sizes takes comma-separated budgets in MB such as 0.08,0.1; got {text!r}") from None


def _add_allocation_args(p: argparse.ArgumentParser) -> None:
    """Model, bit choices, fixed layers, solver and statistics: what `_proxy_problem` reads."""
    _add_model_args(p)
    p.add_argument("--bits", default="2,3,4", help="weight bit choices per layer (default 2,3,4)")
    p.add_argument("--act-bits", type=int, default=8, help="activation bits of every layer (default 8)")
    p.add_argument("--fixed", default="first,last",
                   help="layers kept at --fixed-bits weights: first, last, indices or names, or none "
                        "(default first,last)")
    p.add_argument("--fixed-bits", type=int, default=8)
    p.add_argument("--method", default="ilp", help="solver: ilp (exact, size and BOPs), dp (exact, size only) "
                                                   "or sample (the paper's random search; default ilp)")
    _add_stats_args(p)


def _proxy_problem(proxy, stats, args, size_mb: float, bops: float | None = None):
    """The allocation problem of `proxy` under --bits, --act-bits, --fixed and --fixed-bits (fixed
    layers keep --act-bits activations, as in a benchmark)."""
    from .allocate.from_proxy import proxy_problem
    layers = [layer.info for layer in stats.layers]
    fixed = {i: (b, args.act_bits) for i, b in _parse_fixed(args.fixed, layers, args.fixed_bits).items()}
    return proxy_problem(proxy, stats, size_mb, bops=bops, w_bits=_parse_bits(args.bits, "--bits"),
                         act_bits=args.act_bits, fixed=fixed)


def cmd_allocate(args) -> None:
    from .allocate import allocate
    from .bitconfig import allocation_record, average_bits, plot_bits
    from .proxies import get_proxy
    from .table import format_table

    proxy = get_proxy(args.proxy)
    _, name, stats = _model_stats(args)
    bops = None if args.bops_g is None else args.bops_g * 1e9
    problem = _proxy_problem(proxy, stats, args, args.size_mb, bops)
    result = allocate(problem, args.method)
    layers, sensitivities = problem.layers, proxy.sensitivities(stats).tolist()
    Path(args.out).write_text(json.dumps(allocation_record(result, layers, sensitivities, model=name,
                                                           proxy=proxy.name), indent=2) + "\n")
    if args.plot:
        plot_bits([l.name for l in layers], result.w_bits, problem.fixed, args.plot,
                  f"{proxy.name} on {name}: {result.size_mb:.4f} MB of {args.size_mb} MB")
    rows = [{"index": l.index, "name": l.name, "params": l.params, "bits": w,
             "role": "fixed" if l.index in problem.fixed else "", "sensitivity": s}
            for l, w, s in zip(layers, result.w_bits, sensitivities)]
    print(f"{proxy.name} on {name}: weight bits {','.join(map(str, problem.w_choices))} per layer, "
          f"activations {args.act_bits}-bit")
    print(format_table(rows, ["index", "name", "params", "bits", "role", "sensitivity"],
                       ["#", "layer", "params", "W bits", "", "sensitivity"]))
    print(f"size {result.size_mb:.6f} MB (budget {args.size_mb} MB); BOPs {result.bops / 1e9:.4f} G "
          + (f"(budget {args.bops_g} G)" if bops else "(no BOPs budget)")
          + f"; average {average_bits(layers, result.w_bits):.3f} weight bits")
    print(f"{result.method}: {'proven optimal' if result.optimal else 'not proven optimal'} "
          f"in {result.seconds * 1e3:.1f} ms" + (f"; {result.note}" if result.note else ""))
    print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))


def cmd_quantize(args) -> None:
    from .bitconfig import average_bits, load_bit_config
    from .layers import layer_registry
    from .models import MODELS, load_model
    from .quant.cost import model_bops, model_size_mb
    from .quant.fakequant import QuantSettings
    from .quant.ptq import PtqEvaluator
    from .table import format_table

    model, name = load_model(args.model, args.weights)
    if name not in MODELS:
        raise EvoproxyError("quantize measures Fashion-MNIST accuracy, so --model must be a registry model")
    layers = layer_registry(model, MODELS[name].input_shape)
    bits, act_bits = load_bit_config(args.bits_file, [l.name for l in layers])
    settings = QuantSettings(act_bits, not args.no_bn_recal)
    evaluator = PtqEvaluator.on_fmnist(model, layers, args.eval_size, settings, args.data_dir)
    full = [32] * len(layers)
    rows = [{"model": "full precision", "acc": evaluator.fp_accuracy(), "size": model_size_mb(layers, full),
             "gbops": model_bops(layers, full, 32) / 1e9, "avg": 32.0},
            {"model": f"quantized, A{act_bits}", "acc": evaluator.accuracy(bits), "size": model_size_mb(layers, bits),
             "gbops": model_bops(layers, bits, act_bits) / 1e9, "avg": average_bits(layers, bits)}]
    print(f"{name} with {args.bits_file}: Fashion-MNIST test accuracy on the first {args.eval_size} images; "
          f"{settings.weight_quantizer} weights, BatchNorm {'re-estimated' if settings.bn_recalibration else 'kept'}")
    print(format_table(rows, ["model", "acc", "size", "gbops", "avg"],
                       ["model", "top-1 (%)", "size (MB)", "GBOPs", "avg W bits"]))
    print(f"accuracy change {rows[1]['acc'] - rows[0]['acc']:+.2f} points at "
          f"{rows[0]['size'] / rows[1]['size']:.1f}× smaller weights")


def cmd_pareto(args) -> None:
    from .models import MODELS
    from .pareto import evaluate_points, plot_pareto, sweep
    from .quant.fakequant import QuantSettings
    from .quant.ptq import PtqEvaluator
    from .table import format_table

    sizes = _parse_sizes(args.sizes)
    if args.plot and not args.evaluate:
        raise EvoproxyError("--plot draws accuracy against size: add --evaluate ptq")
    proxies = _resolve_proxies(args.proxies)
    model, name, stats = _model_stats(args)
    if args.evaluate and name not in MODELS:
        raise EvoproxyError("--evaluate ptq measures Fashion-MNIST accuracy, so --model must be a registry model")
    problems = [(p.name, _proxy_problem(p, stats, args, sizes[0])) for p in proxies]
    points = sweep(problems, sizes, args.method)
    fp_accuracy = None
    if args.evaluate:
        evaluator = PtqEvaluator.on_fmnist(model, problems[0][1].layers, args.eval_size,
                                           QuantSettings(args.act_bits, not args.no_bn_recal), args.data_dir)
        fp_accuracy = evaluator.fp_accuracy()
        points = evaluate_points(points, evaluator)
    if args.plot:
        plot_pareto(points, args.plot, fp_accuracy, f"{name}, PTQ W{args.bits}A{args.act_bits}"
                    f"{'' if args.no_bn_recal else ' with BatchNorm re-estimated'}, first {args.eval_size} test images")
    if args.json:
        print(json.dumps({"model": name, "sizes_mb": sizes, "method": args.method, "evaluate": args.evaluate,
                          "eval_size": args.eval_size if args.evaluate else None, "fp_accuracy": fp_accuracy,
                          "points": [p.to_dict() for p in points]}, indent=2))
        return
    rows = [{"proxy": p.proxy, "kind": p.kind, "budget": "-" if p.budget_mb is None else p.budget_mb,
             "size": p.size_mb, "gbops": p.bops / 1e9, "avg": p.avg_bits,
             "optimal": {True: "yes", False: "no", None: "-"}[p.optimal], "acc": p.accuracy} for p in points]
    columns, headers = (["proxy", "kind", "budget", "size", "gbops", "avg", "optimal"],
                        ["proxy", "kind", "budget (MB)", "size (MB)", "GBOPs", "avg W bits", "optimal"])
    if args.evaluate:
        columns, headers = columns + ["acc"], headers + ["top-1 (%)"]
        print(f"{name}: PTQ accuracy on the first {args.eval_size} Fashion-MNIST test images, BatchNorm "
              f"{'kept' if args.no_bn_recal else 're-estimated'}; full precision {fp_accuracy:.2f} %")
    print(format_table(rows, columns, headers))
    if args.plot:
        print(f"wrote {args.plot}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evoproxy", description=__doc__ + " Evolve training-free proxies for "
                                     "mixed-precision quantization and use them to allocate bit-widths.")
    parser.add_argument("--version", action="version", version=f"evoproxy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("stats", help="per-layer statistics (W, G, A, Hessian, SynFlow) of a model",
                       description="Compute (or load from the cache) the per-layer statistics that proxies read, "
                                   "and print one row per quantizable layer.")
    _add_model_args(p)
    _add_stats_args(p)
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("train", help="train a registry model on Fashion-MNIST (remakes the shipped checkpoint)",
                       description="Train a registry model from scratch on Fashion-MNIST and write its state_dict "
                                   "and the 512-image calibration subset.")
    p.add_argument("--model", default="resnet20-fmnist")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files (default $EVOPROXY_FMNIST_DIR or "
                                      "/usr/share/datasets/fashion-mnist)")
    p.add_argument("--device", default="cpu", help="torch device to train on (cpu, cuda)")
    p.add_argument("--out", default=".", help="folder to write the checkpoint and calibration subset to")
    p.set_defaults(func=cmd_train)

    bench = sub.add_parser("bench", help="build or inspect benchmarks of bit configurations with measured accuracy",
                           description="Benchmarks (MQ-Bench style) hold bit configurations of one model and their "
                                       "measured post-training-quantization accuracy.")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    p = bsub.add_parser("build", help="measure configurations into a bench file (resumable)",
                        description="Sample distinct bit configurations (seeded), fake-quantize the model for each "
                                    "(weights per-channel MSE-clipped, activations per-tensor, BatchNorm "
                                    "re-estimated), measure Fashion-MNIST test accuracy and append each result to "
                                    "--out. Rerunning the same command continues a killed build.")
    _add_model_args(p)
    p.add_argument("--bits", default="2,3,4", help="weight bit choices per layer (default 2,3,4)")
    p.add_argument("--configs", type=int, default=500, help="number of distinct configurations (default 500)")
    p.add_argument("--fixed", default="first,last",
                   help="layers kept at --fixed-bits: first, last, indices or names, or none (default first,last)")
    p.add_argument("--fixed-bits", type=int, default=8)
    p.add_argument("--act-bits", type=int, default=8, help="activation bits of every layer (default 8)")
    p.add_argument("--no-bn-recal", action="store_true",
                   help="do not re-estimate BatchNorm statistics after weight quantization")
    p.add_argument("--eval-size", type=int, default=2000, help="first N test images used (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the configuration sampling")
    p.add_argument("--jobs", type=int, default=1, help="joblib worker processes (default 1)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--name", help="bench name (default: the file name)")
    p.add_argument("--out", required=True, help="bench file to write or continue (.jsonl)")
    p.set_defaults(func=cmd_bench_build)
    p = sub.add_parser("rank", help="rank proxies on a benchmark by Spearman@topk (EMQ Table 1)",
                       description="Score each configuration of a benchmark split with each proxy "
                                   "(Σ_l b_l·s_l unless the proxy defines its own score) and report Spearman ρ on "
                                   "the top 20%%, 50%% and 100%% by measured accuracy (EMQ eq. 4), over repeated "
                                   "draws of --samples configurations, plus Kendall τ over the whole split.")
    p.add_argument("--bench", default="fmnist-resnet20-w234", help="shipped bench name or bench file")
    p.add_argument("--proxies", default="all",
                   help="all, or comma-separated names, genome .json files or package.module:function")
    p.add_argument("--samples", type=int, default=50, help="configurations per draw (0 = the whole split)")
    p.add_argument("--repeats", type=int, default=5, help="number of draws (default 5)")
    p.add_argument("--split", default="held-out", choices=["search", "held-out", "all"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", help="PNG file: score against accuracy per proxy, coloured by size")
    p.set_defaults(func=cmd_rank)

    p = sub.add_parser("evolve", help="evolve a proxy on a benchmark (EMQ); the product's main job",
                       description="Evolve training-free proxies (EMQ Algorithm 1) on a benchmark's search split: "
                                   "tournament selection, crossover, mutation, diversity-prompting selection (DPS), "
                                   "operation sampling prioritization (OSP) and compatibility screening (CSP). "
                                   "Defaults are the paper's settings (--preset strong: a stronger search). "
                                   "Every candidate is stored in runs/<name>/run.db as it is judged; a killed run "
                                   "continues with --resume.")
    p.add_argument("--bench", default="fmnist-resnet20-w234", help="shipped bench name or bench file")
    p.add_argument("--space", default="branched", help="search space: sequential, branched, dag, or a .toml file")
    p.add_argument("--preset", choices=sorted(EVOLVE_PRESETS), default="paper",
                   help="paper (default): the EMQ paper's settings, |P| 20, N 1000, fitness on 50 configurations; "
                        "strong: fitness on the whole search split, 4 islands of |P| 50, N 2000, started from "
                        "Fisher (beats every handcrafted proxy on the default bench's held-out split, see README). "
                        "Flags given beside it override it")
    p.add_argument("--population", type=int, help="|P| (paper 20, strong 50)")
    p.add_argument("--iterations", type=int, help="N (paper 1000, strong 2000; unlimited with --hours; with "
                                                   "--resume, the new total, to extend a finished run)")
    p.add_argument("--hours", type=float, help="wall-clock budget; with it the islands restart (each keeping its "
                                               "best) after --patience iterations without improvement")
    p.add_argument("--patience", type=int, help="iterations without improvement before a restart (default: 200 "
                                                "with --hours, else never)")
    p.add_argument("--ratio", type=float, default=0.25, help="tournament selection ratio r (default 0.25)")
    p.add_argument("--p-crossover", type=float, default=0.5)
    p.add_argument("--p-mutation", type=float, default=0.5)
    p.add_argument("--samples", type=int, help="search-split configurations the fitness is measured on (paper 50, "
                        "strong 0); the rest of the search split chooses the result (--select-top); 0: the "
                        "whole search split, and the fittest proxy is the result")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy", default="evolution", choices=["evolution", "random"],
                   help="random: random search with the same budget (ablation baseline)")
    p.add_argument("--offspring", type=int, default=1, help="offspring per island and iteration, judged together (default 1)")
    for flag, what in (("osp", "operation sampling prioritization"), ("dps", "diversity-prompting selection"),
                       ("equivalence", "WL-hash equivalence checking"), ("conflict", "conflict-awareness rejection"),
                       ("invalid", "naive invalid check"), ("insensitive", "sensitivity-perception rejection")):
        p.add_argument(f"--no-{flag}", action="store_true", help=f"switch off {what}")
    p.add_argument("--init", metavar="P[,P...]",
                   help="start the population from these proxies (fisher, emq-paper, genome .json files or run "
                        "directories), the rest sampled as usual (paper: none, strong: fisher; 'none' for none)")
    p.add_argument("--islands", type=int, help="populations of |P| that evolve apart (paper 1, strong 4)")
    p.add_argument("--migration", type=int, default=50, metavar="M",
                   help="with --islands, every M iterations each island's best joins the next island (default 50)")
    p.add_argument("--select-top", type=int, default=20, metavar="K",
                   help="the result is the best of the K fittest distinct proxies on the search configurations "
                        "outside the fitness sample, which tracks the held-out split better than fitness "
                        "(default 20; 0: the fittest)")
    p.add_argument("--candidate-timeout", type=float, default=5.0, help="seconds after which a candidate is rejected")
    p.add_argument("--jobs", type=int, default=1, help="joblib workers for fitness (default 1)")
    p.add_argument("--backend", choices=["loky", "dask"], help="joblib backend (dask: --scheduler ADDRESS)")
    p.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster)")
    p.add_argument("--name", help="run name (default SPACE-BENCH-sSEED)")
    p.add_argument("--runs-dir", default="runs", help="where runs are stored (default runs/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its stored settings")
    p.add_argument("--log-every", type=int, default=100, help="progress line every N iterations (default 100; 0: none)")
    p.add_argument("--no-report", action="store_true", help="skip the final held-out / transfer report")
    p.set_defaults(func=cmd_evolve)

    p = sub.add_parser("show", help="report of a finished or running evolution run",
                       description="Best proxy of a run, its ρ@k on the held-out split and on a benchmark of "
                                   "another model, beside the handcrafted proxies.")
    p.add_argument("run", help="run directory (runs/<name>)")
    p.add_argument("--quick", action="store_true", help="only the best formula so far (no correlations)")
    p.set_defaults(func=cmd_show)

    p = bsub.add_parser("show", help="summarise benchmarks (default: the shipped ones)")
    p.add_argument("bench", nargs="*", help="shipped bench names or bench files")
    p.set_defaults(func=cmd_bench_show)

    p = sub.add_parser("validity", help="share of random proxies of a search space that are valid (EMQ Table 3)",
                       description="Sample random proxies from a search space, evaluate each on the model's "
                                   "statistics, and print the share that is valid and why the others are not.")
    p.add_argument("--space", default="branched",
                   help="search space: sequential, branched, dag or a space TOML file (default branched)")
    p.add_argument("--samples", type=int, default=1000, help="proxies to sample (default 1000)")
    p.add_argument("--no-osp", action="store_true", help="sample operations uniformly, without OSP weights")
    p.add_argument("--seed", type=int, default=0)
    _add_model_args(p)
    p.add_argument("--batch-size", type=int, default=64, help="calibration images used (default 64)")
    p.add_argument("--calib", help="calibration file (default: the shipped Fashion-MNIST subset)")
    p.add_argument("--cache-dir", help="statistics cache (default $EVOPROXY_CACHE_DIR or ~/.cache/evoproxy)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=cmd_validity)

    p = sub.add_parser("allocate", help="per-layer bit-widths that maximise a proxy under a size (and BOPs) budget",
                       description="Choose each layer's weight bits to maximise the proxy's score (Σ_l b_l·s_l, or "
                                   "the proxy's own bit-dependent score) under the size budget and optionally a "
                                   "BOPs budget (multiple-choice knapsack, EMQ eq. 3); print the per-layer bits and "
                                   "write them as a JSON bit configuration.")
    p.add_argument("--proxy", required=True,
                   help="handcrafted name, genome .json file, run directory runs/<name>/ or package.module:function")
    p.add_argument("--size-mb", type=float, required=True,
                   help="budget on the quantizable layers' size in MB (10^6 bytes; biases at 32 bits)")
    p.add_argument("--bops-g", type=float, help="budget in G bit operations per sample (default: none)")
    _add_allocation_args(p)
    p.add_argument("--out", default="alloc.json", help="JSON bit configuration to write (default alloc.json)")
    p.add_argument("--plot", help="PNG file: bits per layer as bars (EMQ Figure 6)")
    p.set_defaults(func=cmd_allocate)

    p = sub.add_parser("quantize", help="fake-quantize a model with a bit configuration and measure its accuracy",
                       description="Fake-quantize the model with the weight bits of a JSON bit configuration (as "
                                   "`evoproxy allocate` writes, or any object with 'bits' in layer-registry order) "
                                   "and print its Fashion-MNIST test accuracy, size and BOPs beside the "
                                   "full-precision model's.")
    _add_model_args(p)
    p.add_argument("--bits-file", required=True, help="JSON bit configuration")
    p.add_argument("--eval-size", type=int, default=10000, help="first N test images used (default 10000, all)")
    p.add_argument("--no-bn-recal", action="store_true",
                   help="do not re-estimate BatchNorm statistics after weight quantization")
    p.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files")
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser("pareto", help="allocations of several proxies at several size budgets (EMQ Figure 5)",
                       description="Allocate bits with each proxy at each size budget, list them with the "
                                   "uniform-precision configurations (every free layer at one bit choice) and, "
                                   "with --evaluate ptq, their post-training-quantization accuracy.")
    p.add_argument("--proxies", required=True,
                   help="all, or comma-separated names, genome .json files, run directories or package.module:function")
    p.add_argument("--sizes", required=True, help="comma-separated size budgets in MB")
    _add_allocation_args(p)
    p.add_argument("--evaluate", choices=["ptq"], help="measure each configuration's accuracy by PTQ")
    p.add_argument("--eval-size", type=int, default=2000, help="first N test images used (default 2000)")
    p.add_argument("--no-bn-recal", action="store_true",
                   help="do not re-estimate BatchNorm statistics after weight quantization")
    p.add_argument("--data-dir", help="folder of the Fashion-MNIST IDX files")
    p.add_argument("--plot", help="PNG file: accuracy against size per proxy (needs --evaluate)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_pareto)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EvoproxyError as exc:
        print(f"evoproxy {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("evoproxy: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
