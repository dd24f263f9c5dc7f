"""Nyström KRR by FALKON's preconditioned CG (:mod:`bfclab.baselines.nystrom`, PAPER_NOTES §6)
against the trusted reference, exact KRR: with every training point a centre the two solve the
same system, so their predictions agree to the solver's tolerance; fewer centres approximate it."""

import pytest
import torch

from bfclab.baselines import nystrom
from bfclab.baselines.kernels import RBF, Polynomial, ReluNTK
from bfclab.baselines.krr import KRR
from bfclab.baselines.nystrom import NystromKRR
from bfclab.config import ConfigError

F64 = torch.float64


def task(n: int, seed: int, d: int = 6):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    return x, x[:, 0] * x[:, 1] + torch.sin(x[:, 2]) + 0.1 * torch.randn(n, generator=g, dtype=F64)


@pytest.mark.parametrize("kernel", [RBF(1.0), Polynomial(3, 1.0), ReluNTK(1.0)], ids=lambda k: k.name)
@pytest.mark.parametrize("ridge", [1e-2, 1e-5])
def test_all_points_as_centres_is_exact_krr(kernel, ridge):
    x, y = task(600, 0)
    xt, _ = task(200, 1)
    exact = KRR(kernel, ridge=ridge, dtype="float64").fit(x, y).predict(xt)
    ny = NystromKRR(kernel, centres=600, ridge=ridge, dtype="float64", iterations=200, tol=1e-13).fit(x, y)
    # the preconditioner is exact when the centres are all the points: CG needs a step or two
    assert ny.cg_["iterations"] <= 5
    torch.testing.assert_close(ny.predict(xt), exact, rtol=0, atol=1e-7 * float(exact.abs().max()))


def test_streamed_and_cached_products_agree():
    x, y = task(700, 2)
    xt, _ = task(100, 3)
    kw = dict(centres=150, ridge=1e-3, dtype="float64", iterations=30, block_size=64)
    a = NystromKRR(RBF(1.0), cache="always", **kw).fit(x, y)
    b = NystromKRR(RBF(1.0), cache="never", **kw).fit(x, y)
    assert a.cached_ and not b.cached_
    torch.testing.assert_close(a.predict(xt), b.predict(xt), rtol=1e-9, atol=1e-9)


def test_fewer_centres_approximate_exact_krr_and_cg_converges():
    x, y = task(2000, 4)
    xt, yt = task(1000, 5)
    exact = KRR(RBF(1.5), ridge=1e-3, dtype="float64").fit(x, y).predict(xt)
    ny = NystromKRR(RBF(1.5), centres=800, ridge=1e-3, dtype="float64", iterations=100, tol=1e-10).fit(x, y)
    assert ny.cg_["relative_residual"] <= 1e-10
    err_exact, err_ny = float((exact - yt).pow(2).mean()), float((ny.predict(xt) - yt).pow(2).mean())
    assert err_ny <= 1.05 * err_exact


def test_ridge_selection_on_a_split_flags_an_edge_choice():
    x, y = task(800, 6)
    ny = NystromKRR(RBF(1.0), centres=200, ridge_grid=[1e-4, 1e-3, 1e-2, 1e-1, 1.0], dtype="float64",
                    extend=0).fit(x, y)
    sel = ny.selection_
    assert sel["grid"] == [1e-4, 1e-3, 1e-2, 1e-1, 1.0] and len(sel["val_mse"]) == 5
    assert sel["chosen"] == sel["grid"][sel["val_mse"].index(min(sel["val_mse"]))] == ny.ridge_
    assert sel["n_fit"] + sel["n_val"] == 800
    assert sel["at_edge"] == (ny.ridge_ in (1e-4, 1.0))
    edge = NystromKRR(RBF(1.0), centres=200, ridge_grid=[10.0, 100.0], dtype="float64", extend=0).fit(x, y)
    assert edge.ridge_ == 10.0 and edge.selection_["at_edge"]  # the grid does not bracket the optimum
    grown = NystromKRR(RBF(1.0), centres=200, ridge_grid=[10.0, 100.0], dtype="float64", extend=6).fit(x, y)
    assert grown.selection_["extended"] >= 1 and min(grown.selection_["grid"]) < 10.0
    wide = NystromKRR(RBF(1.0), centres=200, ridge_grid=[10.0**e for e in range(-9, 3)], dtype="float64",
                      extend=0).fit(x, y)
    assert not wide.selection_["at_edge"]
    if not grown.selection_["at_edge"]:  # extended until the optimum is inside: the wide grid's choice
        assert grown.ridge_ == pytest.approx(wide.ridge_, rel=1e-9)


def test_seeded_and_json_info():
    x, y = task(500, 7)
    a = NystromKRR(RBF(1.0), centres=100, ridge=1e-3, seed=3).fit(x, y)
    b = NystromKRR(RBF(1.0), centres=100, ridge=1e-3, seed=3).fit(x, y)
    c = NystromKRR(RBF(1.0), centres=100, ridge=1e-3, seed=4).fit(x, y)
    assert torch.equal(a.centres_, b.centres_) and not torch.equal(a.centres_, c.centres_)
    import json

    json.dumps(a.info)


def test_memory_check_is_one_line_before_allocating(monkeypatch):
    monkeypatch.setattr(nystrom, "available_memory", lambda device: 400 * 2**20)
    x, y = task(100, 8)
    with pytest.raises(ConfigError) as info:
        NystromKRR(RBF(1.0), centres=8000).plan_memory(10**7, 32)
    msg = str(info.value)
    assert "\n" not in msg and "largest n that fits" in msg and "centres" in msg
    with pytest.raises(ConfigError, match="option 'cache': 'always'"):
        NystromKRR(RBF(1.0), centres=1000, cache="always").plan_memory(10**5, 32)
    assert NystromKRR(RBF(1.0), centres=50).plan_memory(100, 6) is True  # K_nm cached when it fits
