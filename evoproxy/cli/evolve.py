"""`evoproxy evolve`, `evoproxy show`, `evoproxy runs` and `evoproxy validity`: the search for a
proxy, its report, the list of runs, and the share of valid proxies in a search space."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import EvoproxyError
from .args import add_data_args, add_model_args, exclude_patterns, model_stats, output_folder

MAX_JOBS = 256  # loky starts every worker at once: more would exhaust a machine's memory

# `evoproxy evolve --preset`: values of the flags left out. "zoo" (the default) searches for a
# proxy that transfers: bit-aware space, fitness on the main bench of every shipped model at
# once (the setting of benchmarks/transfer.py, which proves it on the model left out). "paper" is
# the EMQ paper's single-bench setting (and EvolutionSettings's defaults); "strong" is the setting of
# README's study that beats every handcrafted proxy on the default bench's held-out split.
ONE_BENCH = {"benches": "fmnist-resnet20-w234", "space": "branched", "aggregate": "mean"}
EVOLVE_PRESETS = {
    "zoo": {
        "benches": "zoo",
        "space": "bitaware",
        "aggregate": "mean",
        "population": 20,
        "iterations": 500,
        "samples": 0,
        "islands": 2,
        "init": "hawq-v2",
    },
    "paper": {**ONE_BENCH, "population": 20, "iterations": 1000, "samples": 50, "islands": 1, "init": "none"},
    "strong": {**ONE_BENCH, "population": 50, "iterations": 2000, "samples": 0, "islands": 4, "init": "fisher"},
}


def _parse_benches(text: str) -> tuple[str, ...]:
    """--benches: names or files separated by commas; "zoo" stands for the main bench of every
    shipped model."""
    from ..evolve import transfer_benches

    names = [b.strip() for b in text.split(",") if b.strip()]
    benches = tuple(dict.fromkeys(n for b in names for n in (transfer_benches([]) if b == "zoo" else [b])))
    if not benches:
        raise EvoproxyError("--benches is empty: give one or more bench names or files, separated by commas")
    return benches


def cmd_evolve(args) -> None:
    from ..model import check_device
    from ..proxy import get_genome
    from ..evolve import CSPSettings, Evolution, EvolutionSettings, full_report

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    if args.hours is not None and not 0 < args.hours < float("inf"):
        raise EvoproxyError("--hours must be a number of hours above 0")
    device = check_device(args.device)
    if args.log_every < 0 or not (args.jobs == -1 or 1 <= args.jobs <= MAX_JOBS):
        raise EvoproxyError(
            f"--log-every must be at least 0 (0: no progress lines), and --jobs between 1 and "
            f"{MAX_JOBS} (1: this process, N: N workers) or -1 (one per core)"
        )
    if args.resume:
        run_dir, config = Path(args.resume), None
    else:
        for key, value in EVOLVE_PRESETS[args.preset].items():
            if getattr(args, key) is None and not (key == "iterations" and args.hours):
                setattr(args, key, value)
        init = [] if args.init == "none" else args.init.split(",")
        config = EvolutionSettings(
            benches=_parse_benches(args.benches),
            aggregate=args.aggregate,
            space=args.space,
            population=args.population,
            iterations=args.iterations or 0,  # unset only with --hours: 0, no limit but the time
            ratio=args.ratio,
            p_crossover=args.p_crossover,
            p_mutation=args.p_mutation,
            samples=args.samples,
            seed=args.seed,
            strategy=args.strategy,
            osp=not args.no_osp,
            dps=not args.no_dps,
            equivalence=not args.no_equivalence,
            csp=CSPSettings(
                conflict=not args.no_conflict,
                invalid=not args.no_invalid,
                insensitive=not args.no_insensitive,
                timeout_s=args.candidate_timeout,
            ),
            offspring=args.offspring,
            islands=args.islands,
            migration=args.migration,
            select_top=args.select_top,
            init=tuple(get_genome(ref).to_json() for ref in init),
            parsimony=args.parsimony,
            patience=args.patience if args.patience is not None else (200 if args.hours else 0),
        )
        benches = config.benches[0] if len(config.benches) == 1 else f"{len(config.benches)}benches"
        name = args.name or f"{config.space}-{Path(benches).stem}-s{config.seed}"
        if name in ("", ".", "..") or Path(name).name != name:
            raise EvoproxyError(
                f"--name {name!r} must be one folder name (no / or ..): the run goes to {args.runs_dir}/<name>/"
            )
        output_folder(args.runs_dir, "--runs-dir")
        run_dir = Path(args.runs_dir) / name
        if (run_dir / "run.db").exists():
            raise EvoproxyError(
                f"run {name} already exists in {args.runs_dir}: continue it with `evoproxy evolve "
                f"--resume {run_dir}`, or choose another --name"
            )
    backend = None
    if args.backend == "dask":
        try:
            from dask.distributed import Client
        except ImportError:
            raise EvoproxyError("--backend dask needs dask.distributed: pip install 'dask[distributed]'") from None
        client = Client(args.scheduler) if args.scheduler else Client(processes=True)
        log(f"dask cluster: {client.dashboard_link}")
        backend = "dask"
    evo = Evolution(run_dir, config, jobs=args.jobs, backend=backend, log=log, device=device)
    iterations, interrupted = args.iterations if args.resume else None, False
    try:
        if args.resume and evo.finished(args.hours, iterations):
            raise EvoproxyError(
                f"run {run_dir} has done its {evo.iteration - 1} iterations: extend it with "
                f"--iterations N (N > {evo.iteration - 1}), or see it with `evoproxy show {run_dir}`"
            )
        if args.resume:
            log(f"continuing run {run_dir} at iteration {evo.iteration}")
        islands = f"{evo.config.islands} islands of " if evo.config.islands > 1 else ""
        on = ", ".join(evo.config.benches) + (f" ({evo.config.aggregate})" if len(evo.config.benches) > 1 else "")
        log(
            f"run {run_dir}: {evo.config.space} space on {on}, {islands}|P|={evo.config.population}, "
            f"{'until ' + str(args.hours) + ' h' if args.hours else str(evo.config.iterations) + ' iterations'}"
        )
        try:
            evo.run(hours=args.hours, iterations=iterations, log_every=args.log_every)
        except KeyboardInterrupt:  # Evolution.run saved the best so far, where there is one
            interrupted = True
            if not (run_dir / "best.json").is_file():
                raise
    finally:
        evo.close()
    if not args.no_report:
        print(full_report(run_dir)[0])
    if interrupted:
        log(
            f"interrupted: the best proxy so far is in {run_dir / 'best.json'} and {run_dir / 'best.py'}; "
            f"continue the run with `evoproxy evolve --resume {run_dir}`"
        )
        raise KeyboardInterrupt
    print(
        f"\nsaved: {run_dir / 'best.json'}, {run_dir / 'best.py'}; continue or extend with "
        f"`evoproxy evolve --resume {run_dir} [--iterations N]`"
    )


def cmd_show(args) -> None:
    from ..evolve import export_candidates, full_report, leaderboard, run_summary, simplified_report
    from ..table import format_table, printable

    if args.csv:
        print(f"{export_candidates(args.run, args.csv)} candidates written to {printable(args.csv)}")
    if args.top is not None:
        rows = leaderboard(args.run, args.top)
        print(f"the {len(rows)} fittest distinct proxies of {printable(args.run)} (*: the run's result):")
        print(
            format_table(
                rows,
                ["rank", "chosen", "fitness", "rho@20%", "rho@50%", "rho@100%", "complexity", "iteration", "formula"],
                ["#", "", "fitness", "ρ@20%", "ρ@50%", "ρ@100%", "complexity", "iteration", "formula"],
            )
        )
    if args.quick:
        s = run_summary(args.run)
        print(
            f"iteration {s['iteration']}, {s['candidates']} candidates, {s['choice']}:\n  "
            f"{printable(s['best']['formula'])}"
        )
    if not 0 <= args.tolerance < float("inf"):
        raise EvoproxyError(
            f"--tolerance must be a finite number of at least 0 (fitness the simplified proxy may "
            f"lose), got {args.tolerance}"
        )
    if args.simplified:
        print("\n".join(printable(line) for line in simplified_report(args.run, args.tolerance)[0].split("\n")))
    if not (args.quick or args.csv or args.top is not None or args.simplified):
        print(full_report(args.run, tolerance=args.tolerance)[0])


def cmd_runs(args) -> None:
    from ..evolve import list_runs
    from ..table import format_table

    if not Path(args.runs_dir).is_dir():
        raise EvoproxyError(f"{args.runs_dir} is not a folder; give the folder runs are stored in with --runs-dir")
    rows, problems = list_runs(args.runs_dir)
    if not rows:
        print(f"no runs in {args.runs_dir}")
        return
    print(
        format_table(
            rows,
            ["run", "status", "iteration", "candidates", "best", "held-out", "changed"],
            ["run", "status", "iteration", "candidates", "best fitness", "held-out mean ρ %", "last change"],
        )
    )
    for problem in problems:
        print(problem)


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
    """Add the evolve, show, runs and validity commands to the `evoproxy` subcommands `sub`."""
    p = sub.add_parser(
        "evolve",
        help="evolve a proxy on a benchmark (EMQ); the product's main job",
        description="Evolve training-free proxies (EMQ Algorithm 1) on a benchmark's search split: "
        "tournament selection, crossover, mutation, diversity-prompting selection (DPS), "
        "operation sampling prioritization (OSP) and compatibility screening (CSP). "
        "The default (--preset zoo) searches for a proxy that transfers across the six "
        "shipped models; --preset paper is EMQ's single-bench setting, --preset strong a "
        "longer search on that bench. "
        "Every candidate is stored in runs/<name>/run.db as it is judged; a killed run "
        "continues with --resume.",
    )
    p.add_argument(
        "--benches",
        "--bench",
        metavar="B[,B...]",
        help="shipped bench names or bench files, comma-separated; 'zoo': the main bench of every "
        "shipped model (zoo preset: zoo; paper, strong: fmnist-resnet20-w234). With several, each "
        "candidate is judged on every one, on its own model's statistics",
    )
    p.add_argument(
        "--aggregate",
        choices=["mean", "min"],
        help="fitness over several benches: their mean (the presets' choice) or the worst (min)",
    )
    p.add_argument(
        "--space",
        help="search space: bitaware, branched, sequential, dag, or a .toml file (zoo preset: "
        "bitaware; paper, strong: branched)",
    )
    p.add_argument(
        "--preset",
        choices=sorted(EVOLVE_PRESETS),
        default="zoo",
        help="zoo (default): a proxy that transfers to models the search never saw, bit-aware space, "
        "fitness on the whole search split of the main bench of every shipped model, 2 islands of "
        "|P| 20, N 500, started from HAWQ-V2; paper: the EMQ paper's "
        "settings, one bench, |P| 20, N 1000, fitness on 50 configurations; strong: paper's bench "
        "with fitness on the whole search split, 4 islands of |P| 50, N 2000, started from Fisher "
        "(see README). Flags given beside a preset override it",
    )
    p.add_argument("--population", type=int, help="|P| (zoo and paper 20, strong 50)")
    p.add_argument(
        "--iterations",
        type=int,
        help="N (zoo 500, paper 1000, strong 2000; unlimited with --hours; "
        "with --resume, the new total, to extend a finished run)",
    )
    p.add_argument(
        "--hours",
        type=float,
        help="wall-clock budget; with it the islands restart (each keeping its "
        "best) after --patience iterations without improvement",
    )
    p.add_argument(
        "--patience",
        type=int,
        help="iterations without improvement before a restart (default: 200 with --hours, else never)",
    )
    p.add_argument("--ratio", type=float, default=0.25, help="tournament selection ratio r (default 0.25)")
    p.add_argument("--p-crossover", type=float, default=0.5)
    p.add_argument("--p-mutation", type=float, default=0.5)
    p.add_argument(
        "--samples",
        type=int,
        help="search-split configurations per bench the fitness is measured on "
        "(paper 50, zoo and strong 0); the rest of the search split chooses the result "
        "(--select-top); 0: the whole search split, and the fittest proxy is the result",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--strategy",
        default="evolution",
        choices=["evolution", "random"],
        help="random: random search with the same budget (ablation baseline)",
    )
    p.add_argument(
        "--offspring", type=int, default=1, help="offspring per island and iteration, judged together (default 1)"
    )
    for flag, what in (
        ("osp", "operation sampling prioritization"),
        ("dps", "diversity-prompting selection"),
        ("equivalence", "WL-hash equivalence checking"),
        ("conflict", "conflict-awareness rejection"),
        ("invalid", "naive invalid check"),
        ("insensitive", "sensitivity-perception rejection"),
    ):
        p.add_argument(f"--no-{flag}", action="store_true", help=f"switch off {what}")
    p.add_argument(
        "--init",
        metavar="P[,P...]",
        help="start the population from these proxies (fisher, emq-paper, hawq-v2 (bitaware space), "
        "genome .json files or run directories), the rest sampled as usual (zoo: hawq-v2, paper: "
        "none, strong: fisher; 'none' for none)",
    )
    p.add_argument("--islands", type=int, help="populations of |P| that evolve apart (paper 1, zoo 2, strong 4)")
    p.add_argument(
        "--migration",
        type=int,
        default=50,
        metavar="M",
        help="with --islands, every M iterations each island's best joins the next island (default 50)",
    )
    p.add_argument(
        "--select-top",
        type=int,
        default=20,
        metavar="K",
        help="the result is the best of the K fittest distinct proxies on the search configurations "
        "outside the fitness sample, which tracks the held-out split better than fitness "
        "(default 20; 0: the fittest)",
    )
    p.add_argument(
        "--parsimony",
        type=float,
        default=0.0,
        metavar="λ",
        help="selection compares fitness − λ × complexity (inputs and operations, no_ops aside), so "
        "that of two proxies of about equal fitness the simpler wins (default 0)",
    )
    p.add_argument("--candidate-timeout", type=float, default=5.0, help="seconds after which a candidate is rejected")
    p.add_argument("--jobs", type=int, default=1, help="joblib workers for fitness (default 1)")
    p.add_argument(
        "--device",
        default="cpu",
        help="torch device that computes statistics not yet cached (cpu, cuda; default cpu); fitness runs on the CPU",
    )
    p.add_argument("--backend", choices=["loky", "dask"], help="joblib backend (dask: --scheduler ADDRESS)")
    p.add_argument("--scheduler", help="Dask scheduler address (default: a local cluster)")
    p.add_argument("--name", help="run name (default SPACE-BENCH-sSEED)")
    p.add_argument("--runs-dir", default="runs", help="where runs are stored (default runs/)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its stored settings")
    p.add_argument("--log-every", type=int, default=100, help="progress line every N iterations (default 100; 0: none)")
    p.add_argument("--no-report", action="store_true", help="skip the final held-out / transfer report")
    p.set_defaults(func=cmd_evolve)

    p = sub.add_parser(
        "show",
        help="report of a finished or running evolution run",
        description="Best proxy of a run, its ρ@k on the held-out split and on a benchmark of "
        "another model, beside the handcrafted proxies.",
    )
    p.add_argument("run", help="run directory (runs/<name>)")
    p.add_argument("--quick", action="store_true", help="only the best formula so far (no correlations)")
    p.add_argument(
        "--top",
        type=int,
        metavar="K",
        help="only a leaderboard of the K fittest distinct proxies (formula, complexity, fitness and its parts)",
    )
    p.add_argument("--csv", metavar="FILE", help="write every candidate of the run (the run.db table) to a CSV file")
    p.add_argument(
        "--simplified",
        action="store_true",
        help="only the run's result simplified: exact rewrites, then pruning while its fitness on the whole "
        "search split does not drop; a shorter one is saved as RUN/simplified.json (the full report "
        "shows it too)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.0,
        help="fitness the simplified proxy may lose against the result (default 0: equal or better)",
    )
    p.set_defaults(func=cmd_show)

    p = sub.add_parser(
        "runs",
        help="list the runs in a folder",
        description="One line per run: status (running, finished, stopped: continue it with "
        "evolve --resume), iteration, candidates, best fitness, the result's mean ρ on "
        "the held-out split (once `show` or evolve's report measured it), last change.",
    )
    p.add_argument("--runs-dir", default="runs", help="where runs are stored (default runs/)")
    p.set_defaults(func=cmd_runs)

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
