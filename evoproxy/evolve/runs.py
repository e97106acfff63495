"""A run read from its database: its summary (works while it runs), the leaderboard of its fittest
distinct proxies, its hall of fame, every candidate as CSV, and the list of the runs in a folder."""

from __future__ import annotations

import csv
import json
import time
from collections import Counter
from pathlib import Path

from ..errors import EvoproxyError
from ..files import replacing
from ..locking import lock_holder
from ..params import Interval, check_parameters
from ..proxy import Genome
from ..table import printable
from .checkpoint import RunState
from .result import fittest_distinct
from .settings import EvolutionSettings
from .store import RunStore


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
    if final:  # the run's chosen result (see result.select_final)
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
        "genome": store.genome(best),
        "final": final,
        "history": history,
        "seconds": sum(r["seconds"] for r in rows),
        "restarted_at": RunState.stored(state).restarted_at,
        "started_from": started,
    }


def leaderboard(run_dir: str | Path, k: int) -> list[dict]:
    """The `k` fittest distinct proxies of a run (candidates with equal ρ@k parts count once),
    fittest first; each: rank, fitness, its parts, complexity, iteration, formula (control
    characters escaped) and `chosen` ("*" for the run's result)."""
    check_parameters({"k": k}, {"k": Interval(1, None, integer=True)}, owner="leaderboard")
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
            "complexity": store.genome(r).complexity,
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
        with replacing(Path(path)) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
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
        changed = max((p.stat().st_mtime for p in (db, db.with_name("run.db-wal")) if p.exists()), default=None)
        row = {
            "run": printable(run_dir.name),
            "status": "",
            "iteration": "-",
            "candidates": "-",
            "best": "-",
            "held-out": "-",
            "changed": "-" if changed is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(changed)),
        }
        rows.append(row)
        holder = None
        try:
            holder = lock_holder(db)
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


def hall_of_fame(store: RunStore) -> list[dict]:
    """The Pareto front of the evaluated candidates in `store` over complexity and fitness, as PySR's
    hall of fame: for each complexity the fittest candidate, kept where it is fitter than every
    simpler one. Each entry: complexity, fitness, formula."""
    best: dict[int, dict] = {}
    for row in store.candidates("status = 'ok'"):
        genome = store.genome(row)
        c = genome.complexity
        if c not in best or row["fitness"] > best[c]["fitness"]:
            best[c] = {"complexity": c, "fitness": row["fitness"], "formula": genome.formula()}
    front, top = [], float("-inf")
    for c in sorted(best):
        if best[c]["fitness"] > top:
            front.append(best[c])
            top = best[c]["fitness"]
    return front
