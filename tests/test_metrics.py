"""Rotation-invariant feature metrics (PAPER_NOTES §2.7, §7.3)."""

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
