"""The staircase function (bfclab.targets.staircase) against exact enumeration of the hypercube:
at small d every Fourier-Walsh coefficient f_hat(S) = 2^-d sum_x f(x) chi_S(x), the variance
and the least-squares error of the best degree-<=p polynomial are computed from all 2^d points
and a pure-Python evaluation of f (Abbe et al. 2021, 2022: f = sum_l c_l x_{i_1} ... x_{i_l})."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from bfclab.config import ConfigError
from bfclab.targets import load_target, parse_options, protocol, save_target
from bfclab.targets.staircase import Staircase, StaircaseOptions, validate_options

CASES = [
    (dict(d=6, k=4), 0),
    (dict(d=6, k=4, coefficients=[0.5, -2.0, 3.0, 1.5]), 0),
    (dict(d=6, k=3, shuffle=True), 1),
    (dict(d=7, k=5, shuffle=True, coefficients=[1.0, 0.0, -0.25, 2.0, 0.75]), 4),
    (dict(d=5, k=5), 0),
    (dict(d=6, k=1, coefficients=[3.0]), 0),
]


def hypercube(d: int) -> torch.Tensor:
    """All 2^d points of {-1, +1}^d, float64 (2^d, d)."""
    return torch.tensor(list(itertools.product([-1.0, 1.0], repeat=d)), dtype=torch.float64)


def reference_f(t: Staircase, x: torch.Tensor) -> torch.Tensor:
    """f(x) = sum_l c_l prod_{j <= l} x_{i_j}, one point and one term at a time."""
    out = []
    for row in x.tolist():
        total, mono = 0.0, 1.0
        for c, i in zip(t.coefficients, t.support):
            mono *= row[i]
            total += c * mono
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


def subsets(d: int, max_size: int | None = None):
    top = d if max_size is None else max_size
    return [S for r in range(top + 1) for S in itertools.combinations(range(d), r)]


def chi(x: torch.Tensor, S: tuple) -> torch.Tensor:
    return x[:, list(S)].prod(dim=1) if S else torch.ones(x.shape[0], dtype=torch.float64)


@pytest.mark.parametrize("o,seed", CASES)
def test_fourier_coefficients_by_enumeration(o, seed):
    t = Staircase(StaircaseOptions(**o), seed=seed)
    x = hypercube(o["d"])
    f = reference_f(t, x)
    assert torch.allclose(t.value(x), f, rtol=0, atol=1e-12)
    coef = t.fourier()
    for S in subsets(o["d"]):
        exact = float((f * chi(x, S)).mean())  # 2^-d sum_x f(x) chi_S(x)
        assert abs(exact - coef.get(S, 0.0)) <= 1e-12, S
    c = o.get("coefficients") or [1.0] * o["k"]
    expect = {tuple(sorted(t.support[:l])): c[l - 1] for l in range(1, o["k"] + 1) if c[l - 1] != 0}
    assert coef == expect


@pytest.mark.parametrize("o,seed", CASES)
def test_variance_and_floors_by_enumeration(o, seed):
    t = Staircase(StaircaseOptions(**o), seed=seed)
    x = hypercube(o["d"])
    f = reference_f(t, x)
    var = float(((f - f.mean()) ** 2).mean())
    assert abs(float(f.mean())) <= 1e-12
    assert abs(t.variance - var) <= 1e-12 * max(1.0, var)
    assert t.variance == sum(a * a for a in (o.get("coefficients") or [1.0] * o["k"]))
    floors = t.floors()
    assert sorted(floors) == sorted([f"degree<={p}" for p in range(o["k"])] + ["bayes"])
    assert floors["bayes"] == 0.0
    for p in range(o["k"]):
        design = torch.stack([chi(x, S) for S in subsets(o["d"], p)], dim=1)
        sol = torch.linalg.lstsq(design, f[:, None]).solution
        err = float(((design @ sol)[:, 0] - f).pow(2).mean()) / var
        assert abs(floors[f"degree<={p}"] - err) <= 1e-10, p


def test_floors_of_the_default_staircase():
    t = Staircase(StaircaseOptions(), seed=0)
    assert t.floors() == {"degree<=0": 1.0, "degree<=1": 0.75, "degree<=2": 0.5, "degree<=3": 0.25, "bayes": 0.0}
    assert t.variance == 4.0 and t.support == [0, 1, 2, 3]
    noisy = Staircase(StaircaseOptions(noise=0.5), seed=0)
    assert noisy.floors()["bayes"] == 0.25 / 4 and noisy.variance == 4.0


# ---- sampling -------------------------------------------------------------------------------------


def test_inputs_are_uniform_signs():
    t = Staircase(StaircaseOptions(), seed=0)
    n = 40_000
    x, y = t.sample(n, seed=3)
    assert x.dtype == torch.float64 and x.shape == (n, 30) and y.dtype == torch.float64 and y.shape == (n,)
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert x.mean(dim=0).abs().max() <= 5 / math.sqrt(n)  # each coordinate: mean 0, variance 1
    assert torch.equal(y, t.value(x))  # no noise: y = f(x)
    assert torch.allclose(y[:2000], reference_f(t, x[:2000]), rtol=0, atol=1e-12)
    assert abs(float(y.mean())) <= 5 * math.sqrt(t.variance / n)
    assert abs(float(y.var()) - t.variance) <= 0.05 * t.variance


def test_label_noise_is_gaussian_with_the_given_std():
    t = Staircase(StaircaseOptions(d=10, k=3, noise=0.5), seed=0)
    n = 40_000
    x, y = t.sample(n, seed=1)
    r = y - t.value(x)
    assert abs(float(r.mean())) <= 5 * 0.5 / math.sqrt(n)
    # the sample variance of n Gaussians has relative sd sqrt(2/n)
    assert abs(float(r.var()) / 0.25 - 1) <= 5 * math.sqrt(2 / n)
    assert torch.equal(Staircase(StaircaseOptions(d=10, k=3), seed=0).sample(100, seed=1)[0], x[:100])


def test_features_have_the_product_structure():
    t = Staircase(StaircaseOptions(d=12, k=5, shuffle=True, coefficients=[1, 2, 3, 4, 5]), seed=2)
    x, y = t.sample(3000, seed=0)
    f = t.features(x)
    assert sorted(f) == t.levels == [1, 2, 3, 4, 5]
    assert all(f[lv].dtype == torch.float64 and f[lv].shape == (3000, 1) for lv in t.levels)
    assert torch.equal(f[1][:, 0], x[:, t.support[0]])
    for lv in t.levels[1:]:
        assert torch.equal(f[lv][:, 0], f[lv - 1][:, 0] * x[:, t.support[lv - 1]])
    assert torch.allclose(sum(c * f[lv][:, 0] for c, lv in zip(t.coefficients, t.levels)), y, rtol=0, atol=1e-12)
    with pytest.raises(ValueError):
        t.features(torch.ones(3, 11))


def test_support():
    plain = Staircase(StaircaseOptions(d=30, k=4), seed=9)
    assert plain.support == [0, 1, 2, 3]
    supports = [Staircase(StaircaseOptions(d=30, k=6, shuffle=True), seed=s).support for s in range(5)]
    for sup in supports:
        assert len(set(sup)) == 6 and all(isinstance(i, int) and 0 <= i < 30 for i in sup)
    assert len({tuple(s) for s in supports}) > 1
    torch.manual_seed(123)  # the named stream, not the global generator
    assert Staircase(StaircaseOptions(d=30, k=6, shuffle=True), seed=0).support == supports[0]


def test_determinism_given_seeds():
    t = Staircase(StaircaseOptions(noise=0.1), seed=0)
    a, b = t.sample(500, seed=4), t.sample(500, seed=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(t.sample(500, seed=5)[0], a[0])


# ---- persistence, options, protocol ----------------------------------------------------------------


def test_state_round_trip(tmp_path):
    o = StaircaseOptions(d=20, k=4, shuffle=True, coefficients=[1.0, -1.0, 0.5, 2.0], noise=0.2)
    t = Staircase(o, seed=3)
    assert t.config == {"kind": "staircase", "seed": 3, "options": {
        "d": 20, "k": 4, "shuffle": True, "coefficients": [1.0, -1.0, 0.5, 2.0], "noise": 0.2}}
    json.dumps(t.config)
    assert t.state() == {"support": t.support}
    save_target(t, tmp_path / "s.pt")
    for other in (Staircase.from_state(t.config, t.state()), load_target(tmp_path / "s.pt")):
        assert isinstance(other, Staircase) and other.support == t.support and other.config == t.config
        assert other.fourier() == t.fourier() and other.floors() == t.floors() and other.variance == t.variance
        xa, ya = t.sample(1000, seed=2)
        xb, yb = other.sample(1000, seed=2)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for bad in ({"support": [0, 0, 1, 2]}, {"support": [0, 1, 2]}, {"support": [0, 1, 2, 20]}, {}):
        with pytest.raises(ConfigError, match="support"):
            Staircase.from_state(t.config, bad)


@pytest.mark.parametrize("given,message", [
    (dict(k=31), "target 'staircase' option 'k': must be <= d = 30, got 31"),
    (dict(d=3, k=2, coefficients=[1.0]), "target 'staircase' option 'coefficients': must be a list of k = 2 numbers, "
                                         "got [1.0]"),
    (dict(k=2, coefficients=[0.0, 0.0]), "target 'staircase' option 'coefficients': must be a list with a nonzero "
                                         "entry (f would be constant), got [0.0, 0.0]"),
    (dict(k=2, coefficients=[1.0, math.nan]), "target 'staircase' option 'coefficients': must be a finite number, "
                                              "got nan"),
    (dict(k=2, coefficients=[1.0, math.inf]), "target 'staircase' option 'coefficients': must be a finite number, "
                                              "got inf"),
    (dict(d=0, k=1), "target 'staircase' option 'd': must be > 0, got 0"),
    (dict(k=0), "target 'staircase' option 'k': must be >= 1, got 0"),
    (dict(noise=-0.1), "target 'staircase' option 'noise': must be >= 0, got -0.1"),
])
def test_one_line_config_errors(given, message):
    for check in (lambda: validate_options(StaircaseOptions(**given)), lambda: Staircase(StaircaseOptions(**given)),
                  lambda: parse_options("staircase", given)):
        with pytest.raises(ConfigError) as e:
            check()
        assert str(e.value) == message and "\n" not in str(e.value)


def test_options_from_a_mapping():
    o = parse_options("staircase", {"d": "12", "k": 3, "coefficients": "[1, 2, 3]", "shuffle": "true"})
    assert o == StaircaseOptions(d=12, k=3, shuffle=True, coefficients=[1.0, 2.0, 3.0])
    assert Staircase(o, seed=0).variance == 14.0


def test_follows_the_protocol():
    t = Staircase(StaircaseOptions(), seed=0)
    assert protocol.check(t) is t and isinstance(t, protocol.HierarchicalTarget)
    assert (t.kind, t.task, t.input, t.shape, t.vocab, t.n_classes) == ("staircase", "regression", "continuous",
                                                                         (30,), 0, 0)
    x, y = protocol.checked_sample(t, 200, seed=1)
    assert x.shape == (200, 30) and y.shape == (200,)
    assert protocol.has_features(t) and protocol.levels_of(t) == [1, 2, 3, 4]
    assert protocol.variance_of(t) == 4.0
    assert protocol.encoded_dim(t) == 30
