import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from evoproxy.bench import partial_spearman, rank_quality, spearman_at_topk


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("k", [0.2, 0.5, 1.0])
def test_spearman_at_topk_equals_scipy_on_the_ground_truth_top_k(seed, k):
    rng = np.random.default_rng(seed)
    n = 50
    truth = rng.normal(size=n)
    scores = truth + rng.normal(size=n)
    if seed % 2:  # ties on both sides
        truth, scores = np.round(truth, 1), np.round(scores, 0)
    top = np.argsort(-truth, kind="stable")[: int(round(k * n))]
    expected = spearmanr(scores[top], truth[top]).statistic
    assert spearman_at_topk(scores, truth, k) == pytest.approx(expected, abs=1e-12)


def test_top_k_is_taken_by_ground_truth_not_by_score():
    truth = np.arange(10.0)
    scores = np.array([9, 8, 7, 6, 5, 0, 1, 2, 3, 4], dtype=float)  # correct order among the best half
    assert spearman_at_topk(scores, truth, 0.5) == pytest.approx(1.0)
    assert spearman_at_topk(scores, truth, 1.0) < 0


def test_constant_scores_give_nan_and_rank_quality_has_all_parts():
    truth = np.arange(10.0)
    assert np.isnan(spearman_at_topk(np.ones(10), truth, 1.0))
    q = rank_quality(truth * 2, truth)
    assert q["rho@20%"] == q["rho@50%"] == q["rho@100%"] == q["rho_mean"] == pytest.approx(1.0)
    assert q["kendall_tau"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(10))
def test_fitness_fast_path_equals_spearman_at_topk(seed):
    # The evolution's precomputed ρ@k must be the same definition as metrics.spearman_at_topk.
    from evoproxy.evolve import FitnessTask

    rng = np.random.default_rng(seed)
    bits = rng.integers(2, 5, (50, 6))
    truth = np.round(rng.normal(size=50), 1)  # ties in the ground truth
    scores = np.round(bits @ rng.normal(size=6), 0)  # and in the scores
    parts = FitnessTask(bits, truth).parts(scores)
    for k in (0.2, 0.5, 1.0):
        expected = spearman_at_topk(scores, truth, k)
        got = parts[f"rho@{int(k * 100)}%"]
        assert got == pytest.approx(expected, abs=1e-12) or (np.isnan(got) and np.isnan(expected))


@pytest.mark.slow
def test_paired_bootstrap_is_antisymmetric_and_separates_a_clear_winner():
    from evoproxy.bench import paired_bootstrap, rho_mean

    rng = np.random.default_rng(0)
    truth = rng.normal(size=200)
    good = truth + 0.3 * rng.normal(size=200)
    noise = rng.normal(size=200)
    diff, lo, hi = paired_bootstrap(good, noise, truth, draws=300)
    assert diff == pytest.approx(rho_mean(good, truth) - rho_mean(noise, truth))
    assert 0 < lo < diff < hi
    back = paired_bootstrap(noise, good, truth, draws=300)  # same resamples, roles swapped
    assert back == pytest.approx((-diff, -hi, -lo))
    assert paired_bootstrap(good, good, truth, draws=50) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize("seed", range(5))
def test_partial_spearman_is_the_correlation_of_rank_residuals(seed):
    rng = np.random.default_rng(seed)
    size = rng.normal(size=200)
    truth = size + rng.normal(size=200)
    scores = 0.5 * size + truth + rng.normal(size=200)
    rs, rt, rc = (rankdata(x) for x in (scores, truth, size))
    residual = [r - np.polyval(np.polyfit(rc, r, 1), rc) for r in (rs, rt)]
    assert partial_spearman(scores, truth, size) == pytest.approx(np.corrcoef(*residual)[0, 1], abs=1e-12)


def test_a_score_that_only_knows_size_has_no_partial_correlation():
    rng = np.random.default_rng(0)
    size = rng.uniform(size=2000)
    truth = size + 0.3 * rng.normal(size=2000)
    scores = size + 0.05 * rng.normal(size=2000)  # size, blurred by noise that knows nothing of accuracy
    assert spearmanr(scores, truth).statistic > 0.6  # ranks well...
    assert abs(partial_spearman(scores, truth, size)) < 0.05  # ...by size alone
    assert partial_spearman(truth, truth, size) == pytest.approx(1.0)
    assert np.isnan(partial_spearman(size**3, truth, size))  # the score is size itself: undefined
    assert np.isnan(partial_spearman(np.ones(2000), truth, size))
