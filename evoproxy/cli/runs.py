"""`evoproxy show` and `evoproxy runs`: the report of a run, and the list of the runs in a folder."""

from __future__ import annotations

from pathlib import Path

from ..errors import EvoproxyError
from ..files import output_file


def cmd_show(args) -> None:
    from ..evolve import export_candidates, full_report, leaderboard, run_summary, simplified_report
    from ..params import check_parameters
    from ..proxy.simplify import CONSTRAINTS as SIMPLIFY
    from ..table import format_table, printable, printable_lines

    if args.csv:
        output_file(args.csv, "--csv")
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
    check_parameters({"tolerance": args.tolerance}, {"tolerance": SIMPLIFY["tolerance"]}, owner="simplify")
    if args.simplified:
        print(printable_lines(simplified_report(args.run, args.tolerance)[0]))
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


def register(sub) -> None:
    """Add the show and runs commands to the `evoproxy` subcommands `sub`."""
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
