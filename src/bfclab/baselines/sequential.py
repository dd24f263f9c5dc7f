"""Kernel methods applied sequentially, level by level (PAPER_NOTES §6: "applying kernel method
sequentially" is not known to learn the class efficiently; v5/v6 abstracts, §1).

The choice made here (the paper gives no algorithm for this baseline): level l = 2..L fits

    h_l = KRR with the degree-2 polynomial kernel k(u, u') = (c + <u, u'>/p)^2 on inputs u_l in R^p

to the residual r_{l-1} = y - h_2 - ... - h_{l-1} the levels below left unexplained (r_1 = y), and
the prediction is h_2 + ... + h_L.  Every level is a convex fit, fitted once and then frozen: this
is layer-wise learning with a kernel at each level and no backward correction (PAPER_NOTES §5.3).
Its inputs are

    u_2 = x,      u_{l+1} = [x, pass_up_l(x)]     (each column standardised on the training set),

where ``pass_up`` is

* ``"eig"`` (default): h_l is a quadratic polynomial of u_l, h_l(u) = const + b.u + u^T A_l u.
  The top-k eigenvectors V_k of A_l (largest |eigenvalue|) give the level's k features
  s_l = V_k^T u_l (the analogue of the learner's SVD warm start, PAPER_NOTES §4.3, with
  k = the target's width), passed up with all their products: [s_l, s_l,a s_l,b (a <= b)] (the
  analogue of the lift sigma(R s), §3.1, which makes every quadratic form of s_l available; the
  linear part keeps affine maps of s_l in the span).  s_l has degree 2^(l-2) in x and h_l
  degree 2^(l-1), the degrees of the target's S*_l and Sum(G*_l) (PAPER_NOTES §2.4).
* ``"output"``: the scalar outputs h_2(x), ..., h_l(x) of the levels fitted so far.  The
  composition can still reach degree 2^(l-1), but one scalar per level carries much less than
  the k-dimensional S*_l the target's next level needs.

Each level is solved exactly on the explicit feature map of the degree-2 polynomial kernel
(:func:`quadratic_features`, dimension D = 1 + p + p(p+1)/2, about 1100 for the default target)
with ``ridge.FeatureRidge``: in the primal (cost O(n D^2) instead of O(n^3), so the baseline runs
at any n of the sweeps) or, for n < D, in the dual; either way the same predictor as KRR with
that kernel (tested).  The ridge of every level is chosen on its own validation split.  Since a level has at most
~1100 free coefficients and n is much larger, the in-sample residuals passed to the next level
are not over-fitted; no cross-fitting is used.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .. import seeds
from .ridge import DEFAULT_GRID, FeatureRidge, resolve_dtype

PASS_UP = ("eig", "output")


def quadratic_features(u: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """Explicit features phi with phi(u).phi(u') = (c + <u, u'>/p)^2, p = u.shape[1]:
    [c, sqrt(2c) v, v_i^2, sqrt(2) v_i v_j (i < j)] with v = u/sqrt(p)."""
    n, p = u.shape
    v = u / math.sqrt(p)
    iu = torch.triu_indices(p, p, device=u.device)
    mult = torch.full((iu.shape[1],), math.sqrt(2.0), dtype=u.dtype, device=u.device)
    mult[iu[0] == iu[1]] = 1.0
    quad = v[:, iu[0]] * v[:, iu[1]] * mult
    return torch.cat([u.new_full((n, 1), c), math.sqrt(2 * c) * v, quad], dim=1)


def quadratic_form(weights: torch.Tensor, p: int) -> torch.Tensor:
    """The symmetric p x p matrix A with h(u) = const + b.u + v^T A v (v = u/sqrt(p)) for a weight
    vector on ``quadratic_features``."""
    iu = torch.triu_indices(p, p, device=weights.device)
    w = weights[1 + p:]
    vals = torch.where(iu[0] == iu[1], w, w / math.sqrt(2.0))
    A = weights.new_zeros(p, p)
    A[iu[0], iu[1]] = vals
    A[iu[1], iu[0]] = vals
    return A


def lift(s: torch.Tensor) -> torch.Tensor:
    """[s, s_a s_b for a <= b]: s and all its quadratic monomials (PAPER_NOTES §3.1 analogue)."""
    k = s.shape[1]
    iu = torch.triu_indices(k, k, device=s.device)
    return torch.cat([s, s[:, iu[0]] * s[:, iu[1]]], dim=1)


class Standardise:
    """Column-wise (u - mean) / std with the statistics of the training inputs."""

    def __init__(self, u: torch.Tensor):
        self.mean = u.mean(0)
        self.std = u.std(0).clamp_min(1e-12)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return (u - self.mean) / self.std


class SequentialKernel:
    """Level-by-level kernel regression on residuals (module docstring).

    ``L``: top level (levels 2..L are fitted); ``k``: eigen-directions passed up per level
    (``pass_up="eig"``); ``c``: offset of the degree-2 polynomial kernel.  After ``fit``:
    ``levels_`` (one dict per level: solver, input standardisation, directions),
    ``train_nmse_`` (the mean squared residual / Var(y) after each level) and ``info``.  The
    options' limits are checked where they are parsed (``registry.SeqKernelOptions``), not here.
    """

    def __init__(self, *, L: int = 4, k: int = 4, pass_up: str = "eig", c: float = 1.0,
                 ridge: float | None = None, ridge_grid: Sequence[float] = DEFAULT_GRID, val_frac: float = 0.2,
                 dtype: str = "float64", device: str | torch.device = "cpu", chunk: int = 4096, seed: int = 0,
                 name: str | None = None):
        self.L, self.k, self.pass_up, self.c = int(L), int(k), pass_up, float(c)
        self.ridge, self.ridge_grid, self.val_frac = ridge, ridge_grid, val_frac
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.chunk, self.seed = int(chunk), int(seed)
        self.name = name or "seqkernel"

    def _featurize(self, std: Standardise):
        return lambda u: quadratic_features(std(u), self.c)

    def _next_input(self, x: torch.Tensor, up: list, level: dict, u_raw: torch.Tensor,
                    h: torch.Tensor) -> tuple[torch.Tensor, list]:
        """(u_{l+1} before standardisation, the passed-up blocks) from level l's input and output."""
        if self.pass_up == "output":
            up = up + [h[:, None]]  # every level's output so far
        else:
            up = [lift(level["std"](u_raw) @ level["V"])]  # the level right below only
        return torch.cat([x, *up], dim=1), up

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "SequentialKernel":
        x = x.to(self.device, self.dtype)
        y = y.to(self.device, self.dtype)
        resid, var = y.clone(), float(y.var())
        u_raw, up = x, []
        self.levels_, self.train_nmse_ = [], []
        for lev in range(2, self.L + 1):
            std = Standardise(u_raw)
            solver = FeatureRidge(self._featurize(std), ridge=self.ridge, ridge_grid=self.ridge_grid,
                                  val_frac=self.val_frac, chunk=self.chunk, seed=seeds.seed_of("seqkernel_split", self.seed, lev),
                                  what=f"level-{lev} system").fit(u_raw, resid)
            h = solver.predict(u_raw)
            level = {"level": lev, "std": std, "solver": solver, "V": None}
            if self.pass_up == "eig" and lev < self.L:
                p = u_raw.shape[1]
                evals, vecs = torch.linalg.eigh(quadratic_form(solver.weights_, p))
                top = evals.abs().argsort(descending=True)[: min(self.k, p)]
                level["V"] = vecs[:, top]
            self.levels_.append(level)
            resid = resid - h
            self.train_nmse_.append(float(resid.pow(2).mean()) / var)
            if lev < self.L:
                u_raw, up = self._next_input(x, up, level, u_raw, h)
        return self

    @property
    def info(self) -> dict:
        """JSON-able diagnostics: per level, the ridge used, its selection and the train nMSE after it."""
        return {"levels": [{"level": lv["level"], "ridge": lv["solver"].ridge_, "selection": lv["solver"].selection_,
                            "train_nmse_after": nm} for lv, nm in zip(self.levels_, self.train_nmse_)]}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, self.dtype)
        u_raw, up, out = x, [], x.new_zeros(x.shape[0])
        for level in self.levels_:
            h = level["solver"].predict(u_raw)
            out = out + h
            if level["level"] < self.L:
                u_raw, up = self._next_input(x, up, level, u_raw, h)
        return out.double().cpu()
