"""A symmetric positive-definite matrix stored as its lower block columns, with an in-place blocked
Cholesky factorisation and triangular solves: the linear algebra of exact KRR (PAPER_NOTES §6,
"any kernel method"), in about half the memory of a dense n x n matrix.

The n x n matrix is cut at multiples of ``tile`` into T block columns; block column k keeps only
the rows from its diagonal block down (a row-major ``(n - a_k) x b_k`` panel), so
n (n + tile) / 2 entries are held instead of n^2.  The factorisation is the right-looking blocked
Cholesky, overwriting the panels with L (A = L L^T):

    for k = 0..T-1:
        L_kk = chol(A_kk)                        torch.linalg.cholesky_ex, in place
        L_ik = A_ik L_kk^-T      (each i > k)    torch.linalg.solve_triangular, in place
        A_:j -= L_:k L_jk^T      (each j > k)    one in-place GEMM (addmm_) per block column

It performs the n^3/3 flops of a dense Cholesky, almost all in large GEMMs, and allocates
nothing of size n x n.  Solves are blocked forward/backward substitutions, of one right-hand
side (n,) or of a block (n, C) of them at once (the C label columns of a multi-output KRR fit:
one factorisation, GEMMs instead of matrix-vector products).  All tensors live on
``device`` in ``dtype``; nothing is CPU- or CUDA-specific.
"""

from __future__ import annotations

from typing import Callable

import torch


class TiledSymmetric:
    """Lower block columns of a symmetric n x n matrix (see the module docstring)."""

    def __init__(self, n: int, tile: int, dtype: torch.dtype, device: torch.device | str = "cpu"):
        if n < 1 or tile < 1:
            raise ValueError(f"n and tile must be positive, got n={n}, tile={tile}")
        self.n, self.tile, self.dtype, self.device = n, tile, dtype, torch.device(device)
        self.bounds = [(a, min(n, a + tile)) for a in range(0, n, tile)]
        self.panels = [torch.empty(n - a, b - a, dtype=dtype, device=self.device) for a, b in self.bounds]
        self.factored = False

    @staticmethod
    def numel(n: int, tile: int) -> int:
        """Entries held for an n x n matrix cut at multiples of ``tile``: (n^2 + sum of block sizes^2)/2."""
        sizes = [min(tile, n - a) for a in range(0, n, tile)]
        return (n * n + sum(s * s for s in sizes)) // 2

    @property
    def nbytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.panels)

    def block(self, i: int, j: int) -> torch.Tensor:
        """The (i, j) block, j <= i, as a view into panel j."""
        a_i, b_i = self.bounds[i]
        a_j = self.bounds[j][0]
        return self.panels[j][a_i - a_j:b_i - a_j]

    def fill_(self, fn: Callable[[int, int, int, int], torch.Tensor]) -> "TiledSymmetric":
        """A[r0:r1, c0:c1] = fn(r0, r1, c0, c1) for every block on or below the diagonal."""
        for j, (a_j, b_j) in enumerate(self.bounds):
            for i in range(j, len(self.bounds)):
                a_i, b_i = self.bounds[i]
                self.block(i, j).copy_(fn(a_i, b_i, a_j, b_j))
        self.factored = False
        return self

    def add_diag_(self, shift: float) -> "TiledSymmetric":
        for k in range(len(self.bounds)):
            self.block(k, k).diagonal().add_(shift)
        return self

    def to_dense(self) -> torch.Tensor:
        """The full matrix (symmetric, or L after ``cholesky_``); for tests and small n."""
        out = torch.zeros(self.n, self.n, dtype=self.dtype, device=self.device)
        for j, (a_j, b_j) in enumerate(self.bounds):
            out[a_j:, a_j:b_j] = self.panels[j]
            if not self.factored:
                out[a_j:b_j, a_j:] = self.panels[j].T
        return out

    def cholesky_(self) -> bool:
        """Overwrite the panels with the lower Cholesky factor; False if not positive definite."""
        info = torch.empty((), dtype=torch.int32, device=self.device)
        for k, (a_k, b_k) in enumerate(self.bounds):
            P = self.panels[k]
            w = b_k - a_k
            d = P[:w].mT  # column-major view: its upper triangle is the diagonal block's lower one
            torch.linalg.cholesky_ex(d, upper=True, out=(d, info))  # in place: P[:w] becomes L_kk
            if int(info) != 0:
                return False
            if P.shape[0] == w:
                continue
            for i in range(k + 1, len(self.bounds)):  # block by block: no panel-sized temporary
                b = self.block(i, k)
                torch.linalg.solve_triangular(P[:w].mT, b, upper=True, left=False, out=b)
            for j in range(k + 1, len(self.bounds)):
                a_j, b_j = self.bounds[j]
                rows_ = P[a_j - a_k:]  # L_ik for i >= j
                self.panels[j].addmm_(rows_, rows_[: b_j - a_j].mT, alpha=-1.0)
        self.factored = True
        return True

    def solve(self, rhs: torch.Tensor) -> torch.Tensor:
        """x with L L^T x = rhs after ``cholesky_`` (rhs: (n,) or (n, r))."""
        if not self.factored:
            raise RuntimeError("call cholesky_() first")
        x = (rhs[:, None] if rhs.ndim == 1 else rhs).clone()
        for k, (a_k, b_k) in enumerate(self.bounds):  # L y = b, column-oriented
            P, w = self.panels[k], b_k - a_k
            x[a_k:b_k] = torch.linalg.solve_triangular(P[:w], x[a_k:b_k], upper=False)
            x[b_k:].addmm_(P[w:], x[a_k:b_k], alpha=-1.0)
        for k in reversed(range(len(self.bounds))):  # L^T x = y, row-oriented
            a_k, b_k = self.bounds[k]
            P, w = self.panels[k], b_k - a_k
            r = x[a_k:b_k].addmm(P[w:].mT, x[b_k:], alpha=-1.0)
            x[a_k:b_k] = torch.linalg.solve_triangular(P[:w].mT, r, upper=True)
        return x[:, 0] if rhs.ndim == 1 else x
