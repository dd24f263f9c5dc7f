"""Nyström kernel ridge regression solved by preconditioned conjugate gradients: the FALKON
algorithm of Rudi, Carratino & Rosasco (NeurIPS 2017), for kernels at n far past the exact
solver's reach (PAPER_NOTES §6 "any kernel method"; §7.3 A.5 KRR baselines).

Model and objective, in the conventions of :mod:`bfclab.baselines.ridge` (centred labels, the
normalised ridge lam, kbar = mean k(x_i, x_i)):

    f(x) = ybar + sum_j a_j k(x, c_j),   c_1..c_m drawn uniformly from the training points
    min_a (1/n) ||K_nm a - yc||^2 + lam kbar a^T K_mm a
    <=>  H a = K_nm^T yc / n,   H = K_nm^T K_nm / n + lam kbar K_mm.

With m = n and the centres = the training points this is exact KRR, (K + n lam kbar I) a = yc
(the tests check it against :class:`~.krr.KRR`).

**Labels** y (n,) or (n, C): C label columns (e.g. a one-hot class label) are C right-hand sides
of the same system, centred per column; a is then (m, C) and ``predict`` returns (n, C).  The
C conjugate-gradient recurrences run together as a block of vectors (one pass over K_nm per
iteration for all columns, each column with its own step sizes); a column whose relative
residual is below ``tol`` is frozen, and the iteration stops once every column is.

**Preconditioner** (FALKON): K_nm^T K_nm / n ~ K_mm^2 / m on uniformly drawn centres, so
H ~ T^T A^T A T with T^T T = K_mm + jitter (upper Cholesky factor) and A^T A = T T^T / m +
lam kbar I.  Conjugate gradients run on A^-T T^-T H T^-1 A^-1 (condition number O(1) once m is
large enough, whatever n), and a = T^-1 A^-1 beta.  The m x m parts (K_mm, T, A) are float64;
the products with K_nm run in ``dtype``.

**Memory** O(n d + m^2 + block m): K_nm is never formed unless it fits (``cache``): with
``cache="auto"`` it is kept when n m entries fit in the memory budget after everything else
(then one CG iteration is two matrix-vector products), otherwise every iteration recomputes it in
row blocks of ``block_size`` (n m (d + 2) flops an iteration).  The estimate is checked before
anything is allocated (one-line error naming the largest n that fits, like exact KRR); the label
vectors and the CG vectors count once per label column.

**Ridge** (unless ``ridge`` is given): chosen on a ``val_frac`` split at the full n (fit on the
rest, scored on the split, one CG solve per grid value, largest ridge first, each warm-started
from the previous; with C columns one ridge for all, scored by the validation MSE averaged over
the columns), then refitted on all n.  A best value at the grid's edge extends the grid by
a decade beyond it, up to ``extend`` times; a choice still at the edge is flagged in
``selection_["at_edge"]``.  There is no float32 floor: the
ridge enters the float64 preconditioner and the CG iteration, not a float32 factorisation.

Why not the ``falkon`` package: it is not installable from the package registries of this
environment (it needs a CUDA/KeOps build from source); this is the algorithm of its paper, in
plain torch, on any device (``docs/DESIGN.md``).
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

from .. import seeds
from ..config import ConfigError
from .kernels import Kernel, rows
from .krr import GiB, available_memory
from .ridge import DEFAULT_GRID, centred, check_targets, grid_values, label_means, resolve_dtype, split

CACHE = ("auto", "always", "never")


def nystrom_bytes(n: int, d: int, m: int, kernel: Kernel, itemsize: int, block_size: int,
                  cached: bool, outputs: int = 1) -> int:
    """Estimated peak bytes of a fit: the float64 m x m matrices (K_mm, T, A and temporaries),
    the prepared rows of x and of the centres, the label vectors and the CG vectors (once per
    label column, ``outputs``), one K_nm row block in flight (or all of K_nm when ``cached``) and
    allocator/library slack."""
    square = 6 * m * m * 8
    rows_ = (n + m) * (kernel.prepared_width(d) + d + 2 * outputs) * itemsize + 8 * m * outputs * 8
    b = min(block_size, n)
    block = (kernel.block_temporaries() + 2) * b * m * itemsize
    knm = n * m * itemsize if cached else 0
    return square + rows_ + block + knm + 64 * 2**20


class NystromKRR:
    """Nyström KRR by FALKON's preconditioned conjugate gradients (module docstring).  The options'
    limits are checked where they are parsed (``registry.NystromOptions``).

    ``fit(x, y)``: y (n,) or (n, C) (module docstring).  After ``fit``: ``alpha_`` (m
    coefficients, (m,) or (m, C)), ``centres_`` (their training-set indices),
    ``ridge_``, ``selection_`` (grid, validation MSEs, choice, ``at_edge``), ``cg_`` (iterations
    and final relative residual of the last solve), ``cached_`` (whether K_nm was kept),
    ``timings_`` and ``info`` (all of these as one JSON-able dict)."""

    def __init__(self, kernel: Kernel, *, centres: int = 4096, iterations: int = 50, tol: float = 1e-6,
                 ridge: float | None = None, ridge_grid: Sequence[float] = DEFAULT_GRID, val_frac: float = 0.25,
                 dtype: str = "float32", device: str | torch.device = "cpu", block_size: int = 4096,
                 cache: str = "auto", mem_fraction: float = 0.9, extend: int = 4, seed: int = 0,
                 name: str | None = None):
        self.kernel = kernel
        self.m, self.iterations, self.tol = int(centres), int(iterations), float(tol)
        self.ridge = ridge
        self.ridge_grid = grid_values(ridge_grid)
        self.val_frac = float(val_frac)
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.block_size, self.cache, self.mem_fraction, self.seed = int(block_size), cache, float(mem_fraction), int(seed)
        self.extend = int(extend)
        self.name = name or f"nystrom-{kernel.name}"

    # ---- memory ------------------------------------------------------------------------------
    def plan_memory(self, n: int, d: int, outputs: int = 1) -> bool:
        """Whether K_nm is cached; a one-line ConfigError when even streaming does not fit
        (``outputs``: the number of label columns)."""
        m, itemsize = min(self.m, n), torch.finfo(self.dtype).bits // 8
        avail = available_memory(self.device)
        budget = None if avail is None else self.mem_fraction * avail
        stream = nystrom_bytes(n, d, m, self.kernel, itemsize, self.block_size, cached=False, outputs=outputs)
        if budget is not None and stream > budget:
            lo, hi = 0, n
            while hi - lo > 1:  # the largest n that streams within the budget
                mid = (lo + hi) // 2
                fits = nystrom_bytes(mid, d, min(m, mid), self.kernel, itemsize, self.block_size, False,
                                     outputs) <= budget
                lo, hi = (mid, hi) if fits else (lo, mid)
            cols = f" and {outputs} label columns" if outputs > 1 else ""
            raise ConfigError(f"nystrom: n={n} training points with m={m} centres{cols} need {stream / GiB:.1f} GiB on "
                              f"{self.device} but {budget / GiB:.1f} GiB is usable; the largest n that fits is {lo} "
                              f"(or use fewer centres)")
        if self.cache == "never":
            return False
        cached = nystrom_bytes(n, d, m, self.kernel, itemsize, self.block_size, cached=True, outputs=outputs)
        fits = budget is None or cached <= budget
        if self.cache == "always" and not fits:
            raise ConfigError(f"nystrom option 'cache': 'always' needs {cached / GiB:.1f} GiB on {self.device} "
                              f"for K_nm but {budget / GiB:.1f} GiB is usable; accepted: {', '.join(CACHE)}")
        return fits

    # ---- the solver --------------------------------------------------------------------------
    def _knm_blocks(self, px: tuple, pc: tuple, n: int, knm: torch.Tensor | None):
        if knm is not None:
            yield 0, n, knm
            return
        for a in range(0, n, self.block_size):
            b = min(n, a + self.block_size)
            yield a, b, self.kernel.block(rows(px, a, b), pc)

    def _kt_k(self, px, pc, n, knm, u: torch.Tensor) -> torch.Tensor:
        """K_nm^T K_nm u (float64 result, products in ``dtype``; u (m,) or (m, C))."""
        out = torch.zeros(u.shape, dtype=torch.float64, device=self.device)
        uu = u.to(self.dtype)
        for _, _, k in self._knm_blocks(px, pc, n, knm):
            out += (k.T @ (k @ uu)).double()
        return out

    def _kt(self, px, pc, n, knm, v: torch.Tensor) -> torch.Tensor:
        """K_nm^T v (float64; v (n,) or (n, C))."""
        out = None
        vv = v.to(self.dtype)
        for a, b, k in self._knm_blocks(px, pc, n, knm):
            part = (k.T @ vv[a:b]).double()
            out = part if out is None else out + part
        return out

    def _solve(self, px, pc, T: torch.Tensor, TTt: torch.Tensor, n: int, knm, yc: torch.Tensor, lam_k: float,
               beta0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """FALKON's preconditioned CG for one ridge; returns (alpha, beta, CG record).  yc (n,) or
        (n, C): the columns run as a block (:meth:`_cg_block`)."""
        m = T.shape[0]
        eye = torch.eye(m, dtype=torch.float64, device=self.device)
        A, jitter = None, 0.0
        for _ in range(8):  # T T^T / m + lam I is SPD; round-off aside
            A_low, info = torch.linalg.cholesky_ex(TTt / m + (lam_k + jitter) * eye)
            if int(info) == 0:
                A = A_low.T.contiguous()
                break
            jitter = max(jitter * 10, 1e-12 * float(torch.diagonal(TTt).mean()) / m)
        if A is None:
            raise RuntimeError("nystrom: the preconditioner's Cholesky factorisation failed")

        one = yc.ndim == 1

        def col(u):  # the triangular solves take a matrix: (m,) -> (m, 1); (m, C) as it is
            return u[:, None] if one else u

        def uncol(u):
            return u[:, 0] if one else u

        def back(u):  # T^-1 A^-1 u
            return uncol(torch.linalg.solve_triangular(T, torch.linalg.solve_triangular(A, col(u), upper=True),
                                                       upper=True))

        def fwd_t(u):  # A^-T T^-T u
            z = torch.linalg.solve_triangular(T.T, col(u), upper=False)
            return uncol(torch.linalg.solve_triangular(A.T, z, upper=False))

        def a_inv(u):
            return uncol(torch.linalg.solve_triangular(A, col(u), upper=True))

        def op(beta):  # A^-T (T^-T K_nm^T K_nm T^-1 A^-1 beta / n + lam A^-1 beta)
            w = a_inv(beta)
            v = uncol(torch.linalg.solve_triangular(T, col(w), upper=True))
            z = uncol(torch.linalg.solve_triangular(T.T, col(self._kt_k(px, pc, n, knm, v)) / n, upper=False))
            # the jitter added to K_mm is part of the objective's regulariser: lam (K_mm + jitter) = lam T^T T
            return uncol(torch.linalg.solve_triangular(A.T, col(z + lam_k * w), upper=False))

        rhs = fwd_t(self._kt(px, pc, n, knm, yc) / n)
        beta = torch.zeros(rhs.shape, dtype=torch.float64, device=self.device) if beta0 is None else beta0.clone()
        r = rhs - op(beta) if beta0 is not None else rhs.clone()
        if not one:
            beta, cg = self._cg_block(op, rhs, beta, r)
            return back(beta), beta, cg
        p, rr = r.clone(), float(r @ r)
        norm = float(rhs @ rhs) ** 0.5 or 1.0
        it = 0
        while it < self.iterations and rr ** 0.5 > self.tol * norm:
            q = op(p)
            step = rr / float(p @ q)
            beta += step * p
            r -= step * q
            rr_new = float(r @ r)
            p = r + (rr_new / rr) * p
            rr = rr_new
            it += 1
        return back(beta), beta, {"iterations": it, "relative_residual": rr ** 0.5 / norm}

    def _cg_block(self, op, rhs: torch.Tensor, beta: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Conjugate gradients on op(beta) = rhs for C columns at once (rhs, beta, r: (m, C), r the
        residual of beta): every column is the single-column recurrence with its own step sizes,
        ``op`` is applied to all of them together; a column whose relative residual is at most
        ``tol`` is frozen (it keeps its iterate, as a solve of that column alone would), and the
        iteration stops when every column is, or after ``iterations`` steps."""
        norm = rhs.pow(2).sum(0).sqrt()
        norm = torch.where(norm > 0, norm, torch.ones_like(norm))
        p, rr = r.clone(), r.pow(2).sum(0)
        active = rr.sqrt() > self.tol * norm
        it = 0
        while it < self.iterations and bool(active.any()):
            q = op(p)
            step = torch.where(active, rr / (p * q).sum(0), torch.zeros_like(rr))  # 0 (frozen): no 0/0 kept
            beta += step * p
            r -= step * q
            rr_new = r.pow(2).sum(0)
            p = torch.where(active, r + (rr_new / rr) * p, p)
            rr = torch.where(active, rr_new, rr)
            active = active & (rr.sqrt() > self.tol * norm)
            it += 1
        res = (rr.sqrt() / norm).tolist()
        return beta, {"iterations": it, "relative_residual": max(res), "relative_residuals": res}

    def _fit_on(self, x: torch.Tensor, yc: torch.Tensor, centres: torch.Tensor, lams: list[float], cached: bool,
                kbar: float, score=None, extend: int = 0):
        """Solve for every normalised ridge in ``lams`` (largest first, warm-started) on (x, yc)
        (yc (n,) or (n, C)) with the given centres; ``score(alpha, prepared centres) -> float`` for
        each.  With
        ``extend`` > 0 and a score, a best ridge at the grid's edge extends the grid by a decade
        beyond it, up to ``extend`` times."""
        n = x.shape[0]
        px, pc = self.kernel.prepare(x), self.kernel.prepare(centres)
        kmm = self.kernel.block(pc, pc).double()
        jitter = 16 * torch.finfo(torch.float64).eps * centres.shape[0] * kbar
        eye = torch.eye(kmm.shape[0], dtype=torch.float64, device=self.device)
        for _ in range(12):  # K_mm may be singular (a low-degree kernel, repeated points)
            low, info = torch.linalg.cholesky_ex(kmm + jitter * eye)
            if int(info) == 0:
                break
            jitter *= 10
        else:
            raise RuntimeError("nystrom: the centres' Gram matrix could not be factorised")
        del kmm
        T = low.T.contiguous()
        del low
        TTt = T @ T.T
        knm = self.kernel.block(px, pc) if cached else None
        out, betas = [], {}

        def solve(lam: float, warm: torch.Tensor | None) -> None:
            alpha, betas[lam], cg = self._solve(px, pc, T, TTt, n, knm, yc, lam * kbar, warm)
            out.append((lam, alpha, cg, score(alpha, pc) if score is not None else None))

        beta = None
        for lam in sorted(lams, reverse=True):
            solve(lam, beta)
            beta = betas[lam]
        for _ in range(extend if score is not None else 0):
            errs = {lam: err for lam, _, _, err in out}
            best, lo, hi = min(errs, key=errs.get), min(errs), max(errs)
            if len(errs) < 2 or best not in (lo, hi):
                break
            solve(best / 10 if best == lo else best * 10, betas[best])
        self.jitter_ = jitter
        return out, pc

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "NystromKRR":
        n, d = x.shape
        outputs = check_targets(y, n)
        cached = self.plan_memory(n, d, outputs or 1)
        t0 = time.perf_counter()
        x = x.to(self.device, self.dtype)
        y = y.to(self.device, torch.float64)
        self.y_mean_ = label_means(y)  # a float for y (n,), a float64 (C,) tensor for y (n, C)
        yc = centred(y, self.y_mean_)
        gen = seeds.generator("nystrom_centres", self.seed)
        m = min(self.m, n)
        kbar = float(self.kernel.diag_prepared(self.kernel.prepare(x)).double().mean())
        self.selection_ = None
        if self.ridge is None:
            fit_i, val_i = split(n, self.val_frac, seeds.seed_of("ridge_split", self.seed))
            fit_i, val_i = fit_i.to(self.device), val_i.to(self.device)
            xf, xv = x[fit_i], x[val_i]
            sub = torch.randperm(len(fit_i), generator=gen)[:m].to(self.device)
            pv = self.kernel.prepare(xv)

            def score(alpha, pc):  # the validation MSE, averaged over the label columns
                pred = self._predict_prepared(pv, pc, alpha)
                return float((pred - yc[val_i]).pow(2).mean())

            solved, _ = self._fit_on(xf, yc[fit_i], xf[sub], self.ridge_grid, cached, kbar, score, self.extend)
            errors = {lam: err for lam, _, _, err in solved}
            lam = min(errors, key=errors.get)
            grid = sorted(errors)
            self.selection_ = {"grid": grid, "val_mse": [errors[g] for g in grid], "chosen": lam,
                               "at_edge": lam in (grid[0], grid[-1]) and len(grid) > 1, "extended": len(grid) - len(self.ridge_grid),
                               "n_fit": len(fit_i), "n_val": len(val_i)}
        else:
            lam = float(self.ridge)
        t1 = time.perf_counter()
        idx = torch.randperm(n, generator=gen)[:m].to(self.device)
        solved, pc = self._fit_on(x, yc, x[idx], [lam], cached, kbar)
        _, self.alpha_, self.cg_, _ = solved[0]
        self.centres_, self.prep_c_, self.ridge_, self.cached_ = idx.cpu(), pc, lam, cached
        self.timings_ = {"select": t1 - t0, "fit": time.perf_counter() - t1}
        return self

    def _predict_prepared(self, px: tuple, pc: tuple, alpha: torch.Tensor) -> torch.Tensor:
        n = px[0].shape[0]
        out = torch.empty((n,) + tuple(alpha.shape[1:]), dtype=torch.float64, device=self.device)
        a = alpha.to(self.dtype)
        for i in range(0, n, self.block_size):
            j = min(n, i + self.block_size)
            out[i:j] = (self.kernel.block(rows(px, i, j), pc) @ a).double()
        return out

    @property
    def info(self) -> dict:
        """JSON-able diagnostics of the fit."""
        return {"kernel": repr(self.kernel), "centres": int(self.alpha_.shape[0]), "ridge": self.ridge_,
                "selection": self.selection_, "cg": self.cg_, "cached_knm": self.cached_, "jitter": self.jitter_,
                "timings": self.timings_}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        px = self.kernel.prepare(x.to(self.device, self.dtype))
        out = self._predict_prepared(px, self.prep_c_, self.alpha_).cpu()
        return out + self.y_mean_ if isinstance(self.y_mean_, float) else out + self.y_mean_.cpu()
