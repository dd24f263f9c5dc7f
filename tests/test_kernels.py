"""Kernels of the non-hierarchical baselines (PAPER_NOTES §6) against explicit features, Monte-Carlo
estimates from wide random networks, and per-sample autograd."""

import itertools
import math

import pytest
import torch

from bfclab.baselines.kernels import (
    RBF, EmpiricalNTK, Polynomial, ReluNTK, arccos0, arccos1, learner_entk,
)
from bfclab.baselines.two_layer import TwoLayerNet
from bfclab.config import TargetConfig
from bfclab.target import Target

F64 = torch.float64


def _x(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def monomial_features(x: torch.Tensor, degree: int, c: float) -> torch.Tensor:
    """phi_alpha(x) = sqrt(p! / alpha!) xt^alpha over multi-indices |alpha| = p of xt = [sqrt(c), x/sqrt(d)],
    so that phi(x).phi(z) = (xt.zt)^p = (c + <x,z>/d)^p by the multinomial theorem."""
    n, d = x.shape
    xt = torch.cat([torch.full((n, 1), math.sqrt(c), dtype=x.dtype), x / math.sqrt(d)], dim=1)
    cols = []
    for combo in itertools.combinations_with_replacement(range(d + 1), degree):
        counts = [combo.count(i) for i in set(combo)]
        coef = math.factorial(degree) / math.prod(math.factorial(k) for k in counts)
        cols.append(math.sqrt(coef) * torch.prod(xt[:, list(combo)], dim=1))
    return torch.stack(cols, dim=1)


@pytest.mark.parametrize("degree,c", [(1, 0.0), (2, 1.0), (4, 0.7), (8, 1.0)])
def test_polynomial_kernel_equals_explicit_monomials(degree, c):
    """Exact identity (float64, rtol 1e-10): small d = 3 so that all C(d+p, p) monomials fit."""
    x, z = _x(7, 3, 0), _x(5, 3, 1)
    phi_x, phi_z = monomial_features(x, degree, c), monomial_features(z, degree, c)
    assert torch.allclose(Polynomial(degree, c)(x, z), phi_x @ phi_z.T, rtol=1e-10, atol=1e-12)


def test_rbf_matches_random_fourier_features():
    """Random Fourier features (Rahimi-Recht) with D = 200000: std of an entry <= sqrt(1/D) ~ 0.0022;
    tolerance 0.015 (about 7 standard deviations) on kernel values in [0, 1]."""
    d, ell, D = 4, 0.8, 200_000
    x = _x(12, d, 2) * 0.7
    gen = torch.Generator().manual_seed(3)
    omega = torch.randn(d, D, generator=gen, dtype=F64) / (ell * math.sqrt(d))
    b = 2 * math.pi * torch.rand(D, generator=gen, dtype=F64)
    phi = math.sqrt(2.0 / D) * torch.cos(x @ omega + b)
    K = RBF(ell)(x, x)
    assert (K - phi @ phi.T).abs().max() < 0.015
    assert torch.allclose(torch.diagonal(K), torch.ones(12, dtype=F64))
    assert K.min() < 0.5  # the test points are not all in one another's neighbourhood


def test_arccos_kernels_match_monte_carlo():
    """E_w 1[w.u>0]1[w.v>0] and E_w relu(w.u)relu(w.v) over 400000 Gaussian w: tolerance 0.01."""
    u, v = _x(6, 5, 4), _x(4, 5, 5)
    u[1] = 2.0 * v[0]  # a parallel pair (theta = 0) and an antiparallel one (theta = pi)
    u[2] = -0.5 * v[1]
    w = torch.randn(400_000, 5, generator=torch.Generator().manual_seed(6), dtype=F64)
    pu, pv = u @ w.T, v @ w.T
    mc0 = ((pu > 0).double() @ (pv > 0).double().T) / w.shape[0]
    mc1 = (pu.relu() @ pv.relu().T) / w.shape[0]
    assert (arccos0(u, v) - mc0).abs().max() < 0.01
    scale = u.norm(dim=1)[:, None] * v.norm(dim=1)[None, :]
    assert ((arccos1(u, v) - mc1).abs() / scale).max() < 0.01


@pytest.mark.parametrize("bias", [0.0, 1.0])
def test_relu_ntk_matches_empirical_ntk_of_wide_network(bias):
    """Closed-form two-layer ReLU NTK vs the empirical NTK (EmpiricalNTK, all of a, w, b) of a
    TwoLayerNet of width 100000: Monte-Carlo std of an entry ~ 2/sqrt(m) ~ 0.006 relative to the
    diagonal; tolerance 0.03 relative to the largest diagonal entry."""
    d, m = 6, 100_000
    x = _x(8, d, 7)
    net = TwoLayerNet(d, m, "relu", bias=bias, generator=torch.Generator().manual_seed(8)).double()
    emp = EmpiricalNTK(net, chunk=4)(x, x)
    ref = ReluNTK(bias)(x, x)
    assert ((emp - ref).abs() / ref.diagonal().max()).max() < 0.03
    assert torch.allclose(ReluNTK(bias).diag(x), ref.diagonal(), rtol=1e-6)


@pytest.mark.parametrize("kind", ["simple", "paper"])
def test_learner_entk_equals_per_sample_autograd(kind):
    """The batched (vmap + jacrev) empirical NTK of the learner equals J J^T from a loop of
    torch.autograd.grad calls, one sample at a time (float64, rtol 1e-9)."""
    target = Target.from_config(TargetConfig(d=5, L=4, widths=[2], mc_samples=2000, var_samples=20000))
    kern = learner_entk(target, kind=kind, m=8, init_std=1.0, seed=3, chunk=3)
    model = kern.module.double()
    assert model.active == [2, 3, 4]
    x = _x(7, 5, 9)
    params = [p for _, p in model.named_parameters() if p.requires_grad]
    rows_ = []
    for i in range(x.shape[0]):
        g = torch.autograd.grad(model(x[i:i + 1]).sum(), params, allow_unused=True)  # paper: K_L unused
        rows_.append(torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for p, t in zip(params, g)]))
    J = torch.stack(rows_)
    assert J.shape[1] == kern.n_params
    K = kern(x, x)
    assert torch.allclose(K, J @ J.T, rtol=1e-9, atol=1e-9 * float((J @ J.T).abs().max()))
    assert torch.allclose(kern.diag(x), (J * J).sum(1), rtol=1e-9)
    assert float(torch.linalg.matrix_rank(K)) > 1  # not degenerate at init std 1.0


def test_learner_entk_at_tiny_init_is_degenerate():
    """Why init std 1.0: at the stage-wise init scale (0.01) the kernel is ~1e4x smaller than at 1.0."""
    target = Target.from_config(TargetConfig(d=5, L=3, widths=[2], mc_samples=2000, var_samples=20000))
    x = _x(6, 5, 10)
    big = learner_entk(target, init_std=1.0)(x.float(), x.float()).abs().max()
    tiny = learner_entk(target, init_std=0.01)(x.float(), x.float()).abs().max()
    assert tiny < 1e-3 * big


KERNELS = [Polynomial(3, 1.0), RBF(1.3), ReluNTK(0.5)]


@pytest.mark.parametrize("kern", KERNELS, ids=lambda k: k.name)
def test_blocks_and_diagonal_are_consistent(kern):
    """Computing in blocks of 3 rows equals one block; diag equals the Gram diagonal; symmetric PSD."""
    x, z = _x(10, 4, 11), _x(6, 4, 12)
    assert torch.allclose(kern(x, z, block_size=3), kern(x, z, block_size=1000), rtol=1e-12, atol=1e-12)
    K = kern(x, x)
    assert torch.allclose(K, K.T, atol=1e-10)
    assert torch.allclose(kern.diag(x), K.diagonal(), rtol=1e-9)
    assert torch.linalg.eigvalsh(K).min() > -1e-9 * K.diagonal().max()


@pytest.mark.parametrize("kern", KERNELS, ids=lambda k: k.name)
def test_float32_matches_float64(kern):
    x = _x(20, 8, 13)
    k64 = kern(x, x)
    k32 = kern(x.float(), x.float())
    assert k32.dtype == torch.float32
    assert ((k32.double() - k64).abs() / k64.abs().max()).max() < 1e-4


def test_empirical_ntk_rejects_unknown_parameters():
    net = TwoLayerNet(3, 4)
    with pytest.raises(ValueError, match="unknown parameter"):
        EmpiricalNTK(net, params=["nope"])
    assert EmpiricalNTK(net, params=["a"]).n_params == 4
