"""The concept class (PAPER_NOTES §2): determinism, degree structure, persistence, validation."""

import numpy as np
import pytest
import torch

from bfclab.config import ConfigError, TargetConfig
from bfclab.target import Target


def small(**kw):
    base = dict(d=10, L=4, widths=[3], mc_samples=5000, var_samples=20000)
    base.update(kw)
    return TargetConfig(**base)


def test_same_seed_same_function_bit_for_bit():
    a, b = Target.from_config(small()), Target.from_config(small())
    x = torch.randn(100, 10, dtype=torch.float64)
    assert torch.equal(a(x), b(x))
    c = Target.from_config(small(seed=1))
    assert not torch.allclose(a(x), c(x))


def test_save_load_bit_identical(tmp_path):
    t = Target.from_config(small())
    t.save(tmp_path / "t.pt")
    u = Target.load(tmp_path / "t.pt")
    x = torch.randn(256, 10, dtype=torch.float64)
    assert torch.equal(t(x), u(x))
    for l in range(2, 5):
        assert torch.equal(t.features(x)[l], u.features(x)[l])
    assert u.median == t.median and u.alphas == t.alphas


def test_output_is_sum_of_levels_and_levels_are_standardised():
    t = Target.from_config(small(mc_samples=200_000))
    x, y, g = t.sample(200_000, seed=3)
    lv = t.level_outputs(x)
    assert torch.allclose(sum(lv.values()), g)
    for l, s in t.features(x).items():
        # frozen standardisation from another sample of the same size: zero mean, unit variance
        # up to the Monte-Carlo error of a degree-2^(l-2) polynomial (heavier tails higher up)
        tol = {2: 0.02, 3: 0.05, 4: 0.15}[l]
        assert np.allclose(s.mean(0).numpy(), 0.0, atol=tol)
        assert np.allclose(s.pow(2).mean(0).numpy(), 1.0, atol=tol)


def test_homogeneous_degree_when_connections_allow():
    """chain only, no centring: S*_l(t x) = t^(2^(l-2)) S*_l(x) (PAPER_NOTES §9.6)."""
    t = Target.from_config(small(conn="chain", center=False))
    x = torch.randn(50, 10, dtype=torch.float64)
    for s in (0.5, 1.7):
        fx, ft = t.features(x), t.features(s * x)
        for l in range(2, 5):
            assert torch.allclose(ft[l], s ** (2 ** (l - 2)) * fx[l], rtol=1e-9, atol=1e-12)
        lx, lt = t.level_outputs(x), t.level_outputs(s * x)
        for l in range(2, 5):  # alpha_l ||S*_l||^2 has degree 2^(l-1)
            assert torch.allclose(lt[l], s ** (2 ** (l - 1)) * lx[l], rtol=1e-9)


@pytest.mark.parametrize("conn", ["chain+input", "chain+input+const"])
def test_polynomial_degree_along_rays(conn):
    """With skips and centring, t -> S*_l(t x) is a polynomial of degree exactly 2^(l-2)."""
    t = Target.from_config(small(conn=conn))
    x = torch.randn(1, 10, dtype=torch.float64)
    ts = torch.linspace(-2, 2, 40, dtype=torch.float64)
    feats = t.features(ts[:, None] * x)
    for l in range(2, 5):
        deg = 2 ** (l - 2)
        y = feats[l][:, 0].numpy()
        V = np.vander(ts.numpy(), deg + 1)
        coef, res, *_ = np.linalg.lstsq(V, y, rcond=None)
        assert np.abs(V @ coef - y).max() < 1e-8 * (1 + np.abs(y).max())
        assert abs(coef[0]) > 1e-8  # the top-degree term is present
        V2 = np.vander(ts.numpy(), deg)  # one degree less cannot fit
        c2, *_ = np.linalg.lstsq(V2, y, rcond=None)
        assert np.abs(V2 @ c2 - y).max() > 1e-6


def test_alphas_from_rho_and_vector():
    assert Target.from_config(small(rho=0.5)).alphas == {2: 1.0, 3: 0.5, 4: 0.25}
    assert Target.from_config(small(alphas=[1, 0.2, 0.1])).alphas == {2: 1.0, 3: 0.2, 4: 0.1}


def test_classification_labels_split_at_median():
    t = Target.from_config(small(mc_samples=20000, var_samples=20000))
    _, y, g = t.sample(20000, seed=5, task="classification")
    assert set(y.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((y > 0).double().mean()) - 0.5) < 0.02
    assert torch.equal(y > 0, g > t.median)


def test_regression_label_noise():
    t = Target.from_config(small())
    _, y, g = t.sample(5000, seed=5, label_noise=0.1)
    assert 0.05 < float((y - g).std() / g.std()) < 0.15


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(conn=[[1], [1], [3, 1]]), "target.conn"),  # l-1 missing at level 3
        (dict(conn=[[1], [2, 1], [4, 1]]), "target.conn"),  # connection at/above its level
        (dict(conn="dense-ish"), "target.conn"),
        (dict(widths=[0]), "target.widths"),
        (dict(widths=[2, 2]), "target.widths"),
        (dict(d=0), "target.d"),
        (dict(alphas=[1, -0.3, 0.1]), "target.alphas"),
        (dict(alphas=[1, 0.3]), "target.alphas"),
        (dict(rho=0.0), "target.rho"),
    ],
)
def test_invalid_spec_names_the_field(kw, field):
    with pytest.raises(ConfigError) as e:
        Target.from_config(small(**kw))
    msg = str(e.value)
    assert field in msg and "\n" not in msg


def test_malformed_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a target")
    with pytest.raises(ConfigError, match="not a bfclab target file"):
        Target.load(bad)
    t = Target.from_config(small())
    st = t.state()
    del st["mu"]
    torch.save(st, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match="missing field 'mu'"):
        Target.load(tmp_path / "partial.pt")
    st = t.state()
    st["weights"]["3"]["2"] = torch.zeros(2, 2, dtype=torch.float64)
    torch.save(st, tmp_path / "shape.pt")
    with pytest.raises(ConfigError, match="weights.3.2"):
        Target.load(tmp_path / "shape.pt")


def test_population_variance_is_frozen_and_agrees_with_a_fresh_sample():
    """Var(G*) is estimated once (its own stream) and kept in the target file; an independent
    sample of 400 000 inputs agrees within 5 combined standard errors (the fresh sample's error from
    its fourth moment, as the target's own)."""
    from bfclab.config import TargetConfig

    t = Target.from_config(TargetConfig(d=6, L=3, widths=[2], mc_samples=2000, var_samples=200_000))
    g = t(torch.randn(400_000, 6, generator=torch.Generator().manual_seed(99), dtype=torch.float64))
    c = g - g.mean()
    v = float(c.pow(2).mean())
    se = (float(c.pow(4).mean()) - v * v) ** 0.5 / 400_000 ** 0.5
    assert abs(t.var_g - v) <= 5 * (t.var_g_se ** 2 + se ** 2) ** 0.5
    assert 0 < t.var_g_se < 0.05 * t.var_g


def test_population_variance_survives_save_and_load(tmp_path):
    from bfclab.config import TargetConfig

    t = Target.from_config(TargetConfig(d=6, L=3, widths=[2], mc_samples=2000, var_samples=5000))
    t.save(tmp_path / "t.pt")
    u = Target.load(tmp_path / "t.pt")
    assert (u.var_g, u.var_g_se) == (t.var_g, t.var_g_se)
    st = t.state()
    del st["var_g"], st["var_g_se"]  # a file from before the variance was frozen: estimated as at creation
    assert (Target.from_state(st).var_g, Target.from_state(st).var_g_se) == (t.var_g, t.var_g_se)
