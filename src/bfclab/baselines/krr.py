"""Exact kernel ridge regression (PAPER_NOTES §6: "any kernel method"; §7.3 A.5 KRR baselines).

Solves (K + n lam kbar I) alpha = y - ybar exactly, with the conventions of
:mod:`bfclab.baselines.ridge` (centred labels, normalised ridge lam, kbar = mean k(x_i, x_i)).
y is (n,) or (n, C): C label columns (e.g. a one-hot class label) are C right-hand sides of the
same system, centred per column, solved with one factorisation; alpha is then (n, C) and
``predict`` returns (n, C).

1. **Memory check first.**  Before the Gram matrix is allocated, the peak memory of the fit is
   estimated (:func:`fit_bytes`: the lower half of the Gram matrix, the prepared rows, the block
   temporaries, allocator/library slack and the ridge selection; the label vectors, alpha and
   the solve's work vector once per label column) and compared with ``mem_fraction`` of the free memory of
   the device (:func:`available_memory`: MemAvailable from /proc/meminfo on the CPU,
   ``torch.cuda.mem_get_info`` on a GPU).  Too large an n raises :class:`ConfigError` with one
   line naming the largest n that fits.  (n = 40000 in float32 needs about 3.2 GiB.)
2. **Ridge selection** (unless ``ridge`` is given): on a random sub-sample of ``select_n``
   training points, split into fit and validation (``val_frac``), one float64
   eigendecomposition of the fit part's Gram matrix scores every grid value at once
   (``ridge.holdout_errors``; with C columns one lam for all, scored by the validation MSE
   averaged over the columns).  The chosen lam is the per-sample ridge of the normalised
   objective and is used unchanged at full n; since the best lam usually shrinks as n grows, the
   transfer errs on the side of more regularisation when n >> ``select_n`` (pass ``ridge`` or a
   larger ``select_n`` to avoid it).
3. **One factorisation at full n**: only the lower half of the Gram matrix is computed and
   stored, in ``block_size`` x ``block_size`` blocks (:class:`bfclab.baselines.tiled.TiledSymmetric`),
   the ridge is added to its diagonal in place, and a blocked Cholesky factorisation
   (``torch.linalg.cholesky_ex`` on diagonal blocks, triangular solves and in-place GEMMs) and
   two blocked triangular solves give alpha.  If the factorisation fails (float32 round-off) the
   Gram matrix is recomputed with the ridge x 10 (``ridge.spd_solve``).  The Gram storage is
   released after the fit; prediction streams k(x_test, x_train) alpha in row blocks.

Everything runs in ``dtype`` (float32 or float64) on ``device`` (any torch device; "cpu" by
default).  Predictions come back as CPU float64 tensors, like the labels of ``make_data``.
"""

from __future__ import annotations

import os
import time
from typing import Sequence

import torch

from .. import seeds
from ..config import ConfigError
from .kernels import Kernel, rows
from .ridge import (DEFAULT_GRID, centred, check_targets, choose, grid_values, holdout_errors, label_means,
                    resolve_dtype, ridge_floor, spd_solve, split)
from .tiled import TiledSymmetric

GiB = 2**30


def available_memory(device: torch.device | str) -> int | None:
    """Free memory on ``device`` in bytes: MemAvailable on the CPU, ``mem_get_info`` on CUDA;
    None where it cannot be told (the check is then skipped)."""
    dev = torch.device(device)
    if dev.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    if dev.type == "cuda":
        return int(torch.cuda.mem_get_info(dev)[0])
    return None


def fit_bytes(n: int, d: int, kernel: Kernel, itemsize: int, block_size: int, select_n: int | None,
              outputs: int = 1) -> int:
    """Estimated peak bytes of ``KRR.fit`` at n training points with ``outputs`` label columns
    (see the module docstring)."""
    gram = TiledSymmetric.numel(n, block_size) * itemsize
    # prepared rows, x; per label column: y, y - ybar, the solve's work vector, alpha
    rows_ = n * (kernel.prepared_width(d) + d + 4 * outputs) * itemsize
    b = min(block_size, n)
    blocks = (kernel.block_temporaries() + 1) * b * b * itemsize  # one Gram block in flight, one solve block
    slack = 4 * b * b * itemsize + 64 * 2**20  # freed blocks the allocator keeps, BLAS/LAPACK workspace
    main = gram + rows_ + blocks + slack
    if select_n is None:
        return main
    s = min(n, select_n)
    selection = 4 * s * s * 8 + s * (kernel.prepared_width(d) + d) * 8  # Gram, eigvecs, workspace
    selection += 3 * s * (outputs - 1) * 8  # columns beyond the first: U^T y, predictions, residuals
    return max(main, selection + rows_)


def largest_n(budget: float, d: int, kernel: Kernel, itemsize: int, block_size: int, select_n: int | None,
              outputs: int = 1) -> int:
    """The largest n with ``fit_bytes(n) <= budget`` (0 if none): bisection on a monotone count."""
    lo, hi = 0, 1
    while fit_bytes(hi, d, kernel, itemsize, block_size, select_n, outputs) <= budget:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fit_bytes(mid, d, kernel, itemsize, block_size, select_n, outputs) <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def check_memory(n: int, d: int, kernel: Kernel, dtype: torch.dtype, device: torch.device, block_size: int,
                 select_n: int | None, mem_fraction: float, outputs: int = 1) -> None:
    """Raise a one-line ConfigError if the fit at n points (``outputs`` label columns) would not
    fit in ``device`` memory."""
    avail = available_memory(device)
    if avail is None:
        return
    itemsize = torch.finfo(dtype).bits // 8
    need = fit_bytes(n, d, kernel, itemsize, block_size, select_n, outputs)
    budget = mem_fraction * avail
    if need <= budget:
        return
    nmax = largest_n(budget, d, kernel, itemsize, block_size, select_n, outputs)
    cols = f" with {outputs} label columns" if outputs > 1 else ""
    raise ConfigError(
        f"krr: n={n} training points{cols} need {need / GiB:.1f} GiB on {device} (lower half of a "
        f"{str(dtype)[6:]} {n}x{n} Gram matrix) but {budget / GiB:.1f} GiB is usable ({mem_fraction:.0%} of "
        f"{avail / GiB:.1f} GiB free); the largest n that fits is {nmax}"
    )


class KRR:
    """Exact kernel ridge regression with a blocked in-place Cholesky solve (module docstring).
    The options' limits are checked where they are parsed (``registry.KRROptions``), not here.

    ``ridge``: a fixed normalised ridge lam, or None to choose it from ``ridge_grid`` on a
    validation split of a ``select_n`` sub-sample.  ``fit(x, y)``: y (n,) or (n, C) (module
    docstring).  After ``fit``: ``alpha_`` (dual coefficients, (n,) or (n, C)), ``ridge_`` (lam used), ``shift_`` (what was added to the Gram diagonal),
    ``selection_`` (grid, validation MSEs, choice), ``timings_`` (seconds per phase) and ``info``
    (all of these as one JSON-able dict).
    """

    def __init__(self, kernel: Kernel, *, ridge: float | None = None, ridge_grid: Sequence[float] = DEFAULT_GRID,
                 select_n: int = 4000, val_frac: float = 0.25, dtype: str = "float32",
                 device: str | torch.device = "cpu", block_size: int = 2048, mem_fraction: float = 0.9,
                 seed: int = 0, name: str | None = None):
        self.kernel = kernel
        self.ridge = ridge
        self.ridge_grid = grid_values(ridge_grid)
        self.select_n, self.val_frac = int(select_n), float(val_frac)
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.block_size, self.mem_fraction, self.seed = int(block_size), float(mem_fraction), int(seed)
        self.name = name or f"krr-{kernel.name}"

    # ---- ridge selection ---------------------------------------------------------------------
    def select_ridge(self, x: torch.Tensor, yc: torch.Tensor) -> float:
        """Choose lam on a sub-sample (one float64 eigendecomposition, all grid values at once;
        yc (n,) or (n, C): the validation MSE is averaged over the columns)."""
        n = x.shape[0]
        gen = seeds.generator("krr_select", self.seed)
        sub = torch.randperm(n, generator=gen)[: min(n, self.select_n)]
        fit_i, val_i = split(len(sub), self.val_frac, seeds.seed_of("ridge_split", self.seed))
        fit_i, val_i = sub[fit_i], sub[val_i]
        xf, xv, yf, yv = x[fit_i].double(), x[val_i].double(), yc[fit_i].double(), yc[val_i].double()
        K = self.kernel(xf, xf, self.block_size)
        tr = float(torch.diagonal(K).sum())
        evals, U = torch.linalg.eigh(K)
        del K
        A = self.kernel(xv, xf, self.block_size) @ U
        c = U.T @ yf
        grid = [max(g, ridge_floor(self.dtype)) for g in self.ridge_grid]
        errors = holdout_errors(A, evals, c, yv, [g * tr for g in grid])
        lam = choose(grid, errors)
        self.selection_ = {"grid": grid, "val_mse": errors, "chosen": lam,
                           "n_fit": len(fit_i), "n_val": len(val_i)}
        return lam

    # ---- fit / predict -----------------------------------------------------------------------
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "KRR":
        n, d = x.shape
        outputs = check_targets(y, n)
        check_memory(n, d, self.kernel, self.dtype, self.device, self.block_size,
                     None if self.ridge is not None else self.select_n, self.mem_fraction, outputs or 1)
        t0 = time.perf_counter()
        x = x.to(self.device, self.dtype)
        y = y.to(self.device, self.dtype)
        self.y_mean_ = label_means(y)  # a float for y (n,), a float64 (C,) tensor for y (n, C)
        yc = centred(y, self.y_mean_)
        self.selection_ = None
        lam = max(float(self.ridge), ridge_floor(self.dtype)) if self.ridge is not None else self.select_ridge(x, yc)
        t1 = time.perf_counter()
        prep = self.kernel.prepare(x)
        kbar = float(self.kernel.diag_prepared(prep).double().mean())
        gram = TiledSymmetric(n, self.block_size, self.dtype, self.device)
        build_times: list[float] = []

        def attempt(shift: float) -> torch.Tensor | None:
            tb = time.perf_counter()
            gram.fill_(lambda r0, r1, c0, c1: self.kernel.block(rows(prep, r0, r1), rows(prep, c0, c1)))
            build_times.append(time.perf_counter() - tb)
            return gram.solve(yc) if gram.add_diag_(shift).cholesky_() else None

        self.alpha_, self.shift_ = spd_solve(attempt, n * lam * kbar, what="KRR Gram matrix")
        del gram
        self.ridge_ = self.shift_ / (n * kbar)
        self.prep_ = prep
        t2 = time.perf_counter()
        self.timings_ = {"select": t1 - t0, "gram": sum(build_times), "solve": t2 - t1 - sum(build_times)}
        return self

    @property
    def info(self) -> dict:
        """JSON-able diagnostics of the fit (ridge used, selection, timings)."""
        return {"kernel": repr(self.kernel), "ridge": self.ridge_, "shift": self.shift_,
                "selection": self.selection_, "timings": self.timings_}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        px = self.kernel.prepare(x)
        out = torch.empty((x.shape[0],) + tuple(self.alpha_.shape[1:]), dtype=self.dtype, device=self.device)
        step = max(64, self.block_size**2 // self.alpha_.shape[0])  # blocks of ~block_size^2 entries
        for a in range(0, x.shape[0], step):
            b = min(x.shape[0], a + step)
            out[a:b] = self.kernel.block(rows(px, a, b), self.prep_) @ self.alpha_
        out = out.double().cpu()
        return out + self.y_mean_ if isinstance(self.y_mean_, float) else out + self.y_mean_.cpu()
