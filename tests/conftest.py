import pytest
import torch

from bfclab.config import RunConfig, set_key


def tiny_config(**over) -> RunConfig:
    """A run small enough for a unit test (seconds on 2 cores)."""
    cfg = RunConfig()
    base = {
        "target.d": 8, "target.L": 4, "target.widths": [2], "target.mc_samples": 4000, "target.var_samples": 20000,
        "data.n_train": 512, "data.n_test": 512, "train.steps_per_stage": 40,
        "train.batch_size": 64, "train.log_every": 20,
    }
    base.update(over)
    for k, v in base.items():
        set_key(cfg, k, v)
    return cfg


@pytest.fixture
def tiny():
    return tiny_config


# ---- round-off bounds for comparing floating-point results -----------------------------------------
# Two computations of the same quantity through different operation orders (a blocked vs a plain
# GEMM, LAPACK vs a tiled factorisation, another BLAS kernel: AVX2 vs AVX-512, with or without FMA)
# agree only up to round-off, never bit for bit.  Tests compare such results against these bounds
# (Higham, "Accuracy and Stability of Numerical Algorithms", 2nd ed., ch. 3 and 10), which hold for
# every summation order, so they cannot flake on another CPU yet stay within a small multiple of
# the actual error: a real bug (a wrong block, a missing term) is off by many orders of magnitude.


def gamma(k: int, dtype: torch.dtype) -> float:
    """gamma_k = k u / (1 - k u), u = eps/2 the unit round-off of ``dtype``: a sum or inner product
    of k terms, computed in any order, has |fl(x.y) - x.y| <= gamma_k |x|.|y| (Higham eq. 3.4-3.5)."""
    ku = k * torch.finfo(dtype).eps / 2
    assert ku < 0.5, f"no useful bound for k={k} in {dtype}"
    return ku / (1 - ku)


def matmul_bound(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Entrywise bound on |fl(a @ b) - a @ b|: gamma_k |a| |b| for inner dimension k."""
    return gamma(a.shape[-1], a.dtype) * (a.abs() @ b.abs())


def cholesky_residual_bound(L: torch.Tensor, extra: int = 1) -> torch.Tensor:
    """Entrywise bound gamma_{n+extra} |L| |L^T| on A - L L^T for a computed Cholesky factor L of an
    n x n A (Higham Thm 10.3: extra=1; with the two triangular solves of a solve, Thm 10.4, the
    backward error of A x = b is bounded by the same with extra = 2n + 1).  Any blocked variant built
    from GEMMs and triangular solves only reorders the same sums, so the bound holds for it too."""
    n = L.shape[0]
    return gamma(n + extra, L.dtype) * (L.abs() @ L.abs().mT)


def assert_within(actual: torch.Tensor, expected: torch.Tensor, bound, what: str = "") -> None:
    """|actual - expected| <= bound entrywise (bound: a tensor broadcastable to them, or a number)."""
    err = (actual - expected).abs()
    bound = torch.as_tensor(bound, dtype=err.dtype).expand_as(err)
    ratio = err / bound
    worst = int(torch.argmax(torch.nan_to_num(ratio, nan=float("inf"))))
    assert bool((err <= bound).all()), (
        f"{what}: {int((~(err <= bound)).sum())} of {err.numel()} entries outside the round-off bound; "
        f"worst error {float(err.flatten()[worst]):.3e} vs bound {float(bound.flatten()[worst]):.3e}")
