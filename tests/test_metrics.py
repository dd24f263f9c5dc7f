"""Rotation-invariant feature metrics (PAPER_NOTES §2.7, §7.3)."""

import pytest
import torch

from bfclab import metrics as M


def rotation(k, seed):
    q, _ = torch.linalg.qr(torch.randn(k, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_feature_error_invariant_to_rotation():
    g = torch.Generator().manual_seed(0)
    T = torch.randn(3000, 4, generator=g, dtype=torch.float64)
    S = T + 0.3 * torch.randn(3000, 4, generator=g, dtype=torch.float64)
    base = M.feature_error(S, T)
    assert 0.01 < base < 0.2
    for seed in range(5):
        U = rotation(4, seed)
        assert abs(M.feature_error(S @ U.T, T) - base) < 1e-10
        assert abs(M.procrustes_error(S @ U.T, T) - M.procrustes_error(S, T)) < 1e-10


def test_feature_error_zero_for_exact_and_one_for_unrelated():
    g = torch.Generator().manual_seed(1)
    T = torch.randn(5000, 3, generator=g, dtype=torch.float64)
    U = rotation(3, 7)
    assert M.feature_error(T @ U.T + 2.0, T) < 1e-20
    assert M.procrustes_error(T @ U.T, T) < 1e-20
    assert M.feature_error(torch.randn(5000, 3, generator=g, dtype=torch.float64), T) > 0.99


def test_feature_error_matches_explicit_r2():
    g = torch.Generator().manual_seed(2)
    T = torch.randn(400, 2, generator=g, dtype=torch.float64)
    S = torch.randn(400, 3, generator=g, dtype=torch.float64) + T @ torch.randn(2, 3, generator=g, dtype=torch.float64)
    X = torch.cat([S, torch.ones(400, 1, dtype=torch.float64)], 1)
    beta = torch.linalg.solve(X.T @ X, X.T @ T)  # normal equations as the reference
    r = T - X @ beta
    assert abs(M.feature_error(S, T) - float(r.pow(2).sum() / (T - T.mean(0)).pow(2).sum())) < 1e-12


def test_procrustes_matches_brute_force_in_2d():
    g = torch.Generator().manual_seed(3)
    T = torch.randn(500, 2, generator=g, dtype=torch.float64)
    S = T @ rotation(2, 4).T + 0.2 * torch.randn(500, 2, generator=g, dtype=torch.float64)
    best = float("inf")
    for th in torch.linspace(0, 2 * torch.pi, 20001, dtype=torch.float64):
        for sgn in (1.0, -1.0):
            U = torch.tensor([[torch.cos(th), -torch.sin(th)], [sgn * torch.sin(th), sgn * torch.cos(th)]],
                             dtype=torch.float64)
            best = min(best, float((S - T @ U.T).pow(2).sum() / T.pow(2).sum()))
    assert abs(M.procrustes_error(S, T) - best) < 1e-6


def test_relative_change_and_nmse():
    a = [torch.ones(3, 3)]
    assert abs(M.relative_change([torch.ones(3, 3) * 1.1], a) - 0.1) < 1e-6
    y = torch.randn(1000, dtype=torch.float64)
    assert abs(M.nmse(y.mean().expand(1000), y) - 1.0) < 1e-12
    assert M.class_error(torch.tensor([1.0, -2.0, 3.0]), torch.tensor([1.0, 1.0, -1.0])) == 2 / 3


# ---- the chunked test-set score (issue 11) ----------------------------------------------------------
def _sample(n=3000, k=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    T = torch.randn(n, k, generator=g, dtype=torch.float64)
    S = T @ torch.randn(k, k, generator=g, dtype=torch.float64) + 0.3 * torch.randn(n, k, generator=g, dtype=torch.float64)
    return S, T


@pytest.mark.parametrize("chunk", [3000, 700, 1])
def test_score_accumulated_over_chunks_equals_the_one_shot_metrics(chunk):
    from bfclab.metrics import Score

    S, T = _sample()
    n = S.shape[0]
    pred, y = S.sum(1), T.sum(1)
    term, true_term = S.pow(2).sum(1), 0.5 * T.pow(2).sum(1)
    var = 2.5
    sc = Score(n, var)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        sc.add(a, pred[a:b], y[a:b], {2: S[a:b]}, {2: T[a:b]}, {2: term[a:b]}, {2: true_term[a:b]})
    # float64 sums of n terms in another order: agreement to ~n * eps64 relative, far inside 1e-9
    assert sc.error() == pytest.approx(float((pred - y).pow(2).mean()) / var, rel=1e-9)
    assert sc.feature_error(2) == pytest.approx(M.feature_error(S, T), rel=1e-9)
    assert sc.procrustes_error(2) == pytest.approx(M.procrustes_error(S, T), rel=1e-9)
    assert sc.term_error(2) == pytest.approx(float((term - true_term).pow(2).mean()) / var, rel=1e-9)
    lo, hi = sc.interval()
    assert lo < sc.error() < hi


def test_score_interval_covers_the_mean_about_95_percent_of_the_time():
    """Batch-means t-interval over 20 blocks of heavy-ish tailed errors (squares of Gaussians):
    over 400 independent test sets its coverage of the true mean (1) is 0.95 up to Monte-Carlo
    error (sd 0.011; the band is 5 sd wide on each side, minus the t-interval's known slight
    under-coverage for skewed data)."""
    from bfclab.metrics import Score

    g = torch.Generator().manual_seed(1)
    hits = 0
    for _ in range(400):
        e = torch.randn(2000, generator=g, dtype=torch.float64)
        sc = Score(2000, var=1.0)
        sc.add(0, e, torch.zeros(2000, dtype=torch.float64))
        lo, hi = sc.interval()
        hits += lo <= 1.0 <= hi
    assert 0.89 <= hits / 400 <= 1.0


def test_score_interval_is_cut_at_zero_on_heavy_tails_and_covers_whatever_the_uncut_one_does():
    """One huge error in one of 20 blocks (a heavy tail): the batch-means t-interval of the mean
    squared error reaches below 0; the reported one starts at 0 and keeps the uncut upper end, so it
    covers every value >= 0 the uncut one covers.  Its report reads asymmetric (+h%/-l%), with -l =
    -100 % exactly (the interval's low end is 0)."""
    from bfclab.metrics import Score, block_interval
    from bfclab.tables import spread_ci

    e = torch.full((2000,), 1e-2, dtype=torch.float64)
    e[7] = 1e3  # squared error 1e6 in block 0
    sc = Score(2000, var=1.0)
    sc.add(0, e, torch.zeros(2000, dtype=torch.float64))
    raw_lo, raw_hi = block_interval(sc.block_sum, sc.block_count)
    lo, hi = sc.interval()
    assert raw_lo < 0 and lo == 0.0 and hi == raw_hi and lo < sc.error() < hi
    up = round(100 * (hi - sc.error()) / sc.error())
    assert spread_ci([(sc.error(), [lo, hi])]) == f"{sc.error():.2e} +{up}%/-100% [{sc.error():.1e}, {sc.error():.1e}]"
    assert spread_ci([(sc.error(), [raw_lo, raw_hi])]) == spread_ci([(sc.error(), [lo, hi])])  # stored uncut: cut when read
    # a symmetric interval keeps the one-number form
    assert spread_ci([(2.0, [1.0, 3.0])]) == "2.00e+00 ±50% [2.0e+00, 2.0e+00]"


def test_classification_interval_stays_within_0_and_1():
    from bfclab.metrics import Score

    sc = Score(40, var=1.0, classify=True, blocks=20)
    pred = -torch.ones(40, dtype=torch.float64)  # every point wrong but two blocks right
    pred[:4] = 1.0
    sc.add(0, pred, torch.ones(40, dtype=torch.float64))
    lo, hi = sc.interval()
    assert 0.0 <= lo < sc.error() < hi == 1.0


def test_score_classification_counts_sign_mistakes_and_the_logistic_loss():
    from bfclab.metrics import Score

    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    y = torch.tensor([1.0, 1.0, -1.0, -1.0])
    sc = Score(4, var=1.0, classify=True, blocks=2)
    sc.add(0, logits[:3], y[:3])
    sc.add(3, logits[3:], y[3:])
    assert sc.error() == pytest.approx(M.class_error(logits, y))
    assert sc.loss() == pytest.approx(float(torch.nn.functional.softplus(-y * logits).mean()))
