"""The report of a run: best proxy, its correlations on the held-out split of the benches it
searched on and on the benches of every model it never saw (transfer), the best handcrafted
proxy and the mean-bits baseline beside it, the shortest proxy of equal fitness (its simplification),
and fitness over iterations."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
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
)
from ..files import write_atomically
from ..proxy import HANDCRAFTED, Genome
from ..stats import ModelStats, StatsSettings
from ..table import format_table, printable_lines
from .plot import plot_history
from .runs import hall_of_fame, run_summary
from .settings import EvolutionSettings, transfer_benches
from .simplified import simplified_report
from .store import RunStore


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


def _judge(best: Genome, bench_name: str, split: str, samples: int, repeats: int, settings: StatsSettings) -> _Judged:
    bench = load_bench(bench_name)
    stats, _, _ = bench_stats(bench, settings=settings)
    entries = bench.split(split)
    return _Judged(
        bench_name,
        split,
        entries,
        stats,
        rank_proxy(best, stats, entries, samples, repeats),
        {n: rank_proxy(make(), stats, entries, samples, repeats) for n, make in HANDCRAFTED.items()},
    )


def _statistics_used(judged: list[_Judged], searched_on: object) -> tuple[str, dict]:
    """The table and the record of the statistics cache entries the report ranked on, each beside
    the entry the search used for that bench (`searched_on`, as the run stored it; anything else
    is taken as not recorded, as in runs made before it was)."""
    searched_on = searched_on if isinstance(searched_on, dict) else {}
    rows, record = [], {}
    for j in judged:
        entry = j.stats.cache_entry or {"path": None, "sha256": None}
        search = searched_on.get(j.bench) if isinstance(searched_on.get(j.bench), dict) else None
        record[j.bench] = {**entry, "search": search}
        if j.split == "all":
            same = "not searched"
        elif search is None:
            same = "not recorded"
        else:
            same = "same" if search.get("sha256") == entry["sha256"] else f"another: {str(search.get('sha256'))[:16]}"
        name = Path(entry["path"]).name if entry["path"] else "not cached"
        rows.append({"bench": j.bench, "entry": name, "sha256": str(entry["sha256"])[:16], "search": same})
    folder = {str(Path(e["path"]).parent) for e in record.values() if e["path"]}
    text = (
        f"Statistics ranked on: the cache entries in {', '.join(sorted(folder)) or '-'} (sha256 of each, and "
        "the entry the search used; a checksum shows damage, not a change made by someone who can write "
        "the cache):\n"
        + format_table(rows, ["bench", "entry", "sha256", "search"], ["bench", "cache entry", "sha256", "the search's"])
    )
    return text, record


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
    of the `transfer` benches (default: the main bench of every shipped model of the same task that
    the run never saw), and its simplification (see `simplified_report`, `tolerance`). Writes report.txt, report.json,
    fitness.png and, where the simplification is shorter, simplified.json into the run directory."""
    run_dir = Path(run_dir)
    summary = run_summary(run_dir)
    best = summary["genome"]
    config = EvolutionSettings.from_dict(summary["config"])
    searched = config.benches
    transfer = transfer_benches(searched) if transfer is None else list(transfer)
    lines = [
        f"run {run_dir}: iteration {summary['iteration']}, {summary['candidates']} candidates "
        f"({', '.join(f'{k} {v}' for k, v in sorted(summary['status'].items()))}), "
        f"{summary['seconds']:.1f} s of evaluation",
        f"best proxy ({summary['choice']}):",
        f"  {best.formula()}",
        f"  paper notation: {best.formula('paper')}",
    ]
    if config.perturb_around is not None:  # every score below, the tools' included, reads them so
        lines.insert(1, f"output perturbations measured with every other layer at {config.perturb_around} bits")
    simplified_text, simplified = simplified_report(run_dir, tolerance, summary)
    lines.append(simplified_text)
    store = RunStore(run_dir / "run.db")
    try:
        front = hall_of_fame(store)
        searched_on = store.get("statistics")
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
    judged = [_judge(best, name, "held-out", samples, repeats, config.stats_settings) for name in searched]
    judged += [_judge(best, name, "all", samples, repeats, config.stats_settings) for name in transfer]
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
    statistics, data["statistics"] = _statistics_used(judged, searched_on)
    lines += ["", statistics]
    if summary["history"]:
        config = summary["config"]
        plot_history(
            summary,
            run_dir / "fitness.png",
            f"run {run_dir.name}: {config.get('space')} space on {', '.join(searched)}",
        )
        lines.append(f"\nfitness over iterations: {run_dir / 'fitness.png'}")
    text = printable_lines("\n".join(lines))  # names come from files: data
    write_atomically(run_dir / "report.txt", text + "\n")
    write_atomically(run_dir / "report.json", json.dumps(data, indent=2))
    return text, data
