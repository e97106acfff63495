"""The plot of a run's fitness over iterations (fitness.png)."""

from __future__ import annotations

from pathlib import Path

from ..files import save_figure


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
    save_figure(fig, path)
