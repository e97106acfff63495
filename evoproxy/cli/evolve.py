"""`evoproxy evolve`: the search for a proxy (EMQ Algorithm 1), stored run by run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import EvoproxyError
from ..files import output_folder
from .args import add_perturb_around_arg
from .parallel import add_backend_args, parallel_backend

if TYPE_CHECKING:  # imported lazily at run time, so that `evoproxy --help` starts fast
    from ..evolve import EvolutionSettings

MAX_JOBS = 256  # loky starts every worker at once: more would exhaust a machine's memory


def _settings(args) -> EvolutionSettings:
    """The EvolutionSettings of the evolve flags: the preset's values (evolve.PRESETS) for the
    flags left out; with --hours and no --iterations, no limit but the time."""
    from ..evolve import CSPSettings, EvolutionSettings

    given = {
        "benches": None if args.benches is None else tuple(b.strip() for b in args.benches.split(",") if b.strip()),
        "aggregate": args.aggregate,
        "space": args.space,
        "population": args.population,
        "iterations": 0 if args.hours and args.iterations is None else args.iterations,
        "samples": args.samples,
        "islands": args.islands,
        "init": None if args.init is None else () if args.init == "none" else tuple(args.init.split(",")),
    }
    return EvolutionSettings.preset(
        args.preset,
        **{key: value for key, value in given.items() if value is not None},
        ratio=args.ratio,
        p_crossover=args.p_crossover,
        p_mutation=args.p_mutation,
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
        migration=args.migration,
        select_top=args.select_top,
        parsimony=args.parsimony,
        perturb_around=args.perturb_around,
        patience=args.patience if args.patience is not None else (200 if args.hours else 0),
    )


def cmd_evolve(args) -> None:
    from ..model import check_device
    from ..evolve import Evolution, full_report
    from ..table import printable_lines

    # A resumed run's names (benches, space, proxies) come from its database: data, escaped.
    log = lambda msg: print(printable_lines(msg), file=sys.stderr, flush=True)  # noqa: E731
    if args.hours is not None and not 0 < args.hours < float("inf"):
        raise EvoproxyError("--hours must be a number of hours above 0")
    device = check_device(args.device)
    if args.log_every < 0 or not (args.jobs == -1 or 1 <= args.jobs <= MAX_JOBS):
        raise EvoproxyError(
            f"--log-every must be at least 0 (0: no progress lines), and --jobs between 1 and "
            f"{MAX_JOBS} (1: this process, N: N workers) or -1 (one per core)"
        )
    if args.resume:
        run_dir, settings = Path(args.resume), None
    else:
        settings = _settings(args)
        benches = settings.benches[0] if len(settings.benches) == 1 else f"{len(settings.benches)}benches"
        name = args.name or f"{settings.space}-{Path(benches).stem}-s{settings.seed}"
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
    backend = parallel_backend(args, log)
    evo = Evolution(run_dir, settings, jobs=args.jobs, backend=backend, log=log, device=device)
    iterations, interrupted = args.iterations if args.resume else None, False
    try:
        if args.resume and evo.finished(args.hours, iterations):
            raise EvoproxyError(
                f"run {run_dir} has done its {evo.iteration - 1} iterations: extend it with "
                f"--iterations N (N > {evo.iteration - 1}), or see it with `evoproxy show {run_dir}`"
            )
        if args.resume:
            log(f"continuing run {run_dir} at iteration {evo.iteration}")
        s = evo.settings
        islands = f"{s.islands} islands of " if s.islands > 1 else ""
        on = ", ".join(s.benches) + (f" ({s.aggregate})" if len(s.benches) > 1 else "")
        log(
            f"run {run_dir}: {s.space} space on {on}, {islands}|P|={s.population}, "
            f"{'until ' + str(args.hours) + ' h' if args.hours else str(s.iterations) + ' iterations'}"
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


def register(sub) -> None:
    """Add the evolve command to the `evoproxy` subcommands `sub`."""
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
    g = p.add_argument_group("preset")
    g.add_argument(
        "--preset",
        choices=["paper", "strong", "zoo"],  # evolve.PRESETS, named here so that --help imports no engine
        default="zoo",
        help="zoo (default): a proxy that transfers to models the search never saw, bit-aware space, "
        "fitness on the whole search split of the main bench of every shipped classifier, 2 islands of "
        "|P| 20, N 500, started from HAWQ-V2; paper: the EMQ paper's "
        "settings, one bench, |P| 20, N 1000, fitness on 50 configurations; strong: paper's bench "
        "with fitness on the whole search split, 4 islands of |P| 50, N 2000, started from Fisher "
        "(docs/results.md). Flags given beside a preset override it",
    )

    g = p.add_argument_group("search space and fitness")
    g.add_argument(
        "--benches",
        "--bench",
        metavar="B[,B...]",
        help="shipped bench names or bench files, comma-separated; 'zoo': the main bench of every "
        "shipped classifier of the zoo (zoo preset: zoo; paper, strong: fmnist-resnet20-w234); 'wide': those "
        "of the wider zoo (other recipes, a wide Linear head, ConvNeXt). With several, each "
        "candidate is judged on every one, on its own model's statistics",
    )
    g.add_argument(
        "--aggregate",
        choices=["mean", "min", "softmin", "q25"],
        help="fitness over several benches: their mean (the presets' choice), the worst (min), a soft minimum "
        "(softmin: -0.05·log mean exp(-f/0.05), near the worst but moved by every bench) or the lower quartile (q25)",
    )
    g.add_argument(
        "--space",
        help="search space: bitaware, branched, sequential, dag, measured (bitaware with the measured output "
        "perturbations MSE, KL, TAYLOR), or a .toml file (zoo preset: bitaware; paper, strong: branched)",
    )
    g.add_argument(
        "--samples",
        type=int,
        help="search-split configurations per bench the fitness is measured on "
        "(paper 50, zoo and strong 0); the rest of the search split chooses the result "
        "(--select-top); 0: the whole search split, and the fittest proxy is the result",
    )
    g.add_argument(
        "--init",
        metavar="P[,P...]",
        help="start the population from these proxies (fisher, emq-paper, hawq-v2 (bitaware space), "
        "genome .json files or run directories), the rest sampled as usual (zoo: hawq-v2, paper: "
        "none, strong: fisher; 'none' for none)",
    )

    g = p.add_argument_group("budget")
    g.add_argument(
        "--iterations",
        type=int,
        help="N (zoo 500, paper 1000, strong 2000; unlimited with --hours; "
        "with --resume, the new total, to extend a finished run)",
    )
    g.add_argument(
        "--hours",
        type=float,
        help="wall-clock budget; with it the islands restart (each keeping its "
        "best) after --patience iterations without improvement",
    )
    g.add_argument(
        "--patience",
        type=int,
        help="iterations without improvement before a restart (default: 200 with --hours, else never)",
    )

    g = p.add_argument_group("population and variation")
    g.add_argument("--population", type=int, help="|P| (zoo and paper 20, strong 50)")
    g.add_argument("--islands", type=int, help="populations of |P| that evolve apart (paper 1, zoo 2, strong 4)")
    g.add_argument(
        "--migration",
        type=int,
        default=50,
        metavar="M",
        help="with --islands, every M iterations each island's best joins the next island (default 50)",
    )
    g.add_argument(
        "--offspring", type=int, default=1, help="offspring per island and iteration, judged together (default 1)"
    )
    g.add_argument("--ratio", type=float, default=0.25, help="tournament selection ratio r (default 0.25)")
    g.add_argument("--p-crossover", type=float, default=0.5)
    g.add_argument("--p-mutation", type=float, default=0.5)
    add_perturb_around_arg(g)
    g.add_argument(
        "--parsimony",
        type=float,
        default=0.0,
        metavar="λ",
        help="selection compares fitness − λ × complexity (inputs and operations, no_ops aside), so "
        "that of two proxies of about equal fitness the simpler wins (default 0)",
    )
    g.add_argument(
        "--strategy",
        default="evolution",
        choices=["evolution", "random"],
        help="random: random search with the same budget (ablation baseline)",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-osp", action="store_true", help="switch off operation sampling prioritization")
    g.add_argument("--no-dps", action="store_true", help="switch off diversity-prompting selection")

    g = p.add_argument_group("screening (CSP)")
    for flag, what in (
        ("equivalence", "WL-hash equivalence checking"),
        ("conflict", "conflict-awareness rejection"),
        ("invalid", "naive invalid check"),
        ("insensitive", "sensitivity-perception rejection"),
    ):
        g.add_argument(f"--no-{flag}", action="store_true", help=f"switch off {what}")
    g.add_argument("--candidate-timeout", type=float, default=5.0, help="seconds after which a candidate is rejected")

    g = p.add_argument_group("result")
    g.add_argument(
        "--select-top",
        type=int,
        default=20,
        metavar="K",
        help="the result is the best of the K fittest distinct proxies on the search configurations "
        "outside the fitness sample, which tracks the held-out split better than fitness "
        "(default 20; 0: the fittest)",
    )

    g = p.add_argument_group("parallelism")
    g.add_argument("--jobs", type=int, default=1, help="joblib workers for fitness (default 1)")
    add_backend_args(g)
    g.add_argument(
        "--device",
        default="cpu",
        help="torch device that computes statistics not yet cached (cpu, cuda; default cpu); fitness runs on the CPU",
    )

    g = p.add_argument_group("run folder and output")
    g.add_argument("--name", help="run name (default SPACE-BENCH-sSEED)")
    g.add_argument("--runs-dir", default="runs", help="where runs are stored (default runs/)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR with its stored settings")
    g.add_argument("--log-every", type=int, default=100, help="progress line every N iterations (default 100; 0: none)")
    g.add_argument("--no-report", action="store_true", help="skip the final held-out / transfer report")
    p.set_defaults(func=cmd_evolve)
