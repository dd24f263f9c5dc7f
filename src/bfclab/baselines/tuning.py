"""Baselines tuned with the same care as the deep learner (issue 12, part 1; PAPER_NOTES §6):
hyper-parameters chosen on validation data at the full n of the cell, from a grid that brackets
the choice.

:class:`Tuned` wraps any estimator of the registry.  Every point of a cartesian ``space`` of its
options (say a polynomial kernel's degree and offset) is scored on validation data drawn from the
training set at its full size:

* an estimator that selects its own ridge by one eigendecomposition (exact KRR,
  ``select_ridge``) is scored by that selection run on *all* training points (its fit/validation
  split of the whole set): the validation MSE at its best ridge, every ridge of its grid at once;
* any other estimator is fitted on a split of ``1 - val_frac`` of the training points (the
  ``tune_split`` stream) and scored on the rest.

**Bracketing.**  When the best value of a numeric axis sits at the edge of that axis, the axis is
extended by one more value beyond that edge (the grid's own ratio for a geometric axis, its step for
an arithmetic one), scored with the other axes at their best, and so on up to ``extend`` times or
until the option's limit or its ``caps`` entry (the largest value an axis may grow to, for
cost: a net's width).  Whatever still sits at an edge afterwards is reported in
``info["at_edge"]`` (the results' "chosen at grid edge" column; one held there by its cap also in
``info["capped"]``); a ridge chosen at the edge of its
own grid is reported there too (as ``ridge``).  A best value at an edge that is the option's own
limit (a weight decay of 0, the smallest degree allowed) is the end of the option's range, not of
the grid: it goes to ``info["at_limit"]`` instead.  So does a ridge at the bottom of its grid when the
grid's next value below would fall under the solver's floor (``ridge.ridge_floor``: 16 machine
epsilons of its dtype, relative to the Gram matrix's trace), where a smaller ridge cannot be told
apart from it: the ridgeless limit at the solver's precision (:func:`ridge_edge`).  The chosen
options then fit the whole training set with the ridge fixed at the chosen value where the inner
estimator has one.  ``chosen`` holds the
choice and ``info["scores"]`` every point tried.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable

import torch

from .. import seeds
from ..config import limit_problem
from .krr import KRR, check_memory
from .ridge import ridge_floor, split


def _next_value(values: list, upward: bool) -> Any:
    """The value beyond the largest (``upward``) or smallest entry of a sorted numeric axis: the
    axis's ratio at that edge when both edge values are positive (a geometric axis), else its step;
    integers stay integers (and move by at least one)."""
    inner, edge = (values[-2], values[-1]) if upward else (values[1], values[0])
    if inner > 0 and edge > 0:
        nxt = edge * (edge / inner)
    else:
        nxt = edge + (edge - inner)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        nxt = int(round(nxt))
        if nxt == edge:
            nxt = edge + (1 if upward else -1)
    return nxt


def ridge_edge(lam: float, grid: list[float], dtype: torch.dtype) -> str | None:
    """Where a chosen (normalised) ridge ``lam`` sits on its ``grid`` in ``dtype``: ``"edge"`` at
    either end of the grid, ``"limit"`` at its bottom when the grid's next value below (its own ratio)
    is under ``ridge_floor(dtype)``, so that the grid cannot be extended there (module docstring);
    None inside the grid."""
    vals = sorted({max(float(g), ridge_floor(dtype)) for g in grid})
    if len(vals) < 2 or vals[0] * (1 + 1e-9) < lam < vals[-1] * (1 - 1e-9):
        return None
    if lam <= vals[0] * (1 + 1e-9) and _next_value(vals, upward=False) < ridge_floor(dtype):
        return "limit"
    return "edge"


def _numeric(values: list) -> bool:
    return len(values) >= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


class Tuned:
    """An estimator whose options in ``space`` are chosen on validation data (module docstring).

    ``build(options) -> estimator`` makes the inner estimator with the fixed ``options`` updated by
    one point of ``space``; ``limits(key)`` gives an option's field metadata (for the bracketing's
    bounds)."""

    def __init__(self, name: str, build: Callable[[dict], Any], space: dict, limits: Callable[[str], dict],
                 *, extend: int = 3, val_frac: float = 0.25, seed: int = 0, caps: dict | None = None):
        self.name, self.build, self.limits = name, build, limits
        self.caps = {k: float(v) for k, v in (caps or {}).items()}
        self.space = {k: sorted(v) if _numeric(list(v)) else list(v) for k, v in space.items()}
        self.extend, self.val_frac, self.seed = int(extend), float(val_frac), int(seed)
        self.chosen: dict = {}
        self.info: dict = {}
        self.est_ = None

    # ---- scoring ------------------------------------------------------------------------------------
    def _score(self, point: dict, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float | None]:
        """(validation MSE, the ridge chosen with it or None)."""
        est = self.build(point)
        if isinstance(est, KRR) and est.ridge is None:  # its ridge selection on the whole training set
            est.select_n = x.shape[0]
            check_memory(x.shape[0], x.shape[1], est.kernel, est.dtype, est.device, est.block_size, est.select_n,
                         est.mem_fraction, 1 if y.dim() == 1 else y.shape[1])
            xd = x.to(est.device, est.dtype)
            yd = y.to(est.device, est.dtype)
            yc = yd - yd.double().mean(0).to(yd.dtype)
            lam = est.select_ridge(xd, yc)
            errs = [e for e in est.selection_["val_mse"] if math.isfinite(e)]
            return (min(errs) if errs else math.inf), lam
        fit_i, val_i = split(x.shape[0], self.val_frac, seeds.seed_of("tune_split", self.seed))
        est.fit(x[fit_i], y[fit_i])
        pred = est.predict(x[val_i]).to(torch.float64).cpu()
        err = float((pred - y[val_i].to(torch.float64).cpu()).pow(2).mean())
        return (err if math.isfinite(err) else math.inf), None

    def _key(self, point: dict) -> str:
        return repr(sorted(point.items()))

    # ---- fit / predict ---------------------------------------------------------------------------------
    def fit(self, x: torch.Tensor, y: torch.Tensor) -> "Tuned":
        scores: dict[str, tuple[dict, float, float | None]] = {}

        def score(point: dict) -> float:
            k = self._key(point)
            if k not in scores:
                scores[k] = (dict(point), *self._score(point, x, y))
            return scores[k][1]

        axes = {k: list(v) for k, v in self.space.items()}
        for combo in itertools.product(*axes.values()):
            score(dict(zip(axes, combo)))
        best = min(scores.values(), key=lambda s: s[1])[0]
        for _ in range(self.extend):  # bracket: extend every numeric axis whose best value is at an edge
            grew = False
            for k, vals in axes.items():
                if not _numeric(vals) or best[k] not in (vals[0], vals[-1]):
                    continue
                new = _next_value(vals, upward=best[k] == vals[-1])
                if new in vals or limit_problem(new, self.limits(k)) is not None or new > self.caps.get(k, math.inf):
                    continue
                axes[k] = sorted(vals + [new])
                score({**best, k: new})
                grew = True
            best = min(scores.values(), key=lambda s: s[1])[0]
            if not grew:
                break
        _, err, lam = scores[self._key(best)]
        at_edge, at_limit, capped = [], [], []  # an edge the option's own limit forbids passing (weight decay 0) is not a grid edge
        for k, vals in axes.items():
            if _numeric(vals) and best[k] in (vals[0], vals[-1]):
                beyond = _next_value(vals, upward=best[k] == vals[-1])
                (at_limit if limit_problem(beyond, self.limits(k)) is not None else at_edge).append(k)
                if beyond > self.caps.get(k, math.inf):
                    capped.append(k)
        final = dict(best)
        self.est_ = self.build(final)
        if lam is not None:
            where = ridge_edge(lam, self.est_.ridge_grid, self.est_.dtype)
            if where is not None:
                (at_limit if where == "limit" else at_edge).append("ridge")
            self.est_.ridge = lam
        self.est_.fit(x, y)
        self.chosen = {**final, **({"ridge": lam} if lam is not None else {})}
        self.info = {"val_mse": err, "at_edge": at_edge, "at_limit": at_limit, "capped": capped, "axes": axes,
                     "scores": [{**p, "val_mse": e, **({"ridge": r} if r is not None else {})}
                                for p, e, r in scores.values()]}
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        if self.est_ is None:
            raise RuntimeError(f"{self.name}: predict called before fit")
        return self.est_.predict(x)
