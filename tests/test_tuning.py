"""Tuned baselines (issue 12, part 1): choices on validation data at the full n, grids that extend
beyond an edge choice, and the edge flag when they may not."""

from __future__ import annotations

import torch
import pytest

from bfclab.baselines.krr import KRR
from bfclab.baselines.kernels import Polynomial
from bfclab.baselines.registry import make_estimator
from bfclab.baselines.ridge import ridge_floor
from bfclab.baselines.tuning import Tuned, _next_value, ridge_edge
from bfclab.config import ConfigError


class Bowl:
    """A fake estimator whose validation error is (log2(a) - log2(best))^2 + 1: it predicts y
    plus a constant offset of that size (the trusted reference for where the optimum is)."""

    def __init__(self, a: float, best: float):
        self.a, self.best = a, best

    def fit(self, x, y):
        return self

    def predict(self, x):
        import math

        off = math.sqrt((math.log2(self.a) - math.log2(self.best)) ** 2 + 1)
        return x[:, 0] + off


def tuned_bowl(grid, best, extend, limits=None):
    return Tuned("bowl", lambda p: Bowl(p["a"], best), {"a": grid}, lambda k: limits or {}, extend=extend)


def data():
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return x, x[:, 0].clone()


def test_a_choice_at_the_edge_extends_the_grid_until_it_is_bracketed():
    x, y = data()
    t = tuned_bowl([1.0, 2.0, 4.0], best=10.0, extend=3).fit(x, y)
    assert t.info["axes"]["a"] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert t.chosen == {"a": 8.0} and t.info["at_edge"] == []
    low = tuned_bowl([1.0, 2.0, 4.0], best=0.3, extend=3).fit(x, y)
    assert low.chosen == {"a": 0.25} and low.info["axes"]["a"][0] == 0.125


def test_an_edge_choice_that_may_not_extend_is_flagged():
    x, y = data()
    t = tuned_bowl([1.0, 2.0, 4.0], best=100.0, extend=1).fit(x, y)
    assert t.chosen == {"a": 8.0} and t.info["at_edge"] == ["a"]
    # the option's own limit ends its range, not the grid: reported apart ("at_limit"), e.g. weight decay 0
    capped = tuned_bowl([1.0, 2.0, 4.0], best=100.0, extend=3, limits={"le": 4.0}).fit(x, y)
    assert capped.chosen == {"a": 4.0} and capped.info["axes"]["a"] == [1.0, 2.0, 4.0]
    assert capped.info["at_edge"] == [] and capped.info["at_limit"] == ["a"]
    zero = Tuned("bowl", lambda p: Bowl(p["a"] + 1.0, 1.0), {"a": [0.0, 1e-4, 1e-3]}, lambda k: {"ge": 0.0},
                 extend=3).fit(x, y)
    assert zero.chosen == {"a": 0.0} and zero.info["at_edge"] == [] and zero.info["at_limit"] == ["a"]
    assert t.info["at_limit"] == []


def test_a_cap_stops_the_extension_and_is_flagged():
    x, y = data()
    t = Tuned("bowl", lambda p: Bowl(p["a"], 100.0), {"a": [1.0, 2.0, 4.0]}, lambda k: {}, extend=3,
              caps={"a": 8.0}).fit(x, y)
    assert t.info["axes"]["a"] == [1.0, 2.0, 4.0, 8.0] and t.chosen == {"a": 8.0}
    assert t.info["at_edge"] == ["a"] and t.info["capped"] == ["a"] and t.info["at_limit"] == []
    free = tuned_bowl([1.0, 2.0, 4.0], best=10.0, extend=3).fit(x, y)
    assert free.info["capped"] == []
    with pytest.raises(ConfigError, match=r"^estimator 'tuned-twolayer-relu' option 'caps.depth': a number capping"):
        make_estimator("tuned-twolayer-relu", {"caps": {"depth": 4}})


def test_next_values_keep_the_axis_kind():
    assert _next_value([2, 4, 8], upward=True) == 16 and _next_value([2, 4, 8], upward=False) == 1
    assert _next_value([0.0, 1e-4, 1e-3], upward=False) == -1e-4  # arithmetic at 0 (then refused by ge=0)
    assert _next_value([1, 2, 3], upward=True) == 4
    assert _next_value([0.5, 1.0], upward=True) == 2.0


def test_a_ridge_at_the_solvers_floor_is_its_limit_not_a_grid_edge():
    grid = [10.0 ** e for e in range(-14, 1)]
    f64 = torch.float64
    assert ridge_edge(1e-14, grid, f64) == "limit"  # 1e-15 would be under float64's 3.6e-15
    assert ridge_edge(1.0, grid, f64) == "edge" and ridge_edge(1e-6, grid, f64) is None
    assert ridge_edge(1e-6, grid[8:], f64) == "edge"  # a grid from 1e-6 could go lower in float64
    # float32 clips the grid at its floor (1.9e-6): a choice there is float32's limit
    assert ridge_edge(ridge_floor(torch.float32), grid, torch.float32) == "limit"


def test_tuned_krr_scores_on_all_points_and_refits_with_its_choice():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 5, generator=g, dtype=torch.float64)
    y = (x[:, 0] * x[:, 1]) + 0.05 * torch.randn(400, generator=g, dtype=torch.float64)
    t = make_estimator("tuned-krr-poly", {"space": {"degree": [2, 4], "c": [1.0, 2.0]}}).fit(x, y)
    assert set(t.chosen) == {"degree", "c", "ridge"} and t.info["val_mse"] > 0
    scores = t.info["scores"]
    assert min(s["val_mse"] for s in scores) == t.info["val_mse"]
    # the reference: the same kernel and the chosen ridge, fitted directly
    ref = KRR(Polynomial(t.chosen["degree"], t.chosen["c"]), ridge=t.chosen["ridge"], dtype="float64").fit(x, y)
    xt = torch.randn(100, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(t.predict(xt), ref.predict(xt), rtol=1e-9, atol=1e-9)
    # each point's score is its ridge selection over the whole training set
    one = KRR(Polynomial(2, 1.0), ridge_grid=[10.0 ** e for e in range(-14, 1)], dtype="float64", select_n=400)
    yc = y - y.mean()
    one.select_ridge(x, yc)
    s = next(s for s in scores if s["degree"] == 2 and s["c"] == 1.0)
    assert s["val_mse"] == pytest.approx(min(one.selection_["val_mse"]), rel=1e-12)


def test_tuned_options_are_checked_in_one_line():
    with pytest.raises(ConfigError, match=r"^estimator 'tuned-krr-rbf' option 'space': unknown option 'degree'"):
        make_estimator("tuned-krr-rbf", {"space": {"degree": [2]}})
    with pytest.raises(ConfigError, match=r"^estimator 'tuned-twolayer-relu' option 'space.lr': .*must be > 0"):
        make_estimator("tuned-twolayer-relu", {"space": {"lr": [0.0]}})
