"""The report of a run: best proxy, its correlations on the held-out split and on a benchmark
of another model (transfer), the best handcrafted proxy beside it, and fitness over iterations."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from ..bench import (TABLE_COLUMNS, TABLE_HEADERS, Bench, bench_stats, load_bench, paired_bootstrap, rank_proxy,
                     shipped_benches)
from ..errors import EvoproxyError
from ..proxy import HANDCRAFTED, Genome
from ..table import format_table
from .store import RunStore


def transfer_bench(bench_name: str) -> str | None:
    """A shipped benchmark of another model than `bench_name`'s, for measuring transfer."""
    model = load_bench(bench_name).header["model"]
    others = [n for n in shipped_benches() if load_bench(n).header["model"] != model]
    return others[0] if others else None


def run_summary(run_dir: str | Path) -> dict:
    """Counts and the best candidate of a run, from its database (works while it runs): the run's
    chosen result once it has finished, its fittest candidate before."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.db").is_file():
        raise EvoproxyError(f"{run_dir} is not a run directory (no run.db); runs live in runs/<name>/")
    store = RunStore(run_dir / "run.db")
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
            choice += (f", ρ {final['validation']:.4f} on the {final['validation_configs']} other search "
                       f"configurations (the best there of the {final['among']} fittest)")
    else:  # a running or interrupted run: its fittest so far
        best = max(ok, key=lambda r: (r["fitness"], -r["id"]))
        choice = f"fitness {best['fitness']:.4f} on the search sample (fittest so far)"
    return {"config": config, "iteration": iteration, "candidates": len(rows), "choice": choice,
            "status": dict(Counter(r["status"] for r in rows)), "best": dict(best), "final": final,
            "history": history, "seconds": sum(r["seconds"] for r in rows)}


def plot_history(history: list[tuple], path: Path) -> None:
    """Best and median fitness of the population per iteration (PNG)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    it = [h[0] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    ax.plot(it, [h[1] for h in history], label="best")
    ax.plot(it, [h[2] for h in history], label="median")
    ax.set_xlabel("iteration")
    ax.set_ylabel("fitness (mean ρ@20/50/100%)")
    ax.legend()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def full_report(run_dir: str | Path, samples: int = 50, repeats: int = 5) -> tuple[str, dict]:
    """The report text and its data: best proxy on the held-out split and on a transfer bench,
    beside the handcrafted proxy with the highest mean ρ over all configurations and the
    mean-bit-width baseline. Writes report.txt, report.json and fitness.png into the run
    directory."""
    run_dir = Path(run_dir)
    summary = run_summary(run_dir)
    best = Genome.from_json(summary["best"]["genome"])
    bench_name = summary["config"]["bench"]
    lines = [f"run {run_dir}: iteration {summary['iteration']}, {summary['candidates']} candidates "
             f"({', '.join(f'{k} {v}' for k, v in sorted(summary['status'].items()))}), "
             f"{summary['seconds']:.1f} s of evaluation",
             f"best proxy ({summary['choice']}):",
             f"  {best.formula()}", f"  paper notation: {best.formula('paper')}"]
    data = {"best": {"formula": best.formula(), "fitness": summary["best"]["fitness"],
                     "validation": (summary["final"] or {}).get("validation")}, "benches": {}}
    for name, split in ((bench_name, "held-out"), (transfer_bench(bench_name), "all")):
        if name is None:
            continue
        bench = load_bench(name)
        stats, _, _ = bench_stats(bench)
        entries = bench.split(split)
        ours = rank_proxy(best, stats, entries, samples, repeats)
        hand = {n: rank_proxy(make(), stats, entries, samples, repeats) for n, make in HANDCRAFTED.items()}
        usable = {n: r for n, r in hand.items() if r.error is None and n != "mean-bits"}
        top = max(usable, key=lambda n: usable[n].rho_all)
        rows = [ours.table_row("evolved (this run)"), usable[top].table_row(f"best handcrafted: {top}"),
                hand["mean-bits"].table_row("mean-bits baseline")]
        lines += ["", f"{name}, {split} split ({len(entries)} configurations"
                      f"{'' if name == bench_name else ', never seen by the run'}); ρ in %, mean ± std over "
                      f"{repeats} draws of {samples}; mean ρ (all) over every configuration:",
                  format_table(rows, TABLE_COLUMNS, TABLE_HEADERS)]
        data["benches"][name] = {"split": split, "evolved": ours.to_dict(), "best_handcrafted": usable[top].to_dict(),
                                 "mean_bits": hand["mean-bits"].to_dict()}
        if ours.error:  # e.g. non-finite scores on another model's statistics
            lines.append(f"the evolved proxy cannot rank these configurations: {ours.error}")
            continue
        diff, lo, hi = paired_bootstrap(ours.scores, usable[top].scores, Bench.arrays(entries)[1])
        verdict = ("these configurations cannot tell the two apart" if lo <= 0 <= hi
                   else f"the evolved proxy ranks {'better' if lo > 0 else 'worse'}")
        lines.append(f"evolved − {top}: {100 * diff:+.2f} points of mean ρ over all {len(entries)} configurations; "
                     f"95 % paired bootstrap interval [{100 * lo:+.2f}, {100 * hi:+.2f}]: {verdict}")
        data["benches"][name]["difference"] = {"value": diff, "interval_95": [lo, hi]}
    if summary["history"]:
        plot_history(summary["history"], run_dir / "fitness.png")
        lines.append(f"\nfitness over iterations: {run_dir / 'fitness.png'}")
    text = "\n".join(lines)
    (run_dir / "report.txt").write_text(text + "\n")
    (run_dir / "report.json").write_text(json.dumps(data, indent=2))
    return text, data
