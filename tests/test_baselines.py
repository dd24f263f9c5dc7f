"""Non-hierarchical baselines (PAPER_NOTES §6): the exact KRR solver, ridge selection, the memory
check, the primal/dual equivalence, the registry, and every estimator on an easy target."""

import dataclasses
import json
import math
import re
import typing

import pytest
import torch

from bfclab.baselines import ESTIMATORS, Estimator, default_options, make_estimator
from bfclab.baselines import krr as krr_mod
from bfclab.baselines.kernels import RBF, Polynomial, ReluNTK
from bfclab.baselines.krr import KRR, fit_bytes, largest_n
from bfclab.baselines.ridge import FeatureRidge, cholesky_solve_, spd_solve, split
from bfclab.baselines.sequential import SequentialKernel, quadratic_features, quadratic_form
from bfclab.baselines.tiled import TiledSymmetric
from bfclab.config import ConfigError, DataConfig, TargetConfig
from bfclab.target import Target
from bfclab.training import make_data
from conftest import assert_within, cholesky_residual_bound, matmul_bound

F64 = torch.float64


def quad_task(n: int, seed: int, d: int = 8):
    """An easy target: a quadratic plus a linear term (every baseline can learn it)."""
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=F64)
    return x, x[:, 0] * x[:, 1] + 0.5 * (x[:, 2] ** 2 - 1) + 0.3 * x[:, 3]


def nmse(pred, y):
    return float((pred - y).pow(2).mean() / y.var(unbiased=False))


def reference_krr(kernel, x, y, lam):
    """float64 torch.linalg.solve of (K + n lam kbar I) alpha = y - ybar."""
    K = kernel(x.double(), x.double())
    n = x.shape[0]
    shift = n * lam * float(K.diagonal().mean())
    return torch.linalg.solve(K + shift * torch.eye(n, dtype=F64), y.double() - y.double().mean())


# ---- the exact solver ----------------------------------------------------------------------------


@pytest.mark.parametrize("kernel", [Polynomial(3), RBF(1.0), ReluNTK(1.0)], ids=lambda k: k.name)
def test_krr_float64_matches_linalg_solve(kernel):
    x, y = quad_task(300, 0, d=5)
    xt, _ = quad_task(50, 1, d=5)
    est = KRR(kernel, ridge=1e-4, dtype="float64", block_size=64).fit(x, y)
    ref = reference_krr(kernel, x, y, 1e-4)
    assert torch.allclose(est.alpha_, ref, rtol=1e-7, atol=1e-9 * float(ref.abs().max()))
    pred_ref = kernel(xt, x) @ ref + y.mean()
    assert torch.allclose(est.predict(xt), pred_ref, rtol=1e-8, atol=1e-8)
    assert est.ridge_ == pytest.approx(1e-4)


def test_krr_float32_matches_float64_reference():
    x, y = quad_task(400, 2, d=6)
    xt, _ = quad_task(100, 3, d=6)
    kernel = Polynomial(4)
    est = KRR(kernel, ridge=1e-3, dtype="float32", block_size=128).fit(x, y)
    assert est.alpha_.dtype == torch.float32
    pred_ref = kernel(xt, x) @ reference_krr(kernel, x, y, 1e-3) + y.mean()
    pred = est.predict(xt)
    assert pred.dtype == F64 and pred.device.type == "cpu"
    assert float((pred - pred_ref).abs().max() / pred_ref.abs().max()) < 1e-3


def test_in_place_cholesky_reads_only_the_lower_triangle():
    """The upper triangle may hold anything (NaN here); the factor overwrites the matrix."""
    x, y = quad_task(120, 4, d=4)
    K = RBF()(x, x)
    M = K.clone()
    iu = torch.triu_indices(120, 120, offset=1)
    M[iu[0], iu[1]] = float("nan")
    ptr = M.data_ptr()
    sol = cholesky_solve_(M, y, 0.1)
    assert M.data_ptr() == ptr and not torch.isnan(sol).any()
    assert torch.allclose(sol, torch.linalg.solve(K + 0.1 * torch.eye(120, dtype=F64), y), rtol=1e-8)


def _cholesky_forward_bound(A: torch.Tensor, residual_bounds: list[torch.Tensor], scale: float) -> float:
    """Normwise bound on the distance between the exact answer and each computed one, summed over
    them: a computed result that is exact for A + dA, |dA| <= E (entrywise), lies within
    c kappa eta / (1 - kappa eta) * scale of the exact one, eta = ||E||_F / ||A||_2, kappa = kappa_2(A)
    (Cholesky factor: c = 2^-1/2, scale = ||L||_2, Higham Thm 10.8; solve: c = 1, scale = ||x||_2,
    Thm 7.2)."""
    ev = torch.linalg.eigvalsh(A)
    kappa, norm = float(ev[-1] / ev[0]), float(ev[-1])
    total = 0.0
    for E in residual_bounds:
        eta = float(E.norm()) / norm
        assert kappa * eta < 0.5
        total += kappa * eta / (1 - kappa * eta) * scale
    return total


@pytest.mark.parametrize("n,tile", [(37, 8), (16, 16), (5, 64)])
def test_tiled_cholesky_matches_dense(n, tile):
    """Blocked lower storage (ragged last block included): the matrix, its factor, the solve."""
    g = torch.Generator().manual_seed(n)
    B = torch.randn(n, n, generator=g, dtype=F64)
    A = B @ B.T / n + 0.5 * torch.eye(n, dtype=F64)
    # B @ B.T is symmetric only up to round-off (BLAS kernels, AVX-512 ones among them, may sum a_ij
    # and a_ji in different orders).  TiledSymmetric keeps the lower triangle only, so the matrix it
    # stands for is the symmetrised one, which is symmetric bit for bit (fl(a + b) = fl(b + a)).
    A = (A + A.T) / 2
    rhs = torch.randn(n, 3, generator=g, dtype=F64)
    T = TiledSymmetric(n, tile, F64).fill_(lambda r0, r1, c0, c1: A[r0:r1, c0:c1])
    assert T.nbytes == TiledSymmetric.numel(n, tile) * 8 <= (n * n + n * tile) // 2 * 8
    assert torch.equal(T.to_dense(), A)  # fill_ and to_dense only copy entries: exact
    assert T.cholesky_()
    L = T.to_dense()
    assert torch.equal(L, L.tril()) and bool((L.diagonal() > 0).all())
    # backward error of the tiled factor, entrywise (Higham Thm 10.3), plus the round-off of L @ L.T here
    assert_within(L @ L.T, A, cholesky_residual_bound(L) + matmul_bound(L, L.T), "L L^T vs A")
    # forward: LAPACK's factor and the tiled one are each exact for a nearby matrix
    ref = torch.linalg.cholesky(A)
    bound = _cholesky_forward_bound(A, [cholesky_residual_bound(M) for M in (L, ref)],
                                    2**-0.5 * float(torch.linalg.matrix_norm(ref, 2)))
    assert float((L - ref).norm()) <= bound, (float((L - ref).norm()), bound)
    # the solve: backward error |A x - b| <= gamma_{3n+1} |L||L^T| |x| (Thm 10.4) plus A @ x's round-off
    for b in (rhs, rhs[:, 0]):
        x = T.solve(b)
        assert x.shape == b.shape
        xm, bm = x.reshape(n, -1), b.reshape(n, -1)
        assert_within(A @ xm, bm, cholesky_residual_bound(L, 2 * n + 1) @ xm.abs() + matmul_bound(A, xm), "A x vs b")
        ref_x = torch.cholesky_solve(bm, ref)
        for j in range(bm.shape[1]):
            bound = _cholesky_forward_bound(A, [cholesky_residual_bound(M, 2 * n + 1) for M in (L, ref)],
                                            float(ref_x[:, j].norm()))
            assert float((xm[:, j] - ref_x[:, j]).norm()) <= bound
    indefinite = TiledSymmetric(n, tile, F64).fill_(lambda r0, r1, c0, c1: (A - 2 * torch.eye(n, dtype=F64))[r0:r1, c0:c1])
    assert not indefinite.cholesky_()


def test_spd_solve_retries_with_a_larger_ridge():
    """Eigenvalues -1e-3 (48 of them) and two positive ones: the factorisation fails at shift
    2e-4, the matrix is rebuilt and succeeds at 2e-3."""
    v = torch.randn(50, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    rhs = torch.ones(50, dtype=F64)
    builds = []

    def build():
        builds.append(1)
        return (v @ v.T - 1e-3 * torch.eye(50, dtype=F64)).contiguous()

    with pytest.warns(RuntimeWarning, match="not positive definite"):
        sol, shift = spd_solve(lambda sh: cholesky_solve_(build(), rhs, sh), 2e-4, what="test")
    assert shift == pytest.approx(2e-3) and len(builds) == 2
    assert torch.allclose((v @ v.T + 1e-3 * torch.eye(50, dtype=F64)) @ sol, rhs, rtol=1e-8)
    with pytest.raises(RuntimeError, match="not positive definite even at"), pytest.warns(RuntimeWarning):
        spd_solve(lambda sh: cholesky_solve_(build(), rhs, sh), 1e-9, tries=2, what="test")


def test_ridge_selection_equals_brute_force():
    """The eigendecomposition shortcut scores every grid value exactly like separate solves."""
    x, y = quad_task(500, 6, d=5)
    y = y + 0.3 * torch.randn(500, generator=torch.Generator().manual_seed(7), dtype=F64)
    grid = [1e-6, 1e-4, 1e-2, 1.0]
    kernel = ReluNTK(1.0)
    est = KRR(kernel, ridge_grid=grid, select_n=400, val_frac=0.25, dtype="float64", seed=3).fit(x, y)
    sel = est.selection_
    # redo the sub-sample and split exactly as KRR.select_ridge documents it
    sub = torch.randperm(500, generator=torch.Generator().manual_seed(4))[:400]
    fit_i, val_i = split(400, 0.25, 3)
    fit_i, val_i = sub[fit_i], sub[val_i]
    yc = y - y.mean()
    K = kernel(x[fit_i], x[fit_i])
    brute = []
    for lam in grid:
        a = torch.linalg.solve(K + lam * float(K.trace()) * torch.eye(len(fit_i), dtype=F64), yc[fit_i])
        brute.append(float((kernel(x[val_i], x[fit_i]) @ a - yc[val_i]).pow(2).mean()))
    assert sel["val_mse"] == pytest.approx(brute, rel=1e-6)
    assert sel["chosen"] == grid[min(range(len(grid)), key=brute.__getitem__)]
    assert 1e-6 < sel["chosen"] < 1.0  # noisy labels: neither extreme of the grid wins
    assert est.ridge_ == pytest.approx(sel["chosen"])


def test_primal_quadratic_features_equal_dual_polynomial_krr():
    """seqkernel's primal degree-2 solve is exactly KRR with Polynomial(2, c) at the same ridge."""
    x, y = quad_task(300, 8, d=4)
    xt, _ = quad_task(40, 9, d=4)
    c = 0.7
    phi = lambda u: quadratic_features(u, c)  # noqa: E731
    assert torch.allclose(phi(x) @ phi(xt).T, Polynomial(2, c)(x, xt), rtol=1e-12)
    primal = FeatureRidge(phi, ridge=1e-3, solver="primal").fit(x, y)
    dual = KRR(Polynomial(2, c), ridge=1e-3, dtype="float64").fit(x, y)
    assert torch.allclose(primal.predict(xt), dual.predict(xt), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("n", [60, 400])
def test_feature_ridge_primal_and_dual_agree(n):
    """Same validation errors for every grid value and the same predictor, for n < D and n > D."""
    from bfclab.baselines.random_features import RandomFeatureMap

    x, y = quad_task(n, 14, d=5)
    xt, _ = quad_task(30, 15, d=5)
    fmap = RandomFeatureMap(5, 150, "relu", 1.0, seed=0, dtype=F64, device=torch.device("cpu"))
    fits = {s: FeatureRidge(fmap, solver=s, chunk=97).fit(x, y) for s in ("primal", "dual", "auto")}
    p, d = fits["primal"], fits["dual"]
    assert p.selection_["val_mse"] == pytest.approx(d.selection_["val_mse"], rel=1e-6)
    assert p.ridge_ == pytest.approx(d.ridge_, rel=1e-9)
    assert torch.allclose(p.predict(xt), d.predict(xt), rtol=1e-7, atol=1e-7)
    assert fits["auto"].dual_ == (n < 150)


def test_quadratic_form_reads_the_fitted_polynomial():
    p = 4
    w = torch.randn(1 + p + p * (p + 1) // 2, generator=torch.Generator().manual_seed(10), dtype=F64)
    u = torch.randn(30, p, dtype=F64)
    h = quadratic_features(u) @ w
    v = u / math.sqrt(p)
    A = quadratic_form(w, p)
    assert torch.allclose(A, A.T)
    assert torch.allclose(h, w[0] + math.sqrt(2) * v @ w[1:1 + p] + ((v @ A) * v).sum(1), atol=1e-12)


# ---- memory check --------------------------------------------------------------------------------


class _NoPrepare(Polynomial):
    def prepare(self, x):
        raise AssertionError("the memory check must come before any kernel work")


def test_memory_check_raises_one_line_error_naming_largest_n(monkeypatch):
    monkeypatch.setattr(krr_mod, "available_memory", lambda device: 100 * 2**20)  # 100 MiB free
    x, y = quad_task(5000, 11, d=8)
    with pytest.raises(ConfigError) as info:
        KRR(_NoPrepare(2), ridge=1e-3, block_size=512).fit(x, y)
    msg = str(info.value)
    assert "\n" not in msg and "n=5000" in msg
    nmax = int(re.search(r"largest n that fits is (\d+)", msg).group(1))
    budget = 0.9 * 100 * 2**20
    kern = Polynomial(2)
    assert fit_bytes(nmax, 8, kern, 4, 512, None) <= budget < fit_bytes(nmax + 1, 8, kern, 4, 512, None)
    assert 1000 < nmax < 5000
    # ... and n = nmax does fit
    KRR(kern, ridge=1e-3, block_size=512).fit(x[:nmax], y[:nmax])


def test_memory_check_counts_the_ridge_selection(monkeypatch):
    monkeypatch.setattr(krr_mod, "available_memory", lambda device: 100 * 2**20)
    x, y = quad_task(3000, 12, d=8)
    with pytest.raises(ConfigError, match="largest n that fits"):
        KRR(_NoPrepare(2), select_n=3000).fit(x, y)  # a 3000 x 3000 float64 eigendecomposition


def test_forty_thousand_points_in_float32_fit_in_24_gb():
    kern = Polynomial(8)
    need = fit_bytes(40_000, 32, kern, 4, 2048, 4000)
    assert need < 0.9 * 24e9 * 0.5  # under half of a 24 GB machine
    assert largest_n(0.9 * 24e9, 32, kern, 4, 2048, 4000) > 40_000


def test_available_memory_reads_meminfo(monkeypatch):
    """MemAvailable (kB) of /proc/meminfo in bytes; sysconf without the file; None where nothing tells."""
    import io

    meminfo = "MemTotal:       16318412 kB\nMemFree:          871236 kB\nMemAvailable:    9876543 kB\n"
    monkeypatch.setattr(krr_mod, "open", lambda *a, **k: io.StringIO(meminfo), raising=False)
    assert krr_mod.available_memory("cpu") == 9876543 * 1024

    def no_proc(*a, **k):
        raise OSError("no /proc")

    monkeypatch.setattr(krr_mod, "open", no_proc, raising=False)
    monkeypatch.setattr(krr_mod.os, "sysconf", {"SC_AVPHYS_PAGES": 1000, "SC_PAGE_SIZE": 4096}.__getitem__)
    assert krr_mod.available_memory("cpu") == 1000 * 4096
    monkeypatch.setattr(krr_mod.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert krr_mod.available_memory("cpu") is None
    assert krr_mod.available_memory("meta") is None
    monkeypatch.undo()
    # this machine: a positive number of bytes, no more than the memory it has
    try:
        total = next(int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal:"))
    except OSError:
        pytest.skip("no /proc/meminfo on this machine")
    avail = krr_mod.available_memory("cpu")
    assert isinstance(avail, int) and 0 < avail <= total


# ---- registry ------------------------------------------------------------------------------------


def test_registry_errors_name_the_field():
    with pytest.raises(ConfigError, match="unknown estimator 'svm'; accepted: krr-poly"):
        make_estimator("svm", {})
    with pytest.raises(ConfigError, match="estimator 'krr-rbf': unknown option 'degree'; accepted: lengthscale"):
        make_estimator("krr-rbf", {"degree": 3})
    with pytest.raises(ConfigError, match="estimator 'twolayer-relu' option 'width': must be > 0, got 0"):
        make_estimator("twolayer-relu", {"width": 0})
    with pytest.raises(ConfigError, match="estimator 'twolayer-relu' option 'width': expected an integer, got 'x'"):
        make_estimator("twolayer-relu", {"width": "x"})
    with pytest.raises(ConfigError, match="option 'pass_up': unknown 'all'; accepted: eig, output"):
        make_estimator("seqkernel", {"pass_up": "all"})
    with pytest.raises(ConfigError, match="'krr-entk': needs the target"):
        make_estimator("krr-entk", {})


def test_registry_defaults_follow_the_target():
    assert default_options("krr-poly")["degree"] == 8  # default target: L = 4, degree 2^(L-1)
    tgt = Target.from_config(TargetConfig(d=6, L=3, widths=[3], mc_samples=1000, var_samples=20000))
    assert make_estimator("krr-poly", {}, target=tgt).kernel.degree == 4
    seq = make_estimator("seqkernel", {}, target=tgt)
    assert (seq.L, seq.k) == (3, 3)
    est = make_estimator("krr-poly", {"ridge": "1e-3", "ridge_grid": "[0.1, 1]", "dtype": "float64"})
    assert est.ridge == 1e-3 and est.ridge_grid == [0.1, 1.0] and est.dtype == F64
    est = make_estimator("krr-poly", {"ridge": "null", "degree": "3", "c": "0"})
    assert est.ridge is None and est.kernel.degree == 3 and est.kernel.c == 0.0
    assert make_estimator("twolayer-relu", {"progress": "null"}).progress is None
    assert make_estimator("twolayer-relu", {"progress": "true"}).progress is True


# ---- one option system: the registry's options are checked by bfclab.config ------------------------


def _limits(name: str) -> dict[str, tuple[dict, bool, bool]]:
    """option -> (its metadata, integer?, a list?) for every option of ``name`` that has a limit."""
    cls = ESTIMATORS[name].options
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        md = dict(f.metadata)
        if set(md) & {"gt", "ge", "lt", "le", "choices", "nonempty"}:
            typ = hints[f.name]
            args = typing.get_args(typ)
            out[f.name] = (md, typ is int or int in args, typing.get_origin(typ) is list)
    return out


def _outside_inside(md: dict, integer: bool) -> list[tuple]:
    """(a value just outside, one just inside) for each bound; a wrong and a right choice."""
    def step(v, d):
        return v + d if integer else math.nextafter(v, d * math.inf)

    pairs = []
    if "choices" in md:
        pairs.append(("not-a-choice", md["choices"][-1]))
    if "gt" in md:
        pairs.append((md["gt"], step(md["gt"], 1)))
    if "ge" in md:
        pairs.append((step(md["ge"], -1), md["ge"]))
    if "lt" in md:
        pairs.append((md["lt"], step(md["lt"], -1)))
    if "le" in md:
        pairs.append((step(md["le"], 1), md["le"]))
    return pairs


OPTION_CASES = [(name, key, bad, good, is_list) for name in ESTIMATORS
                for key, (md, integer, is_list) in _limits(name).items()
                for bad, good in _outside_inside(md, integer)]
TGT_SMALL = dict(d=6, L=3, widths=[2], mc_samples=1000, var_samples=20000)


def test_every_estimator_option_has_a_limit():
    """Every option but ``progress`` (true, false or null: nothing to bound) declares what it accepts;
    a tuned baseline's mappings ``space``, ``options`` and ``caps`` are checked against its inner
    estimator's limits and its space (``Spec.check``, tests/test_tuning.py)."""
    for name, spec in ESTIMATORS.items():
        names = {f.name for f in dataclasses.fields(spec.options)}
        unbounded = {"progress"} | ({"space", "options", "caps"} if name.startswith("tuned-") else set())
        assert set(_limits(name)) == names - unbounded, name
        assert list(default_options(name)) == [f.name for f in dataclasses.fields(spec.options)]


@pytest.mark.parametrize("name, key, bad, good, is_list", OPTION_CASES, ids=lambda v: str(v))
def test_option_just_outside_its_limit_is_refused(name, key, bad, good, is_list):
    from bfclab.baselines.registry import resolve_options

    tgt = Target.from_config(TargetConfig(**TGT_SMALL))
    wrap = (lambda v: [v]) if is_list else (lambda v: v)
    with pytest.raises(ConfigError) as info:
        make_estimator(name, {key: wrap(bad)}, target=tgt)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"estimator '{name}' option '{key}': "), msg
    shown = float(bad) if isinstance(bad, int) and isinstance(good, float) else bad  # a float option shows 0 as 0.0
    assert (f"unknown {bad!r}; accepted: " in msg) if bad == "not-a-choice" else msg.endswith(f"got {wrap(shown)!r}"), msg
    assert resolve_options(name, {key: wrap(good)}, tgt)[key] == wrap(good)  # the bound itself, or one step in


@pytest.mark.parametrize("name, key, bad, message", [
    ("krr-poly", "degree", 0, "must be > 0, got 0"),
    ("krr-poly", "c", -0.5, "must be >= 0, got -0.5"),
    ("krr-rbf", "mem_fraction", "inf", "must be a finite number, got inf"),
    ("krr-rbf", "mem_fraction", 1.5, "must be in (0, 1], got 1.5"),
    ("krr-ntk-relu", "select_n", 3, "must be >= 4, got 3"),
    ("krr-entk", "learner_kind", "deep", "unknown 'deep'; accepted: simple, paper"),
    ("rf-relu", "val_frac", 1, "must be in (0, 1), got 1.0"),
    ("rf-quad", "ridge_grid", "[1e-3, 0]", "entries must be > 0, got [0.001, 0.0]"),
    ("rf-quad", "ridge_grid", [], "must be a non-empty list, got []"),
    ("rf-quad", "solver", "qr", "unknown 'qr'; accepted: auto, primal, dual"),
    ("twolayer-quad", "lr", "nan", "must be a finite number, got nan"),
    ("twolayer-quad", "steps", 2.5, "expected an integer, got 2.5"),
    ("twolayer-relu", "ridge", 1, None),  # not an option of a network
    ("seqkernel", "L", 1, "must be >= 2, got 1"),
    ("seqkernel", "ridge", "0", "must be > 0, got 0.0"),
    ("seqkernel", "ridge", "x", "expected a number or null, got 'x'"),
])
def test_option_messages(name, key, bad, message):
    """One line in the run config's words, after ``estimator 'NAME' option 'KEY':``; the sweep's
    ``baseline:`` section gives the same (bfclab.sweep calls resolve_options)."""
    from bfclab.baselines.registry import resolve_options

    with pytest.raises(ConfigError) as info:
        resolve_options(name, {key: bad})
    if message is None:
        assert str(info.value).startswith(f"estimator '{name}': unknown option '{key}'; accepted: ")
    else:
        assert str(info.value) == f"estimator '{name}' option '{key}': {message}"


def test_constructors_do_not_check_the_options_again():
    """The limits live in the option dataclasses only: every builder takes values outside them
    without raising (a constructor that re-checked one would raise here).  krr-entk's ``m`` and
    ``learner_kind`` go into a LearnerConfig, which the learner checks as a run config."""
    tgt = Target.from_config(TargetConfig(**TGT_SMALL))
    tried = 0
    for name, key, bad, good, is_list in OPTION_CASES:
        if bad == "not-a-choice" or (name, key) in {("krr-entk", "m"), ("krr-entk", "learner_kind")}:
            continue
        opts = {**default_options(name, tgt), key: [bad] if is_list else bad}
        ESTIMATORS[name].build(name, opts, "cpu", 0, tgt)
        tried += 1
    assert tried > 40


SMALL = {
    "krr-poly": {"degree": 2, "select_n": 1000},
    "krr-rbf": {"select_n": 1000},
    "krr-ntk-relu": {"select_n": 1000},
    "krr-entk": {"select_n": 1000, "learner_kind": "paper", "m": 32},
    "rf-quad": {"n_features": 1024},
    "rf-relu": {"n_features": 1024},
    "twolayer-quad": {"width": 256, "steps": 600},
    "twolayer-relu": {"width": 256, "steps": 600},
    "mlp-relu": {"width": 128, "steps": 600, "lr": 3e-3},
    "seqkernel": {"L": 3},
    "krr-oracle": {"select_n": 1000},
    "nystrom-poly": {"degree": 2, "centres": 512},
    "nystrom-rbf": {"centres": 512},
    "nystrom-ntk-relu": {"centres": 512},
    "tuned-krr-poly": {"space": {"degree": [2], "c": [1.0, 2.0]}},
    "tuned-krr-rbf": {"space": {"lengthscale": [1.0, 2.0]}},
    "tuned-krr-ntk-relu": {"space": {"bias": [0.5, 1.0]}},
    "tuned-twolayer-relu": {"space": {"lr": [3e-3, 1e-2]}, "options": {"width": 256, "steps": 600}},
    "tuned-mlp-relu": {"space": {"lr": [1e-3, 3e-3]}, "options": {"width": 128, "steps": 600}},
}


def test_every_registered_estimator_has_a_small_config():
    assert set(SMALL) == set(ESTIMATORS)


@pytest.mark.parametrize("name", list(SMALL))
def test_estimator_learns_an_easy_quadratic(name):
    """Each baseline beats the mean predictor (nmse 1) by a wide margin on a quadratic target."""
    x, y = quad_task(1500, 0)
    xt, yt = quad_task(500, 1)
    tgt = Target.from_config(TargetConfig(d=8, L=3, widths=[2], mc_samples=2000, var_samples=20000))  # for krr-entk's learner
    est = make_estimator(name, SMALL[name], seed=1, target=tgt)
    assert isinstance(est, Estimator) and est.name == name
    assert est.fit(x, y) is est
    pred = est.predict(xt)
    assert pred.shape == (500,) and pred.dtype == F64
    assert nmse(pred, yt) < 0.3, f"{name}: test nmse {nmse(pred, yt):.3f}"


def test_sequential_levels_add_degree_on_a_two_level_target():
    """On a depth-3 target (degree 4) the second level of seqkernel explains what a single
    degree-2 kernel regression cannot (test error drops by more than 2x)."""
    tgt = Target.from_config(TargetConfig(d=6, L=3, widths=[2], rho=0.5, mc_samples=4000, var_samples=20000))
    x, y, xt, yt = make_data(tgt, DataConfig(n_train=3000, n_test=1000), 0)
    one = SequentialKernel(L=2, k=2).fit(x, y)
    two = SequentialKernel(L=3, k=2).fit(x, y)
    assert nmse(two.predict(xt), yt) < 0.5 * nmse(one.predict(xt), yt)
    assert two.train_nmse_[1] < two.train_nmse_[0]


_PEAK_SCRIPT = """
import sys, torch
from bfclab.baselines.kernels import Polynomial
from bfclab.baselines.krr import KRR, fit_bytes
def hwm():
    return next(int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmHWM'))
n = int(sys.argv[1])
x = torch.randn(n, 32); y = x[:, 0] * x[:, 1]
KRR(Polynomial(4), ridge=1e-4).fit(x[:64], y[:64])  # warm up the libraries
base = hwm()
KRR(Polynomial(4), ridge=1e-4).fit(x, y)
print(hwm() - base, fit_bytes(n, 32, Polynomial(4), 4, 2048, None))
"""


@pytest.mark.slow
def test_memory_estimate_bounds_the_measured_peak():
    """The estimate used by the memory check covers the measured peak growth of a fit at n = 12000
    (float32), and is not vacuous (the Gram half alone is more than half of it)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, "12000"], capture_output=True, text=True,
                         check=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})
    grew, estimate = (int(v) for v in out.stdout.split())
    assert grew <= estimate
    assert TiledSymmetric.numel(12000, 2048) * 4 > 0.5 * estimate


def test_fitted_estimators_report_json_able_info(tmp_path):
    from bfclab.results import read_json, write_json

    x, y = quad_task(400, 13, d=4)
    for name in ("krr-rbf", "rf-relu", "twolayer-quad", "seqkernel"):
        est = make_estimator(name, {**SMALL[name], **({"select_n": 300} if name.startswith("krr") else {}),
                                    **({"steps": 20} if name.startswith("two") else {})}).fit(x, y)
        write_json(tmp_path / f"{name}.json", est.info)
        assert read_json(tmp_path / f"{name}.json") == json.loads(json.dumps(est.info))


def test_deep_modes_share_the_interface():
    """The deep modes behind fit/predict, on a tiny target: bfc beats layerwise on held-out data."""
    from bfclab import metrics as M
    from bfclab.baselines import make_estimator
    from bfclab.config import TargetConfig
    from bfclab.target import Target

    t = Target.from_config(TargetConfig(d=8, widths=[2], mc_samples=4000, var_samples=20000))
    x, y, _ = t.sample(3000, seed=1)
    xt, yt, _ = t.sample(2000, seed=2)
    opts = {"train": {"steps_per_stage": 500, "batch_size": 256, "log_every": 500}, "data": {"n_test": 500}}
    err = {}
    for m in ("bfc", "layerwise"):
        est = make_estimator(m, opts, target=t, seed=0)
        err[m] = M.nmse(est.fit(x, y).predict(xt), yt)
        assert est.name == m and "feature_error" in est.info
    assert err["bfc"] < 0.5 * err["layerwise"]
