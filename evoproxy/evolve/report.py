"""The report of a run: best proxy, its correlations on the held-out split of the benches it
searched on and on the benches of every model it never saw (transfer), the best handcrafted
proxy and the mean-bits baseline beside it, the shortest proxy of equal fitness (its simplification),
and fitness over iterations."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

from ..bench import (
    TABLE_COLUMNS,
    TABLE_HEADERS,
    Bench,
    RankResult,
    bench_stats,
    best_handcrafted,
    load_bench,
    paired_bootstrap,
    rank_proxy,
    shipped_benches,
)
from ..errors import EvoproxyError
from ..locking import lock_holder
from ..proxy import HANDCRAFTED, Genome, load_space, prepare_inputs, simplify
from ..stats import ModelStats
from ..table import format_table, printable
from .evolution import EvolutionSettings, fittest_distinct
from .fitness import BenchesTask, CSPSettings, FitnessTask
from .store import RunStore


def transfer_benches(searched: Sequence[str]) -> list[str]:
    """For every model that none of the `searched` benches was made on, its main shipped bench
    (the one with the most configurations, the first by name among equals): the architectures a
    run never saw, on which its result's transfer is measured."""
    seen = {load_bench(b).header["model"] for b in searched}
    main: dict[str, Bench] = {}
    for name in shipped_benches():
        bench = load_bench(name)
        model = bench.header["model"]
        if model not in seen and (model not in main or len(bench.entries) > len(main[model].entries)):
            main[model] = bench
    return [bench.name for bench in main.values()]


def run_summary(run_dir: str | Path) -> dict:
    """Counts and the best candidate of a run, from its database (works while it runs): the run's
    chosen result once it has finished, its fittest candidate before."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.db").is_file():
        raise EvoproxyError(f"{run_dir} is not a run directory (no run.db); runs live in runs/<name>/")
    store = RunStore(run_dir / "run.db")  # read-only: a report never changes the run
    try:
        config, state, final = store.get("config"), store.get("state"), store.get("final")
        rows = store.candidates()
        history = store.history()
    finally:
        store.close()
    ok = [r for r in rows if r["status"] == "ok"]
    if not ok:
        raise EvoproxyError(f"{run_dir} has no evaluated proxy yet")
    iteration = state["iteration"] if state else -1
    if final and final["iteration"] != iteration:  # chosen before the run was extended
        final = None
    if final:  # the run's chosen result (see Evolution._select_final)
        best = next(r for r in ok if r["hash"] == final["hash"])
        choice = f"fitness {best['fitness']:.4f} on the search sample"
        if final["validation"] is not None:
            choice += (
                f", ρ {final['validation']:.4f} on the {final['validation_configs']} other search "
                f"configurations (the best there of the {final['among']} fittest)"
            )
    else:  # a running or interrupted run: its fittest so far
        best = max(ok, key=lambda r: (r["fitness"], -r["id"]))
        choice = f"fitness {best['fitness']:.4f} on the search sample (fittest so far)"
    by_hash = {r["hash"]: r["fitness"] for r in ok}
    started = [
        (g.name, by_hash[g.wl_hash()]) for g in map(Genome.from_json, config.get("init", ())) if g.wl_hash() in by_hash
    ]
    return {
        "config": config,
        "iteration": iteration,
        "candidates": len(rows),
        "choice": choice,
        "status": dict(Counter(r["status"] for r in rows)),
        "best": dict(best),
        "final": final,
        "history": history,
        "seconds": sum(r["seconds"] for r in rows),
        "restarted_at": ((state or {}).get("extra") or {}).get("restarted_at", []),
        "started_from": started,
    }


def leaderboard(run_dir: str | Path, k: int) -> list[dict]:
    """The `k` fittest distinct proxies of a run (candidates with equal ρ@k parts count once),
    fittest first; each: rank, fitness, its parts, complexity, iteration, formula (control
    characters escaped) and `chosen` ("*" for the run's result)."""
    if k < 1:
        raise EvoproxyError(f"--top must be at least 1, got {k}")
    chosen = run_summary(run_dir)["best"]["hash"]
    store = RunStore(Path(run_dir) / "run.db")
    try:
        rows = fittest_distinct(store.candidates("status = 'ok'"), k)
    finally:
        store.close()
    return [
        {
            "rank": i,
            "chosen": "*" if r["hash"] == chosen else "",
            "fitness": r["fitness"],
            "rho@20%": r["rho20"],
            "rho@50%": r["rho50"],
            "rho@100%": r["rho100"],
            "complexity": Genome.from_json(r["genome"]).complexity,
            "iteration": r["iteration"],
            "formula": printable(r["formula"]),
        }
        for i, r in enumerate(rows, 1)
    ]


def export_candidates(run_dir: str | Path, path: str | Path) -> int:
    """Write every candidate of a run (the store's columns, one row each) to the CSV file `path`;
    returns how many."""
    store = RunStore(Path(run_dir) / "run.db")
    try:
        rows = store.candidates()
    finally:
        store.close()
    columns = rows[0].keys() if rows else []
    try:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            writer.writerows(tuple(r) for r in rows)
    except OSError as exc:
        raise EvoproxyError(
            f"cannot write {path}: {exc.strerror}; give a file in an existing, writable folder"
        ) from None
    return len(rows)


def list_runs(runs_dir: str | Path) -> tuple[list[dict], list[str]]:
    """One row per run under `runs_dir` (each folder with a run.db), by name: status (running, with
    the process that writes it; finished; stopped: killed or interrupted, continue it with
    --resume; unreadable), iteration reached (of the planned total), candidates, the fittest
    candidate's fitness, mean ρ of the run's result over the held-out split of its first bench
    where its report was made for that result, and the time of the last change. Also the reasons
    runs are unreadable."""
    rows, problems = [], []
    for db in sorted(Path(runs_dir).glob("*/run.db")):
        run_dir = db.parent
        changed = max(p.stat().st_mtime for p in (db, db.with_name("run.db-wal")) if p.exists())
        row = {
            "run": printable(run_dir.name),
            "status": "",
            "iteration": "-",
            "candidates": "-",
            "best": "-",
            "held-out": "-",
            "changed": time.strftime("%Y-%m-%d %H:%M", time.localtime(changed)),
        }
        rows.append(row)
        holder = lock_holder(db)
        try:
            store = RunStore(db)
            try:
                config, state, final = store.get("config"), store.get("state"), store.get("final")
                row["candidates"], ok = store.count(), store.candidates("status = 'ok'")
            finally:
                store.close()
            summary = run_summary(run_dir) if ok else None
        except EvoproxyError as exc:
            row["status"] = f"running ({holder})" if holder else "unreadable"
            problems.append(f"{row['run']}: {printable(exc)}")
            continue
        iteration, total = (state["iteration"] if state else None), config.get("iterations", 0)
        if iteration is not None:  # none while the first population is judged
            row["iteration"] = f"{iteration}/{total}" if total else str(iteration)
        done = final is not None and iteration is not None and final["iteration"] == iteration and iteration >= total
        row["status"] = f"running ({holder})" if holder else "finished" if done else "stopped"
        if summary:
            row["best"] = f"{max(r['fitness'] for r in ok):.4f}"
            row["held-out"] = _held_out_rho(run_dir, summary)
    return rows, problems


def _held_out_rho(run_dir: Path, summary: dict) -> str:
    """Mean ρ (%, all configurations) of the run's result on its first bench's held-out split,
    from report.json where that report is about the result the run holds now; else "-"."""
    try:
        data = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
        if data["best"]["formula"] != summary["best"]["formula"]:
            return "-"
        first = EvolutionSettings.from_dict(summary["config"]).benches[0]
        return f"{100 * data['benches'][first]['evolved']['rho_all']:.2f}"
    except (OSError, ValueError, KeyError, TypeError, EvoproxyError):  # no report, or another one's
        return "-"


def hall_of_fame(rows) -> list[dict]:
    """The Pareto front of a run's evaluated candidates over complexity and fitness, as PySR's
    hall of fame: for each complexity the fittest candidate, kept where it is fitter than every
    simpler one. Rows are the store's candidates; each entry: complexity, fitness, formula."""
    best: dict[int, dict] = {}
    for row in rows:
        if row["status"] != "ok":
            continue
        genome = Genome.from_json(row["genome"])
        c = genome.complexity
        if c not in best or row["fitness"] > best[c]["fitness"]:
            best[c] = {"complexity": c, "fitness": row["fitness"], "formula": genome.formula()}
    front, top = [], float("-inf")
    for c in sorted(best):
        if best[c]["fitness"] > top:
            front.append(best[c])
            top = best[c]["fitness"]
    return front


def search_fitness(
    benches: Sequence[str], aggregate: str = "mean", csp: CSPSettings = CSPSettings()
) -> tuple[Callable[[Genome], float | None], int]:
    """The fitness of a genome (None where the CSP rejects it) on every configuration of the search
    split of `benches`, aggregated over them by `aggregate`, and how many configurations that is.
    The conflict rule is off: it screens candidates by their form, and a simplification judges values."""
    loaded = [load_bench(b) for b in benches]
    configs = [Bench.arrays(b.split("search")) for b in loaded]
    task = BenchesTask([FitnessTask(bits, acc) for bits, acc in configs], aggregate)
    inputs = [prepare_inputs(bench_stats(b)[0]) for b in loaded]
    csp = replace(csp, conflict=False)

    def fitness(genome: Genome) -> float | None:
        outcome = task.judge(genome, inputs, csp)
        return outcome.fitness if outcome.ok else None

    return fitness, sum(len(acc) for _, acc in configs)


def simplified_report(run_dir: str | Path, tolerance: float = 0.0, summary: dict | None = None) -> tuple[str, dict]:
    """The run's result simplified (see proxy.simplify: exact rewrites, then pruning while the fitness
    on the whole search split of the run's benches drops by at most `tolerance`): its text and data.
    The result stays the run's; a shorter simplification is offered as simplified.json in the run
    directory (any older one is removed). `summary`: the run's, when the caller has it."""
    run_dir = Path(run_dir)
    summary = summary or run_summary(run_dir)
    config = EvolutionSettings.from_dict(summary["config"])
    best = Genome.from_json(summary["best"]["genome"])
    try:
        space = load_space(config.space)
    except EvoproxyError:  # a space file moved since the run: simplify without its shape
        space = None
    fitness, n = search_fitness(config.benches, config.aggregate, config.csp)
    result = simplify(best, fitness, space, tolerance)
    path = run_dir / "simplified.json"
    data = {**result.to_dict(), "configurations": n}
    on = f"fitness on all {n} search configurations"
    before, after = (f"{f:.4f}" if f is not None else "rejected" for f in (result.fitness_before, result.fitness_after))
    if not result.shorter:
        path.unlink(missing_ok=True)
        return f"simplified: no shorter proxy of equal fitness ({on}: {before}, {result.evaluations} evaluations)", data
    Genome(result.genome.graph, result.genome.space, name=f"{run_dir.name}-simplified").save(path)
    where = (
        ""
        if result.space is None
        else (
            f"; in the {result.space} space"
            if result.in_space
            else f"; outside the {result.space} space ({result.outside})"
        )
    )
    lost = f", tolerance {tolerance:g}" if tolerance else ""
    lines = [
        f"simplified ({result.evaluations} evaluations{lost}; the run's result stays its best proxy):",
        f"  {result.genome.formula()}",
        f"  complexity {result.original.complexity} → {result.genome.complexity}, {on} {before} → {after}"
        f"{where}; saved as {path}",
    ]
    return "\n".join(lines), data


def plot_history(summary: dict, path: Path, title: str) -> None:
    """Best and median fitness of the population per iteration (PNG) of a run's `summary`, with
    its restarts and island migrations marked (the drops they cause are not a fault), and the
    fitness of each proxy the run started from (--init) as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history, config = summary["history"], summary["config"]
    it = [h[0] for h in history]
    fig, ax = plt.subplots(figsize=(6.5, 3.8), constrained_layout=True)
    ax.plot(it, [h[1] for h in history], label="best")
    ax.plot(it, [h[2] for h in history], label="median")
    if config.get("islands", 1) > 1 and it:
        for i, m in enumerate(range(config["migration"], it[-1] + 1, config["migration"])):
            ax.axvline(m, color="0.85", lw=0.8, zorder=0, label="migration" if i == 0 else None)
    for i, r in enumerate(summary["restarted_at"]):
        ax.axvline(r, color="tab:red", ls="--", lw=1, label="restart" if i == 0 else None)
    for name, fitness in summary["started_from"]:
        ax.axhline(fitness, color="tab:green", ls=":", lw=1.2, label=f"{name} (start)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("fitness (mean ρ@20/50/100%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class _Judged:
    """The evolved proxy and the handcrafted ones ranked on one bench split, and the bench's statistics."""

    bench: str
    split: str
    entries: list
    stats: ModelStats
    evolved: RankResult
    handcrafted: dict[str, RankResult]

    @property
    def best(self) -> str:
        """The handcrafted proxy (mean-bits aside) with the highest mean ρ over the whole split."""
        return best_handcrafted(self.handcrafted)

    @cached_property
    def difference(self) -> tuple[float, float, float] | None:
        """Evolved minus the best handcrafted proxy in mean ρ over the split, with its 95 % paired
        bootstrap interval; None where the evolved proxy cannot rank the split."""
        if self.evolved.error:
            return None
        return paired_bootstrap(self.evolved.scores, self.handcrafted[self.best].scores, Bench.arrays(self.entries)[1])


def _judge(best: Genome, bench_name: str, split: str, samples: int, repeats: int) -> _Judged:
    bench = load_bench(bench_name)
    stats, _, _ = bench_stats(bench)
    entries = bench.split(split)
    return _Judged(
        bench_name,
        split,
        entries,
        stats,
        rank_proxy(best, stats, entries, samples, repeats),
        {n: rank_proxy(make(), stats, entries, samples, repeats) for n, make in HANDCRAFTED.items()},
    )


def _verdict(lo: float, hi: float) -> str:
    return "cannot tell" if lo <= 0 <= hi else ("better" if lo > 0 else "worse")


def full_report(
    run_dir: str | Path,
    samples: int = 50,
    repeats: int = 5,
    transfer: Sequence[str] | None = None,
    tolerance: float = 0.0,
) -> tuple[str, dict]:
    """The report text and its data: the best proxy beside the handcrafted proxy with the highest
    mean ρ over all configurations and the mean-bit-width baseline, on the held-out split of each
    bench the run searched on (the first in detail, as EMQ's Table 1) and on every configuration
    of the `transfer` benches (default: the main bench of every shipped model the run never saw), and
    its simplification (see `simplified_report`, `tolerance`). Writes report.txt, report.json,
    fitness.png and, where the simplification is shorter, simplified.json into the run directory."""
    run_dir = Path(run_dir)
    summary = run_summary(run_dir)
    best = Genome.from_json(summary["best"]["genome"])
    searched = EvolutionSettings.from_dict(summary["config"]).benches
    transfer = transfer_benches(searched) if transfer is None else list(transfer)
    lines = [
        f"run {run_dir}: iteration {summary['iteration']}, {summary['candidates']} candidates "
        f"({', '.join(f'{k} {v}' for k, v in sorted(summary['status'].items()))}), "
        f"{summary['seconds']:.1f} s of evaluation",
        f"best proxy ({summary['choice']}):",
        f"  {best.formula()}",
        f"  paper notation: {best.formula('paper')}",
    ]
    simplified_text, simplified = simplified_report(run_dir, tolerance, summary)
    lines.append(simplified_text)
    store = RunStore(run_dir / "run.db")
    try:
        front = hall_of_fame(store.candidates())
    finally:
        store.close()
    lines += [
        "",
        "hall of fame (per complexity, the fittest proxy that beats every simpler one):",
        format_table(front, ["complexity", "fitness", "formula"]),
    ]
    data = {
        "best": {
            "formula": best.formula(),
            "fitness": summary["best"]["fitness"],
            "validation": (summary["final"] or {}).get("validation"),
            "complexity": best.complexity,
        },
        "simplified": simplified,
        "hall_of_fame": front,
        "benches": {},
    }
    judged = [_judge(best, name, "held-out", samples, repeats) for name in searched]
    judged += [_judge(best, name, "all", samples, repeats) for name in transfer]
    first = judged[0]
    rows = [
        first.evolved.table_row("evolved (this run)"),
        first.handcrafted[first.best].table_row(f"best handcrafted: {first.best}"),
        first.handcrafted["mean-bits"].table_row("mean-bits baseline"),
    ]
    if simplified["shorter"]:  # whether the shorter proxy holds beyond the split it was pruned on
        ranked = rank_proxy(Genome.from_dict(simplified["genome"]), first.stats, first.entries, samples, repeats)
        simplified["held_out"] = {first.bench: ranked.to_dict()}
        rows.insert(1, ranked.table_row("simplified (offered)"))
    lines += [
        "",
        f"{first.bench}, held-out split ({len(first.entries)} configurations); ρ in %, mean ± std over "
        f"{repeats} draws of {samples}; mean ρ (all) and ρ | size over every configuration:",
        format_table(rows, TABLE_COLUMNS, TABLE_HEADERS),
    ]
    table = []
    for j in judged:
        seen = j.bench in searched
        record = {
            "split": j.split,
            "seen": seen,
            "evolved": j.evolved.to_dict(),
            "best_handcrafted": j.handcrafted[j.best].to_dict(),
            "mean_bits": j.handcrafted["mean-bits"].to_dict(),
        }
        row = {
            "bench": j.bench,
            "split": f"{j.split} ({len(j.entries)})",
            "seen": "yes" if seen else "no",
            "evolved": j.evolved.error or f"{100 * j.evolved.rho_all:.2f}",
            "partial": "-" if j.evolved.error else f"{100 * j.evolved.partial:.2f}",
            "best": f"{j.best} {100 * j.handcrafted[j.best].rho_all:.2f}",
            "mean-bits": f"{100 * j.handcrafted['mean-bits'].rho_all:.2f}",
            "difference": "-",
        }
        if (diff := j.difference) is not None:
            value, lo, hi = diff
            record["difference"] = {"value": value, "interval_95": [lo, hi]}
            row["difference"] = f"{100 * value:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] {_verdict(lo, hi)}"
        data["benches"][j.bench] = record
        table.append(row)
    lines += [
        "",
        "Every bench: mean ρ (all) in % over every configuration of the split; ρ | size: the evolved "
        "proxy's Spearman ρ with model size held fixed; evolved − best handcrafted with its 95 % paired "
        "bootstrap interval:",
        format_table(
            table,
            ["bench", "split", "seen", "evolved", "partial", "best", "mean-bits", "difference"],
            [
                "bench",
                "split (configs)",
                "searched",
                "evolved",
                "evolved ρ | size",
                "best handcrafted",
                "mean-bits",
                "evolved − best handcrafted",
            ],
        ),
    ]
    unseen = [j for j in judged if j.bench not in searched and not j.evolved.error]
    if unseen:
        verdicts = Counter(_verdict(*j.difference[1:]) for j in unseen)
        ahead = sum(j.evolved.rho_all > j.handcrafted["mean-bits"].rho_all for j in unseen)
        lines.append(
            f"On the {len(unseen)} architectures the run never saw, the evolved proxy ranks better than "
            f"the best handcrafted proxy on {verdicts['better']}, worse on {verdicts['worse']}, and cannot "
            f"be told apart on {verdicts['cannot tell']}; it beats the mean-bits baseline on {ahead}."
        )
    if any(j.evolved.error for j in judged):
        lines += [f"the evolved proxy cannot rank {j.bench}: {j.evolved.error}" for j in judged if j.evolved.error]
    if summary["history"]:
        config = summary["config"]
        plot_history(
            summary,
            run_dir / "fitness.png",
            f"run {run_dir.name}: {config.get('space')} space on {', '.join(searched)}",
        )
        lines.append(f"\nfitness over iterations: {run_dir / 'fitness.png'}")
    text = "\n".join(printable(line) for line in "\n".join(lines).split("\n"))  # names come from files: data
    (run_dir / "report.txt").write_text(text + "\n")
    (run_dir / "report.json").write_text(json.dumps(data, indent=2))
    return text, data
