"""Kernel ridge on the true lower-level features (issue 12, part 2): its inputs hold the target
exactly as a degree-4 polynomial, so with more samples than degree-<=4 monomials it interpolates
the (noise-free) target, where the plain kernel of the target's degree on x cannot yet."""

from __future__ import annotations

import math

import pytest
import torch

from bfclab.baselines.oracle import oracle_inputs, oracle_levels
from bfclab.baselines.registry import check_applies, make_estimator
from bfclab.config import ConfigError, DataConfig, TargetConfig
from bfclab.target import Target
from bfclab.training import make_data


def nmse(est, x, y) -> float:
    return float((est.predict(x) - y).pow(2).mean() / y.var())


def test_the_oracle_inputs_hold_the_target_and_interpolate_it():
    t = Target.from_config(TargetConfig(d=6, L=4, widths=[2], mc_samples=4000, var_samples=20000))
    lower, with_x = oracle_levels(t)
    assert lower == [2, 3] and with_x == (1 in t.conn[4])
    width = 4 + (6 if with_x else 0)
    x, y, xt, yt = make_data(t, DataConfig(n_train=1500, n_test=2000), seed=0)
    assert oracle_inputs(t, x).shape == (1500, width)
    monomials = math.comb(width + 4, 4)  # degree <= 4 in the oracle's inputs: 1001 (with x) < 1500
    poly_monomials = math.comb(6 + 8, 8)  # degree <= 8 in x: 3003 > 1500
    assert monomials < 1500 < poly_monomials
    oracle = make_estimator("krr-oracle", {}, target=t).fit(x, y)
    assert oracle.info["input_width"] == width
    # exact up to the float64 solve (relative error ~ sqrt(condition) * eps, far below 1e-6)
    assert nmse(oracle, xt, yt) < 1e-6
    plain = make_estimator("krr-poly", {"dtype": "float64"}, target=t).fit(x, y)  # degree 2^(L-1) = 8 on x
    assert nmse(plain, xt, yt) > 1e-3


def test_the_oracle_needs_the_quadratic_class():
    with pytest.raises(ConfigError, match=r"^estimator 'krr-oracle': needs the target"):
        make_estimator("krr-oracle", {})
    with pytest.raises(ConfigError, match=r"^estimator 'krr-oracle': applies to target.kind 'quadratic' only .* "
                                          r"levels and true features"):
        check_applies("krr-oracle", "rhm")
    with pytest.raises(ConfigError, match=r"^estimator 'krr-oracle': needs the quadratic class's target"):
        oracle_levels(object())


def test_the_oracle_note_states_its_numbers_from_the_runs():
    from types import SimpleNamespace as NS

    from bfclab.experiments.sample_complexity import oracle_note

    def run(err, chosen):
        sel = {"grid": [1e-14, 1e-13, 1.0], "val_mse": [0.2, 0.2 * (1 + 1e-9), 3.0], "chosen": chosen}
        return NS(result=NS(error=err, extra={"info": {"input_width": 40, "selection": sel}}))

    note = oracle_note("krr-oracle", {1000: [run(0.5, 1.0)], 20000: [run(0.07, 1e-14), run(0.08, 1.0),
                                                                      run(0.09, 1e-14)]},
                       {20000: [0.001, 0.0008, 0.002]})
    assert note.startswith("`krr-oracle` at n = 20000: median 0.08, 80x bfc's 0.001;")
    assert f"width 40, spanned at degree <= 4 by {math.comb(44, 4)} monomials against 20000" in note
    assert "2 of 3 seeds chose the ridge grid's smallest value 1e-14" in note and "at most 1.0e-09" in note
