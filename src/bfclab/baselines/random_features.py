"""Random-features regression: "linear regression over feature mappings" (PAPER_NOTES §6; §7.3
A.5 "random features").

A fixed random first layer, drawn once from ``seed``, maps x in R^d to D features, u = x/sqrt(d):

* ``quad``:  phi_i(x) = (w_i . u + bias b_i)^2 / sqrt(D)    (random quadratic features; with
  bias = 0 they are exactly (w_i . x)^2 / (d sqrt(D)) and span the homogeneous quadratics; with
  bias > 0 they span every polynomial of degree <= 2 once D >= (d+1)(d+2)/2),
* ``relu``:  phi_i(x) = relu(w_i . u + bias b_i) / sqrt(D),

with w_i ~ N(0, I_d), b_i ~ N(0, 1).  Only the last linear layer is fitted, by ridge regression
(:class:`bfclab.baselines.ridge.FeatureRidge`: centred labels, normalised ridge chosen on a
validation split by one eigendecomposition; solved with the D x D feature covariance, or with
the n x n Gram matrix when n < D).  This equals KRR with the kernel phi(x).phi(x'), whose D -> infinity limits are a degree-2 polynomial
kernel (quad) and the order-1 arc-cosine kernel (relu; see ``kernels.arccos1``).

Labels y are (n,) or (n, C): C label columns (e.g. a one-hot class label) share the features, the
factorisation and one ridge (scored by the validation MSE averaged over the columns); the last
layer is then D x C and ``predict`` returns (n, C).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .. import seeds
from .ridge import DEFAULT_GRID, FeatureRidge, check_targets, resolve_dtype

FEATURES = ("quad", "relu")


class RandomFeatureMap:
    """The fixed random map x -> phi(x) in R^D (module docstring)."""

    def __init__(self, d: int, n_features: int, features: str, bias: float, seed: int,
                 dtype: torch.dtype, device: torch.device):
        if features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
        gen = seeds.generator("baseline_init", seed)
        self.W = torch.randn(d, n_features, generator=gen, dtype=torch.float64).to(device, dtype) / math.sqrt(d)
        self.b = (bias * torch.randn(n_features, generator=gen, dtype=torch.float64)).to(device, dtype)
        self.features = features
        self.scale = 1.0 / math.sqrt(n_features)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.addmm(self.b, x, self.W)
        act = pre.square_() if self.features == "quad" else pre.relu_()
        return act.mul_(self.scale)


class RandomFeatures:
    """Random-features ridge regression (``quad`` or ``relu`` features, module docstring).  The
    options' limits are checked where they are parsed (``registry.RFOptions``), not here.

    ``fit(x, y)``: y (n,) or (n, C).  After ``fit``: ``ridge_`` (normalised ridge used),
    ``selection_`` (grid, validation MSEs) and ``info`` (both as one JSON-able dict).
    Predictions are CPU float64 tensors, (n,) or (n, C) like y.
    """

    def __init__(self, features: str = "relu", *, n_features: int = 4096, bias: float = 1.0,
                 ridge: float | None = None, ridge_grid: Sequence[float] = DEFAULT_GRID, val_frac: float = 0.2,
                 dtype: str = "float64", device: str | torch.device = "cpu", chunk: int = 4096,
                 solver: str = "auto", seed: int = 0, name: str | None = None):
        if features not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, got {features!r}")
        self.features, self.n_features, self.bias = features, int(n_features), float(bias)
        self.ridge, self.ridge_grid, self.val_frac = ridge, ridge_grid, val_frac
        self.dtype = resolve_dtype(dtype)
        self.device = torch.device(device)
        self.chunk, self.solver, self.seed = int(chunk), solver, int(seed)
        self.name = name or f"rf-{features}"

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "RandomFeatures":
        check_targets(y, x.shape[0])
        self.map_ = RandomFeatureMap(x.shape[1], self.n_features, self.features, self.bias, self.seed,
                                     self.dtype, self.device)
        self.solver_ = FeatureRidge(self.map_, ridge=self.ridge, ridge_grid=self.ridge_grid,
                                    val_frac=self.val_frac, chunk=self.chunk, solver=self.solver,
                                    seed=seeds.seed_of("rf_split", self.seed), what="random-feature system")
        self.solver_.fit(x.to(self.device, self.dtype), y.to(self.device, self.dtype))
        self.ridge_, self.selection_ = self.solver_.ridge_, self.solver_.selection_
        return self

    @property
    def info(self) -> dict:
        """JSON-able diagnostics of the fit."""
        return {"ridge": self.ridge_, "selection": self.selection_, "n_features": self.n_features}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.solver_.predict(x.to(self.device, self.dtype)).double().cpu()
