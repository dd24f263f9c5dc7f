"""The scaling-law machinery (issue 13, parts 1-2): the adaptive n* search on synthetic monotone
error curves with a known answer, and the censored fit on synthetic data with a known exponent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bfclab.results import read_json
from bfclab.scaling import GRID_SIGMA, Search, bootstrap_fit, censored_fit, geometric_grid, n_star_from, run_searches


def test_geometric_grid_has_the_ratio_and_the_bounds():
    g = geometric_grid(250, 2 ** 17, math.sqrt(2))
    assert g[0] == 250 and g[-1] <= 2 ** 17 and len(g) == len(set(g))
    assert all(1.3 < b / a < 1.5 for a, b in zip(g, g[1:]))
    with pytest.raises(ValueError):
        geometric_grid(10, 5, 2.0)


def brute_force(grid, curve, eps):
    return next((n for n in grid if curve(n) <= eps), None)


@pytest.mark.parametrize("c, eps", [(100.0, 0.05), (37.0, 0.01), (5.0, 0.3), (1e4, 0.1), (2.0, 0.5)])
def test_search_finds_the_smallest_grid_n_of_a_monotone_curve(c, eps):
    grid = geometric_grid(100, 200_000, math.sqrt(2))
    curve = lambda n: c / n  # noqa: E731
    s = Search(grid, eps)
    calls = []
    while (i := s.propose()) is not None:
        calls.append(i)
        s.update(i, curve(grid[i]))
    n, kind = s.result()
    want = brute_force(grid, curve, eps)
    assert n == want
    assert kind == ("left" if want == grid[0] else "exact")
    assert len(calls) == len(set(calls))  # never the same point twice
    assert len(calls) <= 2 * math.ceil(math.log2(len(grid))) + 2  # doubling, then bisection


def test_search_censors_when_the_budget_runs_out_and_nan_fails():
    grid = geometric_grid(100, 3200, math.sqrt(2))
    s = Search(grid, 1e-6)
    while (i := s.propose()) is not None:
        s.update(i, float("nan") if i == 0 else 1.0 / grid[i])
    assert s.result() == (grid[-1], "right")
    assert max(s.values) == len(grid) - 1  # the last point was tried before giving up


def test_searches_run_in_rounds_and_share_each_round():
    grid = geometric_grid(10, 10_000, math.sqrt(2))
    searches = [Search(grid, eps, key=(eps,)) for eps in (0.1, 0.01, 0.001)]
    rounds = []

    def evaluate(todo):
        rounds.append(len(todo))
        return [1.0 / s.grid[i] for s, i in todo]

    run_searches(searches, evaluate)
    assert rounds[0] == 3 and sum(rounds) == sum(len(s.values) for s in searches)
    assert [s.result()[0] for s in searches] == [brute_force(grid, lambda n: 1.0 / n, e) for e in (0.1, 0.01, 0.001)]


def test_a_point_without_a_value_stops_its_search_unfinished_and_the_others_go_on():
    grid = geometric_grid(10, 10_000, math.sqrt(2))
    stuck, free = Search(grid, 0.01, key=("stuck",)), Search(grid, 0.01, key=("free",))

    def evaluate(todo):  # the "stuck" search's cells end at n = 40 (a replay of a partial run)
        return [None if s is stuck and s.grid[i] > 40 else 1.0 / s.grid[i] for s, i in todo]

    run_searches([stuck, free], evaluate)
    assert free.done and free.result()[0] == brute_force(grid, lambda n: 1.0 / n, 0.01)
    assert not stuck.done and max(stuck.grid[i] for i in stuck.values) <= 40


def test_a_part_of_the_plan_then_the_rest_gives_the_full_runs_cells_and_table(tmp_path):
    """``--only`` (the quick plan's kernel searches): a partial summary shows just its finished rows;
    finishing the rest stores the same cells, and gives the same table, as one run of the whole."""
    from bfclab.experiments import registry
    from bfclab.report import run_experiment

    def rows(sections):
        return [r.split("|")[1:8] for r in sections[0].markdown.splitlines() if r.startswith("| krr-poly")]

    part = run_experiment("scaling", tmp_path / "a", True, 1, only="method=krr-poly;L=2;d=8")
    assert "**Partial**" in part[0].markdown and {tuple(r[:2]) for r in rows(part)} == {(" krr-poly ", " 2 ")}
    assert rows(part)[0][3].strip() == "1 / 2 (d = 8)"
    rest = run_experiment("scaling", tmp_path / "a", True, 1, only="method=krr-poly")
    whole = run_experiment("scaling", tmp_path / "b", True, 1, only="method=krr-poly")
    assert rows(rest) == rows(whole) and len(rows(whole)) == 4
    assert sorted(p.name for p in (tmp_path / "a/scaling/cells").iterdir()) == \
        sorted(p.name for p in (tmp_path / "b/scaling/cells").iterdir())
    run = read_json(tmp_path / "b/scaling/sweep.json")  # the whole command, not its last round
    assert run["rounds"] > 1 and run["cells_run"] == len(list((tmp_path / "b/scaling/cells").iterdir()))
    assert run["cells_skipped"] == 0 and f"({run['rounds']} rounds of sweeps)" in whole[0].markdown
    exp = registry()["scaling"]
    assert exp.missing(tmp_path / "a", True, only="method=krr-poly") == 0
    assert exp.missing(tmp_path / "a", True) > 0  # bfc's searches have not run


def test_censored_fit_recovers_a_known_exponent_where_dropping_or_clamping_does_not():
    rng = np.random.default_rng(0)
    a, b, sigma = 2.5, 1.0, 0.15
    x = np.log(np.repeat([8, 16, 32, 64, 128, 256], 8)).astype(float)
    y = a * x + b + sigma * rng.standard_normal(x.size)
    cap = math.log(2 ** 15)  # the budget: larger n* are only known to exceed it
    kind = np.where(y > cap, "right", "exact")
    yc = np.minimum(y, cap)
    assert (kind == "right").sum() >= 10  # the top d are censored
    fa, fb, fs = censored_fit(x, yc, kind)
    assert abs(fa - a) < 0.15 and abs(fs - sigma) < 0.08
    clamped = np.polyfit(x, yc, 1)[0]  # censored points at their bound
    dropped = np.polyfit(x[kind == "exact"], yc[kind == "exact"], 1)[0]
    assert clamped < a - 0.3 and abs(fa - a) < abs(clamped - a)
    assert abs(fa - a) <= abs(dropped - a) + 0.05
    # without censoring the fit is least squares
    assert censored_fit(x, y, ["exact"] * x.size)[0] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-12)
    with pytest.raises(ValueError):
        censored_fit([1.0, 2.0], [1.0, 2.0], ["exact", "right"])


def test_two_exact_points_and_satisfied_censored_ones_give_a_finite_fit():
    """The line through two exact points satisfies the right-censored ones: without a floor on
    sigma the likelihood grows without bound as sigma -> 0; with it, sigma is the grid's own and
    the slope the two points' (the censored points being far inside their tails)."""
    x = [math.log(8), math.log(16), math.log(32), math.log(64)]
    y = [math.log(250), math.log(1000), math.log(1000), math.log(2000)]  # right-censored: n* > 1000, > 2000
    a, b, s = censored_fit(x, y, ["exact", "exact", "right", "right"])
    assert a == pytest.approx(2.0, abs=1e-4) and s == pytest.approx(GRID_SIGMA, rel=1e-3)
    with pytest.raises(ValueError, match="sigma_min"):
        censored_fit(x, y, ["exact", "exact", "right", "right"], sigma_min=0.0)


def test_n_star_from_points_and_the_bootstrap_covers_the_exponent():
    assert n_star_from({100: [0.5, 0.4, 0.6], 200: [0.01, 0.2, 0.02]}, 0.05) == (200, "exact")
    assert n_star_from({100: [0.01, 0.02, 0.5]}, 0.05) == (100, "left")
    assert n_star_from({100: [0.5], 200: [float("nan")]}, 0.05) == (200, "right")
    # error(n, d) = (d^2 / n) x seed noise: n* grows like d^2
    rng = np.random.default_rng(1)
    grid = geometric_grid(16, 2 ** 20, math.sqrt(2))
    curves = {}
    for d in (8, 16, 32, 64):
        for ts in (0, 1):
            scale = math.exp(0.1 * rng.standard_normal())
            curves[(d, ts)] = {n: [scale * d * d / n * math.exp(0.1 * rng.standard_normal()) for _ in range(3)]
                               for n in grid}
    fit = bootstrap_fit(curves, eps=0.1, draws=200)
    assert fit["lo"] <= 2.0 <= fit["hi"] and abs(fit["a"] - 2.0) < 0.2
    assert fit["draws"] == 200 and fit["hi"] - fit["lo"] < 0.5


def test_growth_words_reads_each_depth_step_from_the_intervals():
    """The scaling section's sentence on exponents against depth: overlapping intervals are "no
    change resolved", a deeper interval above the shallower one "grows", and a depth
    whose searches are all censored is named with its budget instead of an exponent."""
    from bfclab.experiments.scaling import growth_words

    nan = math.nan
    fits = {("bfc", 2, "1e-2"): {"a": 1.1, "lo": 1.0, "hi": 1.6, "points": []},
            ("bfc", 3, "1e-2"): {"a": 1.2, "lo": 0.6, "hi": 1.3, "points": []},
            ("krr", 2, "1e-2"): {"a": 2.0, "lo": 1.9, "hi": 2.1, "points": []},
            ("krr", 3, "1e-2"): {"a": 3.7, "lo": 3.5, "hi": 4.0, "points": []},
            ("krr", 4, "1e-2"): {"a": nan, "lo": nan, "hi": nan, "points": [(8, 32000, "right"), (16, 32000, "right")]},
            ("krr", 2, "rel"): {"a": 9.0, "lo": 9.0, "hi": 9.0, "points": []}}
    text = growth_words(fits, [2, 3, 4])
    assert "bfc: 1.10 [1.00, 1.60] at L = 2; 1.20 [0.60, 1.30] at L = 3 (L = 2 to 3: no change resolved (the intervals overlap)" in text
    assert "krr: 2.00 [1.90, 2.10] at L = 2; 3.70 [3.50, 4.00] at L = 3; n* > 32000 at every finished d (8, 16)" in text
    assert "L = 2 to 3: grows" in text and "9.00" not in text  # only the eps asked for
    assert growth_words({}, [2, 3]) == ""


def test_time_to_eps_in_steps_and_compute_spent_count_each_run_once():
    """Steps x batch at n* comes from the deep learner's result (steps x train.batch_size) or a
    baseline's recorded options, is "not recorded" for a closed-form fit, and the compute sum counts
    a run that the two eps searches share once."""
    from bfclab.experiments.scaling import compute_spent, time_fit, work_of
    from bfclab.results import Result

    deep = Result("bfc", 0, {"train": {"batch_size": 512}}, 3.0, {"test_nmse": 0.1}, steps=8000)
    base = Result("twolayer-relu", 0, {}, 2.0, {"test_nmse": 0.1},
                  extra={"baseline": {"options": {"steps": 100, "batch_size": 64}}})
    kern = Result("krr-poly", 0, {}, 1.0, {"test_nmse": 0.1}, extra={"baseline": {"options": {}}})
    assert work_of(deep) == 8000 * 512 and work_of(base) == 6400 and work_of(kern) is None

    def search(label, eps, work):
        s = Search([100, 200, 400], eps, key=(label, 2, 8, 0, str(eps)))
        s.points = {100: [0.5, 0.5, 0.5], 200: [0.001] * 3}
        s.seconds = {100: [1.0, 2.0, 3.0], 200: [10.0, 10.0, 10.0]}
        s.work = {100: [work] * 3, 200: [work] * 3}
        return s

    a, text = time_fit([search("bfc", 0.01, 4096.0)], "work")
    assert a == 0.0 and text == "4.1e+03 at every d"
    assert time_fit([search("krr", 0.01, None)], "work") == (pytest.approx(math.nan, nan_ok=True), "not recorded")
    assert time_fit([search("bfc", 0.01, 1.0)])[1] == "8:10s"
    spent = compute_spent([search("bfc", 0.01, 1.0), search("bfc", 0.1, 1.0)])
    assert spent == {("bfc", 2): (6, 36.0)}


def test_ratio_rows_bracket_each_methods_n_star_against_bfcs_on_the_same_target():
    """The scaling section's ratio table: per d and target seed, n*(method) / n*(bfc) is the
    interval the two grid brackets allow; a censored method reads "> N / bfc's hit"; a diverged
    seed (nan) counts as a failure; only the eps asked for and searches both finished are used."""
    from bfclab.experiments.scaling import ratio_rows

    nan = math.nan

    def search(label, d, ts, points, eps=0.01, name="1e-2"):
        s = Search([250, 354, 500, 707, 1000, 1414, 2000], eps, key=(label, 3, d, ts, name))
        s.points = points
        return s

    bfc = [search("bfc", 8, 0, {250: [0.5] * 3, 354: [0.005] * 3}),
           search("bfc", 8, 1, {250: [0.005] * 3}),
           search("bfc", 16, 0, {500: [0.5] * 3, 707: [0.005] * 3})]
    krr = [search("krr", 8, 0, {1000: [0.5] * 3, 1414: [0.005] * 3}),
           search("krr", 8, 1, {2000: [0.5, 0.005, 0.5]}),
           search("krr", 16, 0, {1000: [0.005, nan, nan]}),  # two diverged seeds: not reached
           search("krr", 16, 1, {1000: [0.005] * 3})]  # no bfc search on this target: left out
    done = {("bfc", 3, "1e-2"): bfc, ("krr", 3, "1e-2"): krr,
            ("krr", 3, "rel"): [search("krr", 8, 0, {250: [0.0] * 3}, name="rel")]}
    rows = ratio_rows(done, [2, 3], [8, 16, 32])
    assert rows == [["krr", 3, f"[{1000 / 354:.3g}, {1414 / 250:.3g}]; > {2000 / 250:.3g}", f"> {1000 / 707:.3g}", ""]]
    assert ratio_rows({("bfc", 3, "1e-2"): bfc}, [3], [8]) == []
