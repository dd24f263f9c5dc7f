"""The learner (PAPER_NOTES §3): lift span, truncated square, SVD warm start, ground truth."""

import math

import pytest
import torch

from bfclab.config import LearnerConfig, TargetConfig
from bfclab.learner import Learner, lift_matrix, quadratic_basis, rank_k_factor, trunc_square
from bfclab.target import Target


@pytest.mark.parametrize("k", [1, 2, 4, 6])
def test_lift_spans_all_quadratic_forms(k):
    """sigma(R s) spans the k(k+1)/2-dimensional space of quadratic forms of s (§3.1 [D])."""
    p = k * (k + 1) // 2
    R = lift_matrix(k, p, torch.Generator().manual_seed(k)).double()
    Q = quadratic_basis(R)
    assert torch.linalg.matrix_rank(Q) == p
    # and numerically on samples: every monomial s_a s_b is a linear combination of the lift
    s = torch.randn(2000, k, dtype=torch.float64)
    lifted = (s @ R.T) ** 2
    iu = torch.triu_indices(k, k)
    monomials = s[:, iu[0]] * s[:, iu[1]]
    coef = torch.linalg.lstsq(lifted, monomials).solution
    assert torch.allclose(lifted @ coef, monomials, atol=1e-8)


def test_quadratic_basis_matches_lift():
    R = lift_matrix(3, 6, torch.Generator().manual_seed(0)).double()
    s = torch.randn(50, 3, dtype=torch.float64)
    iu = torch.triu_indices(3, 3)
    mono = s[:, iu[0]] * s[:, iu[1]]
    assert torch.allclose(mono @ quadratic_basis(R).T, (s @ R.T) ** 2)


def test_trunc_square_value_and_gradient():
    B = 2.0
    z = torch.linspace(-5, 5, 101, dtype=torch.float64, requires_grad=True)
    y = trunc_square(z, B)
    inside = z.abs() <= B
    assert torch.allclose(y[inside], z[inside] ** 2)
    assert torch.allclose(y[~inside], B * (2 * z[~inside].abs() - B))
    (g,) = torch.autograd.grad(y.sum(), z)
    hand = torch.where(inside, 2 * z, 2 * B * torch.sign(z))  # C^1: matches 2z at |z| = B
    assert torch.allclose(g, hand)
    assert torch.equal(trunc_square(z, math.inf), z * z)


def test_svd_warm_start_is_best_rank_k():
    torch.manual_seed(0)
    W = torch.randn(40, 12, dtype=torch.float64)
    k = 3
    K = rank_k_factor(W, k)
    M = W.T @ W
    evals, evecs = torch.linalg.eigh(M)
    top = evecs[:, -k:] @ torch.diag(evals[-k:]) @ evecs[:, -k:].T
    assert torch.allclose(K.T @ K, top, atol=1e-9)
    best = torch.linalg.matrix_norm(M - K.T @ K)
    for _ in range(20):  # Eckart-Young: no other rank-k PSD matrix does better
        F = torch.randn(k, 12, dtype=torch.float64)
        assert torch.linalg.matrix_norm(M - F.T @ F) >= best


def test_learner_warm_start_sets_k(tiny):
    t = Target.from_config(TargetConfig(d=8, L=3, widths=[2], mc_samples=2000, var_samples=20000))
    m = Learner(t.d, t.widths, t.conn, t.alphas, LearnerConfig(kind="paper", m=16))
    g = torch.Generator().manual_seed(0)
    m.activate(2, 1.0, g)
    m.svd_warm_start(2)
    lv = m.layer(2)
    evals, evecs = torch.linalg.eigh((lv.W.T @ lv.W).double())
    top = evecs[:, -2:] @ torch.diag(evals[-2:]) @ evecs[:, -2:].T  # best rank-2 part of W^T W
    assert torch.allclose((lv.K.T @ lv.K).double(), top, atol=1e-5)
    assert 2 in m.warm


def test_regulariser_value_and_kw_switch():
    t = Target.from_config(TargetConfig(d=6, L=3, widths=[2], mc_samples=2000, var_samples=20000))
    m = Learner(t.d, t.widths, t.conn, t.alphas, LearnerConfig(kind="paper", m=5))
    g = torch.Generator().manual_seed(0)
    m.activate(2, 1.0, g)
    lv = m.layer(2)
    decay = 0.1 * lv.K.pow(2).sum() + 0.01 * lv.W.pow(2).sum()
    assert torch.allclose(m.regulariser(3.0, 0.1, 0.01), decay)  # K-W term off before the warm start
    with torch.no_grad():
        lv.K.mul_(2.0)
    m.warm.add(2)
    kw = 3.0 * (lv.K.T @ lv.K - lv.W.T @ lv.W).pow(2).sum()
    full = kw + 0.1 * lv.K.pow(2).sum() + 0.01 * lv.W.pow(2).sum()
    assert torch.allclose(m.regulariser(3.0, 0.1, 0.01), full)
    assert torch.allclose(m.regulariser(3.0, 0.1, 0.01, levels=[]), torch.zeros(()))
    m.svd_warm_start(2)  # then K^T K is the rank-2 part of W^T W: the K-W term is what rank 2 misses
    M = (lv.W.T @ lv.W).double()
    evals = torch.linalg.eigvalsh(M)
    assert torch.allclose(m.regulariser(1.0, 0, 0).double(), evals[:-2].pow(2).sum(), rtol=1e-3)


@pytest.mark.parametrize("kind", ["simple", "paper"])
@pytest.mark.parametrize("conn", ["chain+input", "chain", "chain+input+const"])
def test_learner_at_ground_truth_has_zero_loss(kind, conn):
    t = Target.from_config(TargetConfig(d=12, L=4, widths=[3], conn=conn, mc_samples=5000, var_samples=20000))
    m = Learner(t.d, t.widths, t.conn, t.alphas, LearnerConfig(kind=kind, m=8))
    m.set_to_target(t)
    x, y, _ = t.sample(3000, seed=1)
    out = m.double()(x)
    assert float(((out.detach() - y) ** 2).mean() / y.var()) < 1e-12
    feats = m.features(x)
    for l, s in t.features(x).items():
        assert torch.allclose(feats[l], s, atol=1e-6)


def test_new_layer_starts_from_small_noise_not_zero():
    t = Target.from_config(TargetConfig(d=8, L=3, widths=[2], mc_samples=2000, var_samples=20000))
    m = Learner(t.d, t.widths, t.conn, t.alphas, LearnerConfig(kind="paper", m=16))
    m.activate(2, 1e-2, torch.Generator().manual_seed(0))
    for p in (m.layer(2).K, m.layer(2).W):
        assert p.abs().max() > 0 and p.abs().max() < 0.1
    assert m.layer(3).K.abs().max() == 0  # not yet active
