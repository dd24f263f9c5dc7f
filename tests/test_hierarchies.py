"""The rhm / staircase summaries' statistics (issue 16): P* from the median curve with censored
crossings as bounds, diverged runs as failures, and claim sentences built from the numbers."""

from __future__ import annotations

import math

from bfclab.experiments.hierarchies import claim_text, crossing, p_star_text, rhm_claim


def test_crossing_interpolates_and_censors_on_both_sides():
    pts = {100: [0.4, 0.5, 0.6], 200: [0.05, 0.1, 0.2], 400: [0.01, 0.02, 0.03]}
    label, value = crossing(pts, 0.2)
    # medians 0.5 -> 0.1 between n = 100 and 200: log-log interpolation to 0.2
    want = math.exp(math.log(100) + (math.log(0.5) - math.log(0.2)) / (math.log(0.5) - math.log(0.1)) * math.log(2))
    assert label == "200" and math.isclose(value, want, rel_tol=1e-12)
    assert crossing(pts, 0.6) == ("<= 100", crossing(pts, 0.6)[1]) and math.isnan(crossing(pts, 0.6)[1])
    assert crossing(pts, 0.001)[0] == "> 400" and math.isnan(crossing(pts, 0.001)[1])
    assert p_star_text(pts, 0.6) == "<= 100" and p_star_text(pts, 0.001) == "> 400"


def test_a_diverged_seed_counts_as_a_failure():
    ok = {100: [0.5, 0.5, 0.5], 200: [0.05, 0.05, 0.05]}
    assert crossing(ok, 0.1)[0] == "200"
    two_failed = {100: [0.5, 0.5, 0.5], 200: [0.05, math.inf, math.inf]}  # two of three seeds diverged at n = 200
    assert crossing(two_failed, 0.1)[0] == "> 200"
    after_inf = {100: [math.inf] * 3, 200: [0.05] * 3}  # no finite point below: the grid point itself
    assert crossing(after_inf, 0.1) == ("200", 200.0)


def test_claim_sentences_follow_the_numbers():
    opts = {"n_c": 8, "L": 3}
    pstar = {3: {"bfc": 500.0, "krr-rbf": math.nan}, 4: {"bfc": 1200.0, "krr-rbf": math.nan}}
    text = {3: {"bfc": "500", "krr-rbf": "> 4096"}, 4: {"bfc": "1200", "krr-rbf": "> 8192"}}
    s = rhm_claim(pstar, text, [3, 4], opts)
    assert "by 2.40 (bfc)" in s and "none of the kernels reaches it" in s and "> 8192 (m = 4)" in s
    pstar[4]["krr-rbf"], text[4]["krr-rbf"] = 6000.0, "6000"
    assert "krr-rbf reach it" in rhm_claim(pstar, text, [3, 4], opts)
    curves = {"bfc": {1000: [0.005]}, "krr-rbf": {1000: [0.3]}}
    assert "at or above the degree-3 floor" in claim_text(curves, {}, {"degree<=3": 0.25}, 30, 4)
    curves["krr-rbf"] = {1000: [0.2]}
    assert "krr-rbf below it" in claim_text(curves, {}, {"degree<=3": 0.25}, 30, 4)
