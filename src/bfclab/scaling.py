"""Scaling laws (issue 13, parts 1-2; PAPER_NOTES §6 for the claim: poly(d) samples for the deep
learner at every depth, d^omega(1) for kernels): the adaptive search for n*(eps), the smallest n of
a geometric grid at which a method's median error reaches eps, and the fit of log n* against log d
with censored points and bootstrap intervals.

**Search** (:class:`Search`): on the grid n_i = n_min * ratio^i (ratio <= sqrt 2), evaluate
i = 0, s, 2s, ... with s the number of steps that doubles n ("doubling") until the median error is
<= eps, then bisect the indices between the last failure and the first success.  The error is
assumed non-increasing in n (the search's one assumption; a non-monotone curve gives *a* grid
point where the median crosses eps, after a failure one step below it).  When the grid is
exhausted the result is right-censored: n* > n_max.  When the first point already succeeds it is
left-censored: n* <= n_min.  Every evaluation goes through the caller (a sweep cell per seed, which
caches it), so a resumed search replays its cached cells and continues where it stopped.

**Fit** (:func:`censored_fit`): log n* = a log d + b + e, e ~ N(0, sigma^2), by maximum likelihood
with each censored point entering through its tail probability (the Tobit model): a right-censored
point contributes P(log n* > log n_max), a left-censored one P(log n* <= log n_min).  Without
censored points this is ordinary least squares.  Why not drop censored points or fit them at their
bound: both bias the slope towards zero exactly where the claim lives (kernels running out of
budget at large d).  Intervals (:func:`bootstrap_fit`): the seeds of every evaluated cell and the
target seeds are resampled with replacement, n* recomputed from the evaluated points (the smallest
evaluated n whose resampled median reaches eps; censored at the largest evaluated n otherwise), and
the fit repeated; 95 % percentile intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .tables import med


def geometric_grid(n_min: int, n_max: int, ratio: float) -> list[int]:
    """Distinct integers round(n_min * ratio^i) up to n_max (ratio > 1)."""
    if not (ratio > 1 and n_min >= 1 and n_max >= n_min):
        raise ValueError(f"geometric_grid: needs ratio > 1 and 1 <= n_min <= n_max, got {n_min}, {n_max}, {ratio}")
    out, i = [], 0
    while True:
        n = int(round(n_min * ratio ** i))
        if n > n_max:
            return out
        if not out or n > out[-1]:
            out.append(n)
        i += 1


@dataclass
class Search:
    """The adaptive search for the smallest grid index whose median error is <= eps (module
    docstring).  ``propose()`` names the next index to evaluate (None when done); ``update(i, e)``
    gives its median error."""

    grid: list[int]
    eps: float
    step: int = 2  # indices that double n (2 for ratio sqrt 2)
    values: dict = field(default_factory=dict)  # index -> median error
    key: tuple = ()  # the caller's name for the search
    points: dict = field(default_factory=dict)  # n -> per-seed errors (kept by the caller, for the fits)
    seconds: dict = field(default_factory=dict)  # n -> per-seed seconds (the caller's, for time to eps)
    work: dict = field(default_factory=dict)  # n -> per-seed optimiser steps x batch (None: no optimiser)

    def __post_init__(self):
        if not self.grid:
            raise ValueError("Search: empty grid")

    def _bracket(self) -> tuple[int, int | None]:
        """(largest failing index below the first success, or -1; the smallest succeeding index or None)."""
        ok = sorted(i for i, v in self.values.items() if v <= self.eps)
        hi = ok[0] if ok else None
        fails = [i for i, v in self.values.items() if v > self.eps and (hi is None or i < hi)]
        return (max(fails) if fails else -1), hi

    def propose(self) -> int | None:
        lo, hi = self._bracket()
        last = len(self.grid) - 1
        if hi is None:  # doubling
            if lo >= last:
                return None
            nxt = 0 if lo < 0 else min(lo + self.step, last)
            return nxt if nxt not in self.values else None
        if hi - lo <= 1 or hi == 0:
            return None
        return (lo + hi) // 2

    def update(self, index: int, value: float) -> None:
        self.values[int(index)] = float(value) if value == value else math.inf  # nan (diverged) fails

    @property
    def done(self) -> bool:
        return self.propose() is None

    def result(self) -> tuple[int, str]:
        """(n, kind): kind "exact" (n* = n), "right" (n* > n: the grid's end) or "left" (n* <= n)."""
        lo, hi = self._bracket()
        if hi is None:
            return self.grid[max(self.values) if self.values else 0], "right"
        if hi == 0:
            return self.grid[0], "left"
        return self.grid[hi], "exact"


def run_searches(searches: list, evaluate) -> None:
    """Drive every search to its end in rounds: each round collects the proposals of all unfinished
    searches and asks ``evaluate(list of (search, index)) -> list of median errors`` for them at
    once (so that one round is one sweep over many cells).  A value of None means the point has no
    value (its cells are not stored, when a search is replayed from them): that search stops where it
    is, unfinished (``done`` stays False), and the others go on."""
    active = list(searches)
    while True:
        todo = [(s, i) for s in active if (i := s.propose()) is not None]
        if not todo:
            return
        for (s, i), v in zip(todo, evaluate(todo)):
            if v is None:
                active.remove(s)
            else:
                s.update(i, v)


# ---- fits ----------------------------------------------------------------------------------------


#: the spread of log n* that the grid alone causes: n* is only known to a step of the sqrt(2) grid,
#: a uniform error of width log sqrt(2) in log n*, whose standard deviation is log(sqrt 2) / sqrt 12
GRID_SIGMA = math.log(math.sqrt(2)) / math.sqrt(12)


def censored_fit(x, y, kind, sigma_min: float = GRID_SIGMA) -> tuple[float, float, float]:
    """(a, b, sigma) of y = a x + b + N(0, sigma^2) by maximum likelihood, points of ``kind``
    "right" entering as P(Y > y), "left" as P(Y <= y), "exact" through the density (module
    docstring).  Needs two exact points or more.

    sigma is at least ``sigma_min`` (sigma^2 = sigma_min^2 + the fitted scatter's): n* is a grid
    point, so its log carries the grid's own quantisation error (:data:`GRID_SIGMA` for the
    sqrt(2) grid).  Without the floor the likelihood of two exact points and censored ones that
    their line satisfies grows without bound as sigma -> 0, and the fit is degenerate."""
    from scipy.optimize import minimize
    from scipy.stats import norm

    x, y = np.asarray(x, float), np.asarray(y, float)
    kind = np.asarray(kind)
    ex = kind == "exact"
    if ex.sum() < 2 or len(set(x[ex])) < 2:
        raise ValueError("censored_fit: needs at least two exact points at distinct x")
    a0, b0 = np.polyfit(x[ex], y[ex], 1)
    resid = y[ex] - (a0 * x[ex] + b0)
    if not sigma_min > 0:
        raise ValueError(f"censored_fit: sigma_min must be > 0, got {sigma_min}")
    s0 = max(float(np.sqrt(np.mean(resid ** 2))), sigma_min)
    if ex.all():
        return float(a0), float(b0), s0
    right, left = kind == "right", kind == "left"

    def sigma(ls: float) -> float:
        return math.sqrt(sigma_min ** 2 + math.exp(2 * ls))

    def nll(p):
        a, b, ls = p
        s = sigma(ls)
        mu = a * x + b
        out = -norm.logpdf(y[ex], mu[ex], s).sum()
        out -= norm.logsf(y[right], mu[right], s).sum()
        out -= norm.logcdf(y[left], mu[left], s).sum()
        return out

    r = minimize(nll, [a0, b0, math.log(s0)], method="Nelder-Mead",
                 options={"xatol": 1e-8, "fatol": 1e-10, "maxiter": 20000, "maxfev": 40000})
    a, b, ls = r.x
    return float(a), float(b), sigma(ls)


def n_star_from(points: dict[int, list[float]], eps: float) -> tuple[int, str]:
    """n* from evaluated points {n: per-seed errors}: the smallest evaluated n whose median is <= eps
    (left-censored when it is the smallest evaluated n and no smaller n failed), else right-censored
    at the largest evaluated n."""
    below, hit, top = bracket({n: [v if v == v else math.inf for v in vals] for n, vals in points.items()}, eps)
    if hit is None:
        return top, "right"
    return hit, ("left" if below is None else "exact")


def bracket(points: dict[int, list[float]], eps: float) -> tuple[int | None, int | None, int]:
    """(the largest n below the first hit whose median is above ``eps``, the smallest n whose median
    reaches it, the largest n measured): n*(eps) lies in (below, hit] on the evaluated points;
    ``hit`` is None when no n reaches it (n* > the largest n, censored).  Medians leave out nan
    (map a diverged seed to inf first where it should count as a failure)."""
    ns = sorted(points)
    hits = [n for n in ns if med(points[n]) <= eps]
    hit = hits[0] if hits else None
    below = [n for n in ns if (hit is None or n < hit) and med(points[n]) > eps]
    return (below[-1] if below else None), hit, ns[-1]


def n_star_text(points: dict[int, list[float]], eps: float) -> str:
    """n*(eps) as text: "(below, hit]", "<= hit" (no evaluated n below it fails) or "> top"."""
    below, hit, top = bracket(points, eps)
    if hit is None:
        return f"> {top}"
    return f"({below}, {hit}]" if below is not None else f"<= {hit}"


def ratio_text(base: dict[int, list[float]], deep: dict[int, list[float]], eps: float) -> str:
    """(n*(eps) of ``base``) / (n*(eps) of ``deep``) as the interval their two brackets allow."""
    d_below, d_hit, _ = bracket(deep, eps)
    b_below, b_hit, b_top = bracket(base, eps)
    if d_hit is None:
        return "n/a (the deep learner does not reach it)"
    if b_hit is None:
        return f"> {b_top / d_hit:.3g}"
    lo = f"{b_below / d_hit:.3g}" if b_below is not None else "0"
    hi = f"{b_hit / d_below:.3g}" if d_below is not None else "inf"
    return f"[{lo}, {hi}]"


def bootstrap_fit(curves: dict, eps: float, draws: int = 1000, seed: int = 0) -> dict:
    """The exponent a of log n* = a log d + b with a 95 % bootstrap interval.

    ``curves``: {(d, target_seed): {n: [error per seed]}} (the evaluated points).  Each draw
    resamples the target seeds (per d) and each point's seeds with replacement, recomputes n*
    (:func:`n_star_from`) and refits (:func:`censored_fit`); draws without two exact points at
    distinct d are skipped (their count is returned).  Returns {"a", "b", "sigma", "lo", "hi",
    "draws", "skipped", "points": [(d, n*, kind)]}."""
    rng = np.random.default_rng(seed)
    pts = [(d, *n_star_from(c, eps)) for (d, _), c in sorted(curves.items())]
    out: dict = {"points": pts}
    try:
        a, b, s = censored_fit([math.log(d) for d, _, _ in pts], [math.log(n) for _, n, _ in pts],
                               [k for _, _, k in pts])
    except ValueError:
        return {**out, "a": math.nan, "b": math.nan, "sigma": math.nan, "lo": math.nan, "hi": math.nan,
                "draws": 0, "skipped": draws}
    by_d: dict = {}
    for (d, ts), c in curves.items():
        by_d.setdefault(d, []).append(c)
    slopes, skipped = [], 0
    for _ in range(draws):
        xs, ys, ks = [], [], []
        for d, cs in sorted(by_d.items()):
            for j in rng.integers(0, len(cs), len(cs)):
                c = cs[j]
                res = {n: [v[k] for k in rng.integers(0, len(v), len(v))] for n, v in c.items() if v}
                n, kind = n_star_from(res, eps)
                xs.append(math.log(d))
                ys.append(math.log(n))
                ks.append(kind)
        try:
            slopes.append(censored_fit(xs, ys, ks)[0])
        except ValueError:
            skipped += 1
    lo, hi = (np.percentile(slopes, [2.5, 97.5]) if slopes else (math.nan, math.nan))
    return {**out, "a": a, "b": b, "sigma": s, "lo": float(lo), "hi": float(hi), "draws": len(slopes),
            "skipped": skipped}
