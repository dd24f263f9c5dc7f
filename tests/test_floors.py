"""Error floors (bfclab.floors) against closed forms: a polynomial with known Hermite energies,
and the default target's degree-2 floor against an explicit least-squares fit on its monomials."""

import math

import numpy as np
import pytest
import torch

from bfclab.floors import degree_floors, hermite_energies, top_level_floor


def known(x: torch.Tensor) -> torch.Tensor:
    """1 + He_1(x1) + He_2(x2) + x1 x2 x3 + He_4(x3)/2 (probabilists' Hermite): energies
    ||f_0||^2 = 1, ||f_1||^2 = 1, ||f_2||^2 = 2! = 2, ||f_3||^2 = 1, ||f_4||^2 = 4!/4 = 6."""
    a, b, c = x[:, 0], x[:, 1], x[:, 2]
    return 1 + a + (b**2 - 1) + a * b * c + 0.5 * (c**4 - 6 * c**2 + 3)


def test_hermite_energies_of_a_known_polynomial():
    e = hermite_energies(known, 3, 4, 400_000, torch.Generator().manual_seed(0))
    # Monte-Carlo: the quartic part has E f^4 in the hundreds; a tolerance of a few percent of Var f
    np.testing.assert_allclose(e, [1, 1, 2, 1, 6], atol=0.35)
    out = degree_floors(known, 3, 4, [1, 2, 3], n=200_000, batches=6, seed=1)
    var = 1 + 2 + 1 + 6
    for p, exact in {1: 9 / var, 2: 7 / var, 3: 6 / var}.items():
        m, lo, hi = out["floors"][p]
        assert lo <= exact <= hi or abs(m - exact) < 0.03, (p, m, lo, hi, exact)


def test_degree_two_floor_matches_least_squares_on_monomials(small_target):
    """Independent check: least squares on 1, x_i, x_i x_j (fitted on 200k, scored on 200k) and
    the Hermite estimate of floor_2 agree within their Monte-Carlo spread."""
    tg = small_target
    g = torch.Generator().manual_seed(5)
    iu = torch.triu_indices(tg.d, tg.d)

    def feats(x):
        return torch.cat([torch.ones(len(x), 1, dtype=x.dtype), x, (x[:, :, None] * x[:, None, :])[:, iu[0], iu[1]]], 1)

    x = torch.randn(200_000, tg.d, generator=g, dtype=torch.float64)
    w = torch.linalg.lstsq(feats(x), tg(x)[:, None]).solution[:, 0]
    xt = torch.randn(200_000, tg.d, generator=g, dtype=torch.float64)
    ls = float((feats(xt) @ w - tg(xt)).pow(2).mean()) / float(tg.var_g)
    m, lo, hi = degree_floors(tg, tg.d, 2 ** (tg.L - 1), [2], n=100_000, batches=8, seed=2)["floors"][2]
    assert abs(m - ls) < max(3 * (hi - lo), 0.03), (m, lo, hi, ls)


class TwoTerms:
    """A stand-in target with output terms x1^2 (level 2) and 2 x2^2 (level 3): without the top
    level the best predictor is x1^2 + 2, leaving 2 (x2^2 - 1), so the floor is 4 Var(x2^2) /
    Var(x1^2 + 2 x2^2) = 8 / 10."""

    d, L, var_g = 2, 3, 10.0

    def level_outputs(self, x):
        return {2: x[:, 0] ** 2, 3: 2 * x[:, 1] ** 2}


def test_top_level_floor_closed_form():
    m, lo, hi = top_level_floor(TwoTerms(), n=200_000, batches=6)
    assert lo < m < hi and m == pytest.approx(0.8, abs=0.02)
    assert lo <= 0.8 <= hi or abs(m - 0.8) < 0.01


@pytest.fixture(scope="module")
def small_target():
    from bfclab.config import TargetConfig
    from bfclab.target import Target

    return Target.from_config(TargetConfig(d=6, L=3, widths=[2], mc_samples=20000, var_samples=200000))


def test_a_degree_two_target_has_floor_zero_at_degree_two():
    """A quadratic-class target with one level (G* = alpha ||S_2||^2, S_2 affine in x) is a
    degree-2 polynomial: its degree-2 floor is 0, also when the read-off allows degrees up to 4."""
    from bfclab.config import TargetConfig
    from bfclab.target import Target

    t = Target.from_config(TargetConfig(d=6, L=2, mc_samples=5000, var_samples=20000))
    out = degree_floors(t, 6, 4, [1, 2, 3], n=100_000, batches=6, seed=2)
    m, lo, hi = out["floors"][2]
    assert lo <= 0.0 <= hi and abs(m) < 0.01, out["floors"][2]
    assert out["floors"][1][0] > 0.5  # most of its variance is in degree 2
