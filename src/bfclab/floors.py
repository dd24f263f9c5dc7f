"""Error floors of a target (issue 12; PAPER_NOTES §2.4, §6): the best test nMSE that a predictor
of polynomial degree <= p can reach, and the best a predictor built from the lower levels' output
terms only can reach, each with a confidence interval.

**Degree floors through the Hermite (Wiener-chaos) expansion.**  Under x ~ N(0, I_d) every
f in L^2 splits into orthogonal parts f = sum_k f_k of Hermite degree k, and the best predictor of
degree <= p is sum_{k <= p} f_k, so

    floor_p = sum_{k > p} ||f_k||^2 / Var f.

The energies ||f_k||^2 come from Mehler's formula: for the correlated pair
x_t = t x + sqrt(1 - t^2) z (z an independent Gaussian), E[f(x) f(x_t)] = sum_k t^k ||f_k||^2,
a polynomial in t of the target's degree D (2^(L-1) for the quadratic class).  It is estimated by
Monte Carlo at 2(D + 1) Chebyshev nodes +-t in (-1, 1) (the negative node with the antithetic
partner -x_t) and at t = +-1, with the same x for every node (common random numbers), and the
D + 1 energies are read off by least squares.  This needs
f only as a function (no explicit monomials: 52 360 of them at degree 4 in d = 32), so it works for
any polynomial target.  Each of ``batches`` independent batches gives one estimate; the reported
value is their mean with a 95 % t-interval (the estimates of the high-degree energies are noisy:
the interval says how much).

**Without the top level**: the best linear combination of the lower levels' output terms
alpha_l ||S*_l(x)||^2, l < L (and a constant), fitted by least squares on each batch and scored
on the next (the predictor a learner that never recovers the top level is left with, when its
lower levels are perfect).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from . import seeds


def _interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95 % t-interval of independent estimates."""
    a = np.asarray(values, float)
    m = float(a.mean())
    if a.size < 2:
        return m, math.nan, math.nan
    from scipy.stats import t as student

    h = float(student.ppf(0.975, a.size - 1)) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return m, m - h, m + h


def hermite_energies(f: Callable[[torch.Tensor], torch.Tensor], d: int, degree: int, n: int,
                     gen: torch.Generator) -> np.ndarray:
    """One Monte-Carlo estimate of ||f_k||^2, k = 0..degree, from n correlated pairs (module
    docstring); float64 throughout.  Nodes come in pairs +-t with the antithetic partner
    x_{-t} = -x_t (the same law as a fresh pair), which decouples the even and the odd energies
    (an even f gets exactly zero odd ones).  Plain least squares keeps the estimate unbiased, so an
    energy can come out slightly negative (non-negative least squares was tried: it biased the
    degree-2 floor low against the explicit least-squares check)."""
    half = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (2 * (degree + 1)))  # the positive Chebyshev nodes
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    fx = f(x).double()
    nodes, corr = [1.0, -1.0], [float((fx * fx).mean()), float((fx * f(-x).double()).mean())]
    for t in half:
        xt = t * x + math.sqrt(max(0.0, 1 - t * t)) * z
        nodes += [t, -t]
        corr += [float((fx * f(xt).double()).mean()), float((fx * f(-xt).double()).mean())]
    return np.linalg.lstsq(np.vander(np.asarray(nodes), degree + 1, increasing=True), np.asarray(corr), rcond=None)[0]


def degree_floors(f: Callable[[torch.Tensor], torch.Tensor], d: int, degree: int, ps: list[int],
                  n: int = 500_000, batches: int = 10, seed: int = 0) -> dict:
    """floor_p for every p of ``ps`` (mean and 95 % interval over ``batches`` estimates of n
    pairs each), and the energy share of each degree."""
    gen = seeds.generator("floors", seed)
    est = [hermite_energies(f, d, degree, n, gen) for _ in range(batches)]
    shares = [e / e[1:].sum() for e in est]  # ||f_k||^2 / Var f
    return {"floors": {p: _interval([float(s[p + 1:].sum()) for s in shares]) for p in ps},
            "energy_share": {k: _interval([float(s[k]) for s in shares]) for k in range(1, degree + 1)},
            "n_pairs": n, "batches": batches, "degree": degree}


def top_level_floor(target, n: int = 200_000, batches: int = 10, seed: int = 0) -> tuple[float, float, float]:
    """nMSE (by the target's population variance) of the best linear combination of the output
    terms of levels < L and a constant, fitted on one batch and scored on the next."""
    gen = seeds.generator("floors", seed, index=1)

    def batch():
        x = torch.randn(n, target.d, generator=gen, dtype=torch.float64)
        terms = target.level_outputs(x)
        lower = torch.stack([torch.ones(n, dtype=torch.float64)] + [terms[l] for l in range(2, target.L)], 1)
        return lower, sum(terms.values())

    fit = batch()
    out = []
    for _ in range(batches):
        nxt = batch()
        w = torch.linalg.lstsq(fit[0], fit[1][:, None]).solution[:, 0]
        out.append(float((nxt[0] @ w - nxt[1]).pow(2).mean()) / float(target.var_g))
        fit = nxt
    return _interval(out)


def target_floors(target, ps: list[int] | None = None, n: int = 500_000, batches: int = 10, seed: int = 0) -> dict:
    """Every floor of a quadratic-class target (degree floors for p < 2^(L-1), the top-level floor)."""
    degree = 2 ** (target.L - 1)
    ps = ps if ps is not None else list(range(2, degree))
    out = degree_floors(target, target.d, degree, ps, n=n, batches=batches, seed=seed)
    out["without_top_level"] = top_level_floor(target, n=min(n, 200_000), batches=batches, seed=seed)
    return out
