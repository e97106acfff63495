"""Ranking proxies on a benchmark (the EMQ paper's Table 1): ρ@20%, ρ@50%, ρ@100% (mean ± std
over repeats of sampled configurations), their mean and Kendall τ over the whole split, and time
per configuration with the statistics' extraction amortised and reported separately."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..errors import EvoproxyError, ParameterError
from ..model import MODELS, DataSource, layer_registry, load_model, weights_hash
from ..params import Interval, check_parameters
from ..files import cache_dir, save_figure
from ..stats import ModelStats, StatsSettings, default_batch, load_or_compute_stats
from .format import Bench, Entry
from .metrics import TOPK, partial_spearman, rank_quality


def bench_model(bench: Bench, weights: str | None = None, data: str | None = None):
    """The model a benchmark was made on (its registry name or package.module:function, with the
    weights file, output selector and excluded layers its header records; `weights` and `data`
    replace recorded paths that moved), its layer registry, and the data source it was measured
    on. Refuses, in one line, weights, layers or data that are not the bench's."""
    h = bench.header
    name = h["model"]
    if name not in MODELS and ":" not in name:
        raise EvoproxyError(
            f"benchmark {bench.name} names model {name!r}, which is neither in the registry, package.module:function "
            "nor hf:PATH"
        )
    given, weights = weights, weights or h.get("weights")
    if weights and not Path(weights).is_file():
        raise ParameterError(
            "bench_model",
            "weights",
            f"the state_dict benchmark {bench.name} was made with ({weights}, which is not there)",
            given,
        )
    model, _ = load_model(name, weights, h.get("output"))
    if h.get("weights_hash") not in (None, weights_hash(model)):
        raise ParameterError(
            "bench_model",
            "weights",
            f"the checkpoint benchmark {bench.name} was made with (it was measured on other weights of {name})",
            given,
        )
    source = DataSource.reopen(h.get("data"), f"benchmark {bench.name}", data, model, cache_dir())
    layers = layer_registry(model, source.input_shape, tuple(h.get("exclude", ())), source.input_dtype)
    bench.check_layers([l.name for l in layers])
    return model, layers, source


def bench_stats(
    bench: Bench,
    batch_size: int | None = None,
    settings: StatsSettings = StatsSettings(),
    weights: str | None = None,
    log=lambda msg: None,
    data: str | None = None,
    device: str = "cpu",
) -> tuple[ModelStats, float, Path]:
    """The statistics of the model a benchmark was made on (`bench_model`), on the first
    `batch_size` calibration images of its data (None: `default_batch`; cached on disk), the seconds
    spent getting them, and the cache file they came from."""
    model, _, source = bench_model(bench, weights, data)
    fmt = bench.weight_format
    settings = replace(
        settings,
        exclude=tuple(bench.header.get("exclude", ())),
        output=bench.header.get("output"),
        group_size=fmt.group_size,
        asymmetric=fmt.asymmetric,
    )
    if batch_size is None:
        batch_size = default_batch(source)
    x, y = source.calibration(batch_size)
    start = time.perf_counter()
    stats, _ = load_or_compute_stats(model, x, y, bench.header["model"], settings, log=log, device=device)
    return stats, time.perf_counter() - start, Path(stats.cache_entry["path"])


@dataclass
class RankResult:
    """One proxy's correlations on one split: mean and std over repeats per ρ@k, Kendall τ and
    mean ρ@k over the whole split, seconds per configuration, or the error that made it unusable.

    `rho_mean` follows the paper's protocol (draws of 50 configurations); `rho_all` judges every
    configuration of the split at once, so on a large split it moves far less with the draw.
    `partial` is Spearman ρ over the whole split with model size held fixed (partial_spearman)."""

    proxy: str
    rho: dict[str, tuple[float, float]]
    kendall_tau: float
    seconds_per_config: float
    scores: np.ndarray | None = None
    error: str | None = None
    rho_all: float = float("nan")
    partial: float = float("nan")

    @property
    def rho_mean(self) -> float:
        return float(np.mean([m for m, _ in self.rho.values()])) if self.rho else float("nan")

    def table_row(self, label: str) -> dict:
        """This result as a row of a text table of TABLE_COLUMNS, in %, labelled `label`."""
        row = {
            "proxy": label,
            "mean": f"{100 * self.rho_mean:6.2f}",
            "all": f"{100 * self.rho_all:6.2f}",
            "partial": f"{100 * self.partial:6.2f}",
            "tau": self.kendall_tau,
        }
        for k in ("rho@20%", "rho@50%", "rho@100%"):
            m, s = self.rho.get(k, (float("nan"), float("nan")))
            row[k] = f"{100 * m:6.2f} ± {100 * s:5.2f}"
        return row

    def to_dict(self) -> dict:
        out = {
            "proxy": self.proxy,
            "kendall_tau": self.kendall_tau,
            "rho_mean": self.rho_mean,
            "rho_all": self.rho_all,
            "partial_rho_given_size": self.partial,
            "seconds_per_config": self.seconds_per_config,
            "error": self.error,
        }
        for k, (m, s) in self.rho.items():
            out[k] = {"mean": m, "std": s}
        return out


# The columns of `RankResult.table_row` and their headers, for `table.format_table`.
TABLE_COLUMNS = ["proxy", "rho@20%", "rho@50%", "rho@100%", "mean", "all", "partial", "tau"]
TABLE_HEADERS = ["proxy", "ρ@20%", "ρ@50%", "ρ@100%", "mean ρ", "mean ρ (all)", "ρ | size", "Kendall τ"]


# What `rank_proxy` draws; `check_draws` lets a caller refuse them before computing statistics.
DRAW_CONSTRAINTS = {
    "samples": Interval(0, None, integer=True),  # 0: the whole split
    "repeats": Interval(1, None, integer=True),
    "seed": Interval(0, None, integer=True),
}


def check_draws(samples: int, repeats: int, seed: int) -> None:
    """Raise ParameterError (of `rank_proxy`) unless it can make `repeats` draws of `samples`
    configurations with `seed`."""
    check_parameters({"samples": samples, "repeats": repeats, "seed": seed}, DRAW_CONSTRAINTS, owner="rank_proxy")


def subsets(n: int, samples: int, repeats: int, seed: int) -> list[np.ndarray]:
    """`repeats` index sets of `samples` distinct configurations out of `n` (all of them when
    `samples` is 0 or at least n), seeded."""
    if samples <= 0 or samples >= n:
        return [np.arange(n)]
    rng = np.random.default_rng(seed)
    return [rng.choice(n, samples, replace=False) for _ in range(repeats)]


def rank_proxy(
    proxy, stats: ModelStats, entries: list[Entry], samples: int = 50, repeats: int = 5, seed: int = 0
) -> RankResult:
    """Correlation of `proxy`'s configuration scores with the measured accuracies of `entries`,
    over `repeats` draws of `samples` of them (0: all) seeded with `seed` (`subsets`)."""
    check_draws(samples, repeats, seed)
    bits, acc = Bench.arrays(entries)
    start = time.perf_counter()
    try:
        scores = proxy.score(stats, torch.as_tensor(bits)).detach().double().numpy()
    except EvoproxyError as exc:
        return RankResult(proxy.name, {}, float("nan"), float("nan"), error=str(exc))
    per_config = (time.perf_counter() - start) / len(entries)
    if not np.isfinite(scores).all():
        return RankResult(proxy.name, {}, float("nan"), per_config, error="non-finite scores")
    parts = [rank_quality(scores[idx], acc[idx]) for idx in subsets(len(entries), samples, repeats, seed)]
    rho = {}
    for k in TOPK:
        key = f"rho@{int(k * 100)}%"
        values = np.array([p[key] for p in parts])
        values = values[~np.isnan(values)]  # too few configurations for ρ@k: nan, without numpy's warning
        rho[key] = (float(values.mean()), float(values.std())) if len(values) else (math.nan, math.nan)
    whole = rank_quality(scores, acc)
    size = np.array([e.size_mb for e in entries])
    return RankResult(
        proxy.name,
        rho,
        whole["kendall_tau"],
        per_config,
        scores,
        rho_all=whole["rho_mean"],
        partial=partial_spearman(scores, acc, size),
    )


def best_handcrafted(results: dict[str, RankResult]) -> str:
    """Among proxies ranked on one split (name → result), the one with the highest mean ρ over the
    whole split, leaving out those that could not rank it and the mean-bits baseline."""
    usable = {n: r for n, r in results.items() if r.error is None and n != "mean-bits"}
    return max(usable, key=lambda n: usable[n].rho_all)


def plot_ranking(results: list[RankResult], entries: list[Entry], path: str) -> None:
    """Proxy score against accuracy, one panel per proxy, coloured by model size (EMQ Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, acc = Bench.arrays(entries)
    size = np.array([e.size_mb for e in entries])
    usable = [r for r in results if r.scores is not None]
    cols = min(4, len(usable)) or 1
    rows = (len(usable) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False, constrained_layout=True)
    for ax, r in zip(axes.flat, usable):
        sc = ax.scatter(r.scores, acc, c=size, s=6, cmap="viridis")
        ax.set_title(f"{r.proxy}  ρ@100%={r.rho['rho@100%'][0]:.2f}", fontsize=9)
        ax.set_xlabel("proxy score", fontsize=8)
        ax.set_ylabel("top-1 (%)", fontsize=8)
    for ax in list(axes.flat)[len(usable) :]:
        ax.axis("off")
    fig.colorbar(sc, ax=axes, label="size (MB)", shrink=0.8)
    save_figure(fig, path)
