"""Multi-output targets (a C-class label fitted as C one-hot columns): every estimator takes y of
shape (n,) or (n, C).  A ridge fit of C columns is C right-hand sides of one system, so with a
fixed ridge its column j equals the fit of column j alone up to round-off; a chosen ridge is the
one grid value shared by all columns that minimises the validation MSE averaged over them; the
two-layer net gets C outputs.  (n,) stays (n,)."""

import math

import pytest
import torch

from bfclab.baselines import krr as krr_mod
from bfclab.baselines import make_estimator
from bfclab.baselines import nystrom as nystrom_mod
from bfclab.baselines.kernels import RBF, Polynomial
from bfclab.baselines.krr import KRR, check_memory, fit_bytes
from bfclab.baselines.nystrom import NystromKRR, nystrom_bytes
from bfclab.baselines.random_features import RandomFeatures
from bfclab.baselines.ridge import choose, holdout_errors
from bfclab.baselines.two_layer import TwoLayer, TwoLayerNet
from bfclab.config import ConfigError

F64 = torch.float64
C = 3


def task(n: int, seed: int, d: int = 6):
    """x and three label columns that want different ridges: a noiseless smooth function, the same
    under heavy noise, and an offset quadratic with a little noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=F64)
    f = x[:, 0] * x[:, 1] + torch.sin(x[:, 2])
    Y = torch.stack([f, f + 2.0 * torch.randn(n, generator=g, dtype=F64),
                     3 + x[:, 3] ** 2 - 0.5 * x[:, 4] + 0.1 * torch.randn(n, generator=g, dtype=F64)], 1)
    return x, Y


X, Y = task(300, 0)
XT, _ = task(80, 1)


def unit_roundoff(dtype: str) -> float:
    return torch.finfo(getattr(torch, dtype)).eps / 2


def ridge_rtol(dtype: str, lam: float) -> float:
    """Round-off bound, relative to a column's prediction scale, between two backward-stable solves
    of the same ridge system: with kbar-normalised ridge lam the shifted system's condition number
    is at most (1 + lam)/lam (its largest eigenvalue is at most the trace n kbar), times a few unit
    round-offs.  A wrong column, a missing centring or a shared mean is off by O(1)."""
    return 4 * unit_roundoff(dtype) * (1 + lam) / lam


def per_column(make, x=X, Y=Y, xt=XT):
    """(the multi-output fit and its predictions, the C single-column fits and their predictions)."""
    multi = make().fit(x, Y)
    singles = [make().fit(x, Y[:, j]) for j in range(Y.shape[1])]
    return multi, multi.predict(xt), singles, torch.stack([s.predict(xt) for s in singles], 1)


def assert_columns_close(P, S, rtol, what):
    assert P.shape == S.shape and P.dtype == F64
    scale = P.abs().amax(0)
    err = ((P - S).abs() / scale).amax(0)
    assert bool((err <= rtol).all()), f"{what}: per-column relative differences {err.tolist()} > {rtol:.2e}"


# ---- fixed ridge: one solve with C right-hand sides = C solves -------------------------------------

KERNELS = [Polynomial(3), RBF(1.0)]


@pytest.mark.parametrize("dtype,lam", [("float64", 1e-4), ("float32", 1e-2)])
@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_krr_columns_equal_single_fits(kernel, dtype, lam):
    multi, P, singles, S = per_column(lambda: KRR(kernel, ridge=lam, dtype=dtype, block_size=96))
    assert multi.alpha_.shape == (300, C) and multi.y_mean_.shape == (C,)
    assert_columns_close(P, S, ridge_rtol(dtype, lam), f"krr-{kernel.name} {dtype}")
    assert multi.ridge_ == pytest.approx(singles[0].ridge_)


@pytest.mark.parametrize("features", ["relu", "quad"])
@pytest.mark.parametrize("solver", ["primal", "dual"])
@pytest.mark.parametrize("dtype,lam", [("float64", 1e-4), ("float32", 1e-2)])
def test_random_features_columns_equal_single_fits(features, solver, dtype, lam):
    multi, P, _, S = per_column(lambda: RandomFeatures(features, n_features=400, ridge=lam, dtype=dtype,
                                                       solver=solver, chunk=128, seed=2))
    assert multi.solver_.dual_ == (solver == "dual") and multi.solver_.weights_.shape == (400, C)
    assert_columns_close(P, S, ridge_rtol(dtype, lam), f"rf-{features} {solver} {dtype}")


@pytest.mark.parametrize("cache", ["always", "never"])
def test_nystrom_block_cg_columns_equal_single_fits(cache):
    """float64, CG run to a relative residual of 1e-12: the frozen-column block CG follows each
    column's own recurrence, so the columns agree with single fits to ~1e-12 of their scale."""
    kw = dict(centres=120, ridge=1e-4, dtype="float64", iterations=200, tol=1e-12, block_size=128, cache=cache, seed=1)
    multi, P, singles, S = per_column(lambda: NystromKRR(RBF(1.0), **kw))
    assert multi.alpha_.shape == (120, C) and multi.cached_ == (cache == "always")
    assert_columns_close(P, S, 1e-10, f"nystrom cache={cache}")
    # every column converged; the block ran as long as the slowest column alone (+-1 for round-off)
    res = multi.cg_["relative_residuals"]
    assert len(res) == C and max(res) <= 1e-12 and multi.cg_["relative_residual"] == max(res)
    assert abs(multi.cg_["iterations"] - max(s.cg_["iterations"] for s in singles)) <= 1


def test_nystrom_float32_columns_as_accurate_as_single_fits():
    """In float32 the K_nm products round differently with C columns than with one, and CG carries
    that along; the multi-output fit is as close to the float64 solution as the single fits are."""
    kw = dict(centres=120, ridge=1e-3, iterations=100, tol=1e-12, block_size=128, seed=1)
    _, P, _, S = per_column(lambda: NystromKRR(RBF(1.0), dtype="float32", **kw))
    R = NystromKRR(RBF(1.0), dtype="float64", **kw).fit(X, Y).predict(XT)
    scale = R.abs().amax(0)
    err_multi, err_single = ((P - R).abs() / scale).amax(0), ((S - R).abs() / scale).amax(0)
    assert bool((err_multi <= 3 * err_single.max() + 64 * unit_roundoff("float32")).all()), (err_multi, err_single)
    assert float(err_multi.max()) < 1e-2


def test_block_cg_freezes_converged_columns():
    """A zero column (a constant label) has converged at the start: it stays zero, its residual is
    0, and it neither stalls nor poisons (0/0) the other columns."""
    Yz = torch.cat([Y[:, :1], torch.full((300, 1), 7.0, dtype=F64), Y[:, 2:]], 1)
    kw = dict(centres=120, ridge=1e-4, dtype="float64", iterations=200, tol=1e-12, block_size=128, seed=1)
    multi = NystromKRR(RBF(1.0), **kw).fit(X, Yz)
    assert torch.isfinite(multi.alpha_).all() and bool((multi.alpha_[:, 1] == 0).all())
    assert multi.cg_["relative_residuals"][1] == 0.0
    torch.testing.assert_close(multi.predict(XT)[:, 1], torch.full((80,), 7.0, dtype=F64), rtol=0, atol=1e-12)
    single = NystromKRR(RBF(1.0), **kw).fit(X, Yz[:, 2])
    assert_columns_close(multi.predict(XT)[:, 2:], single.predict(XT)[:, None], 1e-10, "column after a frozen one")


# ---- ridge selection: one ridge, the mean validation MSE over the columns -------------------------


def check_selection(multi, singles):
    """The multi fit scored every grid value by the mean of the columns' validation MSEs (those of
    the single-column fits on the same split), and chose the grid value that minimises it."""
    sel = multi.selection_
    for s in singles:
        assert s.selection_["grid"] == sel["grid"] and s.selection_["n_val"] == sel["n_val"]
    mean = [sum(vals) / len(vals) for vals in zip(*(s.selection_["val_mse"] for s in singles))]
    torch.testing.assert_close(torch.tensor(sel["val_mse"]), torch.tensor(mean), rtol=1e-9, atol=0)
    best = min(mean)
    assert mean[sel["grid"].index(sel["chosen"])] <= best * (1 + 1e-9)
    assert sel["chosen"] == choose(sel["grid"], mean)
    # non-vacuous: the columns on their own want different ridges
    assert len({s.selection_["chosen"] for s in singles}) > 1, [s.selection_["chosen"] for s in singles]


GRID = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0]


@pytest.mark.parametrize("kernel", KERNELS, ids=lambda k: k.name)
def test_krr_ridge_selection_averages_the_columns(kernel):
    multi, P, singles, _ = per_column(lambda: KRR(kernel, ridge_grid=GRID, select_n=250, dtype="float64", seed=4))
    check_selection(multi, singles)
    assert multi.ridge_ == pytest.approx(multi.selection_["chosen"]) and P.shape == (80, C)


@pytest.mark.parametrize("features,solver", [("relu", "dual"), ("quad", "primal")])
def test_random_features_ridge_selection_averages_the_columns(features, solver):
    multi, _, singles, _ = per_column(lambda: RandomFeatures(features, n_features=400, ridge_grid=GRID, solver=solver,
                                                             seed=2))
    check_selection(multi, singles)


def test_nystrom_ridge_selection_averages_the_columns():
    kw = dict(centres=120, ridge_grid=GRID, dtype="float64", iterations=200, tol=1e-12, block_size=128, extend=0, seed=1)
    multi, _, singles, _ = per_column(lambda: NystromKRR(RBF(1.0), **kw))
    check_selection(multi, singles)


def test_nystrom_grid_extension_with_columns():
    """A mean validation MSE best at the grid's edge extends the grid a decade at a time, as for one
    column (here: heavy noise on every column wants more ridge than the grid offers)."""
    g = torch.Generator().manual_seed(9)
    noisy = Y + 3.0 * torch.randn(Y.shape, generator=g, dtype=F64)
    ny = NystromKRR(RBF(1.0), centres=100, ridge_grid=[1e-6, 1e-5], dtype="float64", iterations=100, extend=2,
                    seed=1).fit(X, noisy)
    sel = ny.selection_
    assert sel["extended"] == 2 and sel["grid"] == pytest.approx([1e-6, 1e-5, 1e-4, 1e-3])
    assert sel["chosen"] == sel["grid"][-1] and sel["at_edge"]


def test_holdout_errors_average_the_columns():
    g = torch.Generator().manual_seed(3)
    A, c, yv = torch.randn(20, 8, generator=g, dtype=F64), torch.randn(8, C, generator=g, dtype=F64), \
        torch.randn(20, C, generator=g, dtype=F64)
    evals = torch.rand(8, generator=g, dtype=F64)
    shifts = [1e-3, 1e-1, 10.0]
    cols = [holdout_errors(A, evals, c[:, j], yv[:, j], shifts) for j in range(C)]
    both = holdout_errors(A, evals, c, yv, shifts)
    assert both == pytest.approx([sum(v) / C for v in zip(*cols)], rel=1e-12)


# ---- shapes: (n,) -> (n,), (n, C) -> (n, C), bad shapes refused ---------------------------------

SMALL = {
    "krr-poly": {"degree": 2, "ridge": 1e-3},
    "krr-rbf": {"select_n": 200},
    "nystrom-rbf": {"centres": 100},
    "rf-relu": {"n_features": 200},
    "rf-quad": {"n_features": 200, "ridge": 1e-3},
    "twolayer-relu": {"width": 32, "steps": 30, "progress": False},
    "mlp-relu": {"width": 32, "steps": 30, "progress": False},
}


@pytest.mark.parametrize("name", list(SMALL))
def test_shapes_through_the_registry(name):
    one = make_estimator(name, SMALL[name], seed=1).fit(X, Y[:, 0]).predict(XT)
    assert one.shape == (80,) and one.dtype == F64
    est = make_estimator(name, SMALL[name], seed=1).fit(X, Y)
    multi = est.predict(XT)
    assert multi.shape == (80, C) and multi.dtype == F64 and torch.isfinite(multi).all()
    assert est.predict(XT[:0]).shape == (0, C)
    col = make_estimator(name, SMALL[name], seed=1).fit(X, Y[:, :1]).predict(XT)  # (n, 1) stays (n, 1)
    assert col.shape == (80, 1)
    if name not in ("twolayer-relu", "mlp-relu"):  # (n, 1) is the (n,) fit
        torch.testing.assert_close(col[:, 0], one, rtol=0, atol=1e-5 * float(one.abs().max()))


def _estimators():
    return [KRR(RBF(1.0), ridge=1e-3), NystromKRR(RBF(1.0), centres=50, ridge=1e-3),
            RandomFeatures("relu", n_features=50, ridge=1e-3), TwoLayer("relu", width=8, steps=2, progress=False)]


@pytest.mark.parametrize("bad", [(300, 0), (301,), (300, 2, 1), (299, 3)])
def test_bad_label_shapes_are_refused(bad):
    for est in _estimators():
        with pytest.raises(ValueError, match=r"must have shape \(300,\) or \(300, C\)"):
            est.fit(X, torch.zeros(bad, dtype=F64))


# ---- the two-layer net with C outputs ------------------------------------------------------------


def test_two_layer_net_with_outputs():
    g = torch.Generator().manual_seed(0)
    net = TwoLayerNet(6, 16, "relu", generator=g, outputs=C)
    assert net.a.shape == (16, C) and net(torch.randn(5, 6)).shape == (5, C)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    scalar, one = TwoLayerNet(6, 16, generator=g1), TwoLayerNet(6, 16, generator=g2, outputs=1)
    x = torch.randn(4, 6)
    assert scalar(x).shape == (4,) and one(x).shape == (4, 1)
    torch.testing.assert_close(one(x)[:, 0], scalar(x))  # the same draws: one output is the scalar net


def test_two_layer_with_columns_trains_and_predicts():
    est = TwoLayer("relu", width=128, steps=300, batch_size=128, lr=1e-2, log_every=50, progress=False, seed=3)
    est.fit(X, Y)
    assert est.net_.a.shape == (128, C) and est.y_mean_.shape == (C,) and est.y_std_.shape == (C,)
    torch.testing.assert_close(est.y_mean_, Y.mean(0))
    torch.testing.assert_close(est.y_std_, Y.std(0))
    losses = [v for _, v in est.history_]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.7 * losses[0], losses
    P = est.predict(XT)
    assert P.shape == (80, C) and P.dtype == F64
    # each column is predicted on its own label scale: the training predictions fit every column
    fit = est.predict(X)
    nmse = ((fit - Y).pow(2).mean(0) / Y.var(0)).tolist()
    assert all(v < 0.9 for v in nmse), nmse
    # a constant column is not divided by a zero std
    Yc = torch.cat([Y[:, :1], torch.full((300, 1), 2.0, dtype=F64)], 1)
    pc = TwoLayer("relu", width=16, steps=20, progress=False).fit(X, Yc).predict(XT)
    assert torch.isfinite(pc).all() and pc.shape == (80, 2)


# ---- memory: the label columns are counted ------------------------------------------------------


def test_memory_estimates_count_the_columns():
    kern = Polynomial(2)
    for sel in (None, 4000):
        assert fit_bytes(5000, 8, kern, 4, 512, sel, 1) == fit_bytes(5000, 8, kern, 4, 512, sel)
        assert fit_bytes(5000, 8, kern, 4, 512, sel, 10) > fit_bytes(5000, 8, kern, 4, 512, sel)
    # per column: y, y - ybar, the solve's work vector, alpha
    assert fit_bytes(5000, 8, kern, 4, 512, None, 11) - fit_bytes(5000, 8, kern, 4, 512, None, 1) == 5000 * 4 * 10 * 4
    for cached in (False, True):
        base = nystrom_bytes(10_000, 8, 500, kern, 4, 1024, cached)
        assert nystrom_bytes(10_000, 8, 500, kern, 4, 1024, cached, 1) == base
        assert nystrom_bytes(10_000, 8, 500, kern, 4, 1024, cached, 10) > base


class _NoPrepare(Polynomial):
    def prepare(self, x):
        raise AssertionError("the memory check must come before any kernel work")


def test_krr_memory_check_counts_the_columns(monkeypatch):
    n, d, cols = 2000, 8, 4000
    kern = Polynomial(2)
    one, many = fit_bytes(n, d, kern, 4, 512, None, 1), fit_bytes(n, d, kern, 4, 512, None, cols)
    avail = (one + many) / 2 / 0.9
    monkeypatch.setattr(krr_mod, "available_memory", lambda device: avail)
    x = torch.randn(n, d, dtype=F64)
    check_memory(n, d, kern, torch.float32, torch.device("cpu"), 512, None, 0.9, 1)
    with pytest.raises(ConfigError) as info:
        KRR(_NoPrepare(2), ridge=1e-3, block_size=512).fit(x, torch.zeros(n, cols, dtype=F64))
    msg = str(info.value)
    assert "\n" not in msg and f"n={n} training points with {cols} label columns" in msg
    assert "largest n that fits is" in msg


def test_nystrom_memory_plan_counts_the_columns(monkeypatch):
    n, d, m, cols = 20_000, 8, 200, 200
    kern = RBF(1.0)
    est = NystromKRR(kern, centres=m, block_size=1024)
    cached_one = nystrom_bytes(n, d, m, kern, 4, 1024, True, 1)
    stream_many = nystrom_bytes(n, d, m, kern, 4, 1024, False, cols)
    assert cached_one < stream_many  # K_nm (n m) fits with one column, not beside 200 columns
    monkeypatch.setattr(nystrom_mod, "available_memory", lambda device: (cached_one + stream_many) / 2 / 0.9)
    assert est.plan_memory(n, d) and est.plan_memory(n, d, 1)
    with pytest.raises(ConfigError, match=f"m={m} centres and {cols} label columns need"):
        est.plan_memory(n, d, cols)
