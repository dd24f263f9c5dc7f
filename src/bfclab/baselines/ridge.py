"""Ridge-regression linear algebra shared by the kernel and feature-map baselines (PAPER_NOTES §6:
"any kernel method", "linear regression over feature mappings").

Conventions used by every ridge fit in ``bfclab.baselines``:

* Labels are y of shape (n,) or (n, C) (C columns, e.g. the one-hot columns of a C-class label,
  fitted as C regressions in one solve: one factorisation / eigendecomposition, C right-hand
  sides).  (n,) gives predictions of shape (n,), (n, C) of shape (n, C) (:func:`check_targets`).
* Labels are centred: the model is f(x) = ybar + (fitted part), ybar = mean of the training labels
  (per column for (n, C): a float for (n,), a float64 (C,) tensor otherwise, :func:`label_means`).
* The ridge is *normalised*: a grid value lam means the system

      (K + n * lam * kbar * I) alpha = y - ybar        (dual, K = Gram matrix), or
      (Phi^T Phi + n * lam * kbar * I) w = Phi^T (y - ybar)        (primal, K = Phi Phi^T),

  with kbar = mean_i k(x_i, x_i), i.e. the minimiser of (1/n) sum (y_i - f(x_i))^2 +
  lam * kbar * ||f||_H^2.  lam is dimensionless, comparable across kernels and sample sizes.
* The ridge is chosen on a validation split from a grid: one eigendecomposition of the fit
  split's Gram matrix gives the validation predictions of every grid value at once
  (:func:`holdout_errors`); the value with the smallest validation MSE wins.  With C columns
  one ridge is shared by all of them and scored by the validation MSE averaged over the columns.
* A ridge below ``16 eps`` of the compute dtype is raised to it (:func:`ridge_floor`): at
  n * lam * kbar >= 16 eps * n * kbar >= 16 eps * ||K||_2 the Cholesky factorisation of the shifted
  matrix is numerically safe in that dtype.  If it still fails (not positive definite),
  :func:`spd_solve` retries with the ridge times 10.
* Factorisation is in place.  Dense (``cholesky_solve_``, for the D x D systems of the primal
  form): the matrix is filled in its lower triangle (row-major), which is the upper triangle of
  its column-major transpose, and LAPACK/cuSOLVER factor that view without a copy.  The n x n
  systems of KRR use the blocked version in :mod:`bfclab.baselines.tiled` (half the memory).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Sequence

import torch

DEFAULT_GRID: tuple[float, ...] = tuple(10.0**e for e in range(-8, 1))
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    if isinstance(name, torch.dtype):
        if name in DTYPES.values():
            return name
        raise ValueError(f"dtype must be float32 or float64, got {name}")
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def ridge_floor(dtype: torch.dtype) -> float:
    """Smallest normalised ridge used in ``dtype`` (16 machine epsilons)."""
    return 16 * torch.finfo(dtype).eps


def grid_values(grid: Sequence[float]) -> list[float]:
    """The ridge grid as sorted distinct floats (its limits: ``registry.RidgeOptions``)."""
    return sorted({float(v) for v in grid})


def check_targets(y: torch.Tensor, n: int, what: str = "y") -> int | None:
    """C for labels y of shape (n, C), None for shape (n,); a ValueError for any other shape."""
    if y.ndim == 1 and y.shape[0] == n:
        return None
    if y.ndim == 2 and y.shape[0] == n and y.shape[1] >= 1:
        return int(y.shape[1])
    raise ValueError(f"{what} must have shape ({n},) or ({n}, C), got {tuple(y.shape)}")


def label_means(y: torch.Tensor) -> float | torch.Tensor:
    """ybar: a float for y (n,), the float64 column means (a (C,) tensor on y's device) for y (n, C)."""
    return float(y.double().mean()) if y.ndim == 1 else y.double().mean(0)


def centred(y: torch.Tensor, ybar: float | torch.Tensor) -> torch.Tensor:
    """y - ybar in y's dtype (ybar from :func:`label_means`)."""
    return y - ybar if isinstance(ybar, float) else y - ybar.to(y.dtype)


def split(n: int, val_frac: float, seed: int, max_val: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random (fit, validation) split of range(n), validation = val_frac of n (>= 1)."""
    if n < 4:
        raise ValueError(f"need at least 4 training points to choose a ridge, got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    n_val = min(max(1, int(round(val_frac * n))), n - 2)
    if max_val is not None:
        n_val = min(n_val, max_val)
    return perm[n_val:], perm[:n_val]


def holdout_errors(A: torch.Tensor, evals: torch.Tensor, c: torch.Tensor, y_val: torch.Tensor,
                   shifts: Sequence[float]) -> list[float]:
    """Validation MSE of every ridge shift s, given an eigendecomposition of the fit system.

    With M = V diag(evals) V^T the fit split's (Gram or feature-covariance) matrix, the
    validation predictions at shift s are A diag(1/(evals + s)) c, where A = (validation-vs-fit
    kernel or validation features) @ V and c = V^T (fit right-hand side).  c and y_val: (k,) and
    (n_val,), or (k, C) and (n_val, C) for C label columns, whose MSE is averaged over the columns.
    """
    ev = evals.clamp_min(0)
    if c.ndim == 1:
        return [float((A @ (c / (ev + s)) - y_val).pow(2).mean()) for s in shifts]
    return [float((A @ (c / (ev + s)[:, None]) - y_val).pow(2).mean()) for s in shifts]


def choose(grid: Sequence[float], errors: Sequence[float]) -> float:
    """The grid value with the smallest finite validation error (the larger ridge on ties)."""
    best = min((e, -g) for g, e in zip(grid, errors) if math.isfinite(e))
    return -best[1]


def cholesky_solve_(M: torch.Tensor, rhs: torch.Tensor, shift: float) -> torch.Tensor | None:
    """Solve (M + shift I) a = rhs by an in-place Cholesky factorisation; None if it fails.

    M: a square, row-major contiguous tensor whose lower triangle (with the diagonal) holds a
    symmetric matrix; the upper triangle is never read.  M is overwritten by the factor.
    rhs: (n,) or (n, r).
    """
    if M.ndim != 2 or M.shape[0] != M.shape[1] or not M.is_contiguous():
        raise ValueError("cholesky_solve_ needs a square row-major contiguous matrix")
    M.diagonal().add_(shift)
    T = M.mT  # column-major; its upper triangle is M's lower triangle
    info = torch.empty((), dtype=torch.int32, device=M.device)
    U, info = torch.linalg.cholesky_ex(T, upper=True, out=(T, info))  # T = U^T U, in place
    if int(info) != 0:
        return None
    b = rhs[:, None] if rhs.ndim == 1 else rhs
    v = torch.linalg.solve_triangular(U.mT, b, upper=False)  # U^T v = b (U^T = M, row-major)
    a = torch.linalg.solve_triangular(U, v, upper=True)
    return a[:, 0] if rhs.ndim == 1 else a


def spd_solve(attempt: Callable[[float], torch.Tensor | None], shift: float, tries: int = 4,
              what: str = "matrix") -> tuple[torch.Tensor, float]:
    """Run ``attempt(shift)`` (build the matrix, add ``shift`` to its diagonal, factor, solve;
    None when it is not positive definite), retrying with the shift x 10 up to ``tries`` times.

    Returns (solution, shift actually used).
    """
    for i in range(tries):
        sol = attempt(shift)
        if sol is not None:
            return sol, shift
        if i + 1 < tries:
            warnings.warn(f"{what} not positive definite at ridge shift {shift:.3g}; retrying at {10 * shift:.3g}",
                          RuntimeWarning, stacklevel=2)
            shift *= 10
    raise RuntimeError(f"{what} not positive definite even at ridge shift {shift:.3g}; "
                       f"use float64 or a larger ridge")


def primal_stats(featurize: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 chunk: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """(Phi^T Phi, Phi^T y, sum_i ||phi(x_i)||^2) accumulated over row chunks of x (y: (n,) or (n, C))."""
    G = b = None
    tr = 0.0
    for a in range(0, x.shape[0], chunk):
        phi = featurize(x[a:a + chunk])
        g, r = phi.T @ phi, phi.T @ y[a:a + chunk]
        G, b = (g, r) if G is None else (G.add_(g), b.add_(r))
        tr += float(phi.pow(2).sum())
    return G, b, tr


class FeatureRidge:
    """Ridge regression on an explicit feature map phi: KRR with the kernel phi(x).phi(x')
    (PAPER_NOTES §6 "linear regression over feature mappings").

    Labels are centred; the ridge follows the module conventions (normalised lam, chosen on a
    validation split of ``val_frac`` of the data, at most ``max_val`` points, by one
    eigendecomposition).  ``solver``: "primal" works with the D x D covariance Phi^T Phi, built
    ``chunk`` rows at a time (memory O(D^2), any n); "dual" with the n x n Gram Phi Phi^T (for
    n < D); "auto" takes the smaller.  Both give the same predictor (push-through identity).
    y: (n,) or (n, C) (module docstring): C columns share the factorisation and the ridge;
    ``weights_`` is then (D, C) and ``predict`` returns (n, C).
    """

    def __init__(self, featurize: Callable[[torch.Tensor], torch.Tensor], *, ridge: float | None = None,
                 ridge_grid: Sequence[float] = DEFAULT_GRID, val_frac: float = 0.2, max_val: int = 5000,
                 chunk: int = 4096, solver: str = "auto", seed: int = 0, what: str = "feature covariance"):
        self.featurize = featurize
        self.ridge = ridge
        self.ridge_grid = grid_values(ridge_grid)
        self.val_frac, self.max_val, self.chunk, self.solver = val_frac, max_val, chunk, solver
        self.seed, self.what = seed, what

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "FeatureRidge":
        self.outputs_ = check_targets(y, x.shape[0])
        self.y_mean_ = label_means(y)
        yc = centred(y, self.y_mean_)
        n_features = self.featurize(x[:1]).shape[1]
        self.dual_ = self.solver == "dual" or (self.solver == "auto" and x.shape[0] < n_features)
        self.selection_ = None
        if self.ridge is not None:
            lam = max(float(self.ridge), ridge_floor(x.dtype))
            stats = None if self.dual_ else primal_stats(self.featurize, x, yc, self.chunk)
        else:
            lam, stats = self._select(x, yc)
        if self.dual_:
            phi = self.featurize(x)
            K = (phi @ phi.T).contiguous()
            tr = float(K.diagonal().sum())
            a, shift = spd_solve(lambda sh: cholesky_solve_(K.clone(), yc, sh), lam * tr, what=self.what)
            self.weights_ = phi.T @ a
        else:
            G, b, tr = stats
            G = G.contiguous()
            self.weights_, shift = spd_solve(lambda sh: cholesky_solve_(G.clone(), b, sh), lam * tr,
                                             what=self.what)
        self.ridge_ = shift / tr  # the normalised ridge actually used: shift = n lam kbar = lam sum ||phi_i||^2
        return self

    def _select(self, x: torch.Tensor, yc: torch.Tensor):
        """(lam, primal statistics of all of x or None): one eigendecomposition scores the grid."""
        fit_idx, val_idx = split(x.shape[0], self.val_frac, self.seed, self.max_val)
        phi_v = self.featurize(x[val_idx])
        yv = yc[val_idx].double()
        if self.dual_:
            phi_f = self.featurize(x[fit_idx]).double()
            Kf = phi_f @ phi_f.T
            tr = float(Kf.diagonal().sum())
            evals, U = torch.linalg.eigh(Kf)
            A = (phi_v.double() @ phi_f.T) @ U
            c = U.T @ yc[fit_idx].double()
        else:
            G, b, tr = primal_stats(self.featurize, x[fit_idx], yc[fit_idx], self.chunk)
            evals, V = torch.linalg.eigh(G.double())
            A = phi_v.double() @ V
            c = V.T @ b.double()
        grid = [max(g, ridge_floor(x.dtype)) for g in self.ridge_grid]
        errors = holdout_errors(A, evals, c, yv, [g * tr for g in grid])
        lam = choose(grid, errors)
        self.selection_ = {"grid": grid, "val_mse": errors, "chosen": lam,
                           "n_fit": len(fit_idx), "n_val": len(val_idx), "solver": "dual" if self.dual_ else "primal"}
        if self.dual_:
            return lam, None
        # the statistics of all of x = fit split + validation split (no second pass over the data)
        G.add_(phi_v.T @ phi_v)
        b.add_(phi_v.T @ yc[val_idx])
        return lam, (G, b, tr + float(phi_v.pow(2).sum()))

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        out = [self.featurize(x[a:a + self.chunk]) @ self.weights_ for a in range(0, x.shape[0], self.chunk)]
        if not out:
            return x.new_zeros((0,) + tuple(self.weights_.shape[1:]))
        out = torch.cat(out)
        return out + self.y_mean_ if isinstance(self.y_mean_, float) else out + self.y_mean_.to(out)
