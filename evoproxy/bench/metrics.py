"""The rank correlations that judge a proxy against measured accuracies (EMQ paper, eq. 4)."""

from __future__ import annotations

import numpy as np
from scipy import stats as sps


def spearman_at_topk(scores, truth, k: float) -> float:
    """Spearman ρ between proxy `scores` and ground-truth `truth` on the top `k` fraction of the
    configurations *by ground truth* (EMQ eq. 4); ties get average ranks. NaN where fewer than
    two configurations remain or either side is constant there."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)
    if scores.shape != truth.shape or scores.ndim != 1:
        raise ValueError("scores and truth must be 1-D arrays of equal length")
    n = max(2, int(round(k * len(truth))))
    top = np.argsort(-truth, kind="stable")[:n]
    s, t = scores[top], truth[top]
    if len(top) < 2 or np.ptp(s) == 0 or np.ptp(t) == 0 or not np.isfinite(s).all():
        return float("nan")
    rs, rt = sps.rankdata(s), sps.rankdata(t)
    return float(np.corrcoef(rs, rt)[0, 1])


TOPK = (0.2, 0.5, 1.0)


def rho_mean(scores, truth) -> float:
    """Mean of ρ@20%, ρ@50% and ρ@100% (the evolution's fitness)."""
    return float(np.mean([spearman_at_topk(scores, truth, k) for k in TOPK]))


def paired_bootstrap(scores_a, scores_b, truth, draws: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """How surely proxy a ranks `truth` better than proxy b: the difference of their mean ρ@k
    on these configurations, and its 95 % percentile interval over `draws` resamples of the
    configurations with replacement (both proxies judged on the same resample). `scores_a` may
    hold several rows (say, one per seed of an evolved proxy): a's figure is then their mean."""
    a = np.atleast_2d(np.asarray(scores_a, dtype=float))
    b, t = (np.asarray(x, dtype=float) for x in (scores_b, truth))

    def difference(idx) -> float:
        return float(np.mean([rho_mean(row[idx], t[idx]) for row in a])) - rho_mean(b[idx], t[idx])

    rng = np.random.default_rng(seed)
    diffs = [difference(rng.integers(0, len(t), len(t))) for _ in range(draws)]
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return difference(np.arange(len(t))), float(lo), float(hi)


def partial_spearman(scores, truth, control) -> float:
    """Spearman ρ between `scores` and `truth` with `control` held fixed: the correlation of
    their ranks after the part linear in the ranks of `control` is taken out of each. With
    `control` the model size, it says whether a proxy knows which layers matter beyond how many
    bits there are. NaN where a side is constant."""
    ranks = [sps.rankdata(np.asarray(x, dtype=float)) for x in (scores, truth, control)]
    if any(np.ptp(r) == 0 for r in ranks):
        return float("nan")
    r = np.corrcoef(ranks)
    r_st, r_sc, r_tc = r[0, 1], r[0, 2], r[1, 2]
    denom = np.sqrt((1 - r_sc**2) * (1 - r_tc**2))
    return float((r_st - r_sc * r_tc) / denom) if denom > 0 else float("nan")


def rank_quality(scores, truth) -> dict[str, float]:
    """ρ@20%, ρ@50%, ρ@100%, their mean (the evolution's fitness) and Kendall τ over all."""
    parts = {f"rho@{int(k * 100)}%": spearman_at_topk(scores, truth, k) for k in TOPK}
    out = dict(parts)
    out["rho_mean"] = float(np.mean(list(parts.values())))
    tau = sps.kendalltau(scores, truth).statistic if np.ptp(np.asarray(scores, float)) > 0 else float("nan")
    out["kendall_tau"] = float(tau)
    return out
