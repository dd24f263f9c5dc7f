"""The sample-complexity summary's separation table (issue 12): n*(1e-2) bracketed on the grid and
the ratio to bfc's as the interval the two brackets allow, on curves with a known answer."""

from functools import partial

from bfclab import scaling
from bfclab.experiments.sample_complexity import THRESHOLD, separation

bracket = partial(scaling.bracket, eps=THRESHOLD)
n_star_text = partial(scaling.n_star_text, eps=THRESHOLD)
ratio_text = partial(scaling.ratio_text, eps=THRESHOLD)

BFC = {1000: [0.1, 0.2, 0.05], 3000: [0.02, 0.03, 0.015], 10000: [0.005, 0.02, 0.004], 20000: [1e-3] * 3}


def test_bracket_finds_the_first_median_at_the_threshold():
    assert THRESHOLD == 1e-2
    assert bracket(BFC) == (3000, 10000, 20000)  # the median at 10000 is 0.005 though one seed is above
    assert n_star_text(BFC) == "(3000, 10000]"
    assert n_star_text({500: [0.001], 1000: [0.002]}) == "<= 500"
    assert bracket({500: [0.5], 1000: [0.2]}) == (1000, None, 1000) and n_star_text({500: [0.5]}) == "> 500"


def test_ratio_is_the_interval_both_brackets_allow():
    seq = {3000: [0.3], 20000: [0.06], 40000: [0.02], 80000: [0.008]}
    assert ratio_text(seq, BFC) == f"[{40000 / 10000:.3g}, {80000 / 3000:.3g}]"
    assert ratio_text({90000: [0.4]}, BFC) == f"> {90000 / 10000:.3g}"
    assert ratio_text({500: [0.001]}, BFC) == f"[0, {500 / 3000:.3g}]"
    assert ratio_text(seq, {1000: [0.5]}).startswith("n/a")


def test_separation_merges_larger_n_and_names_the_best_baseline():
    curves = {"bfc": BFC, "layerwise": {20000: [0.2] * 3},
              "seqkernel": {3000: [0.3] * 3, 20000: [0.06] * 3}, "krr-poly": {20000: [0.5] * 3},
              "krr-oracle": {20000: [0.01] * 3}}
    rows, text = separation(curves, {"seqkernel": {40000: [0.02] * 2, 80000: [0.008] * 2},
                                     "krr-poly": {90000: [0.4]},
                                     "tuned-krr-poly": {1000: [0.7] * 3, 10000: [0.005] * 3}})
    by = {r[0]: r for r in rows}
    assert by["seqkernel"][1:] == ["(40000, 80000]", "80000", "2", "[4, 26.7]"]
    assert by["krr-poly"][1:] == ["> 90000", "90000", "1", "> 9"]
    assert by["bfc"][4] == "—"
    # a method run only apart gets its row, but rivals only where the grid's largest n was run
    assert by["tuned-krr-poly"][1:] == ["(1000, 10000]", "10000", "3", "[0.1, 3.33]"]
    # layerwise and the oracle are not rivals: the best baseline at n = 20000 is seqkernel
    assert text.startswith("`bfc` reaches nMSE <= 0.01 at n in (3000, 10000]; the best baseline at n = 20000")
    assert "is `seqkernel` (median 0.06), which reaches it at n in (40000, 80000]" in text
    assert text.endswith("is [4, 26.7].")


def test_tuning_gain_compares_at_the_largest_n_both_ran():
    from bfclab.experiments.sample_complexity import tuning_gain

    curves = {"krr-poly": {1000: [0.9] * 3, 10000: [0.6, 0.62, 0.61], 20000: [0.5] * 3}}
    text = tuning_gain({"tuned-krr-poly": {1000: [0.8] * 3, 10000: [0.55] * 3}}, curves)
    assert "`krr-poly` 0.61 -> 0.55 at n = 10000" in text and text.endswith("reaches nMSE <= 0.01.")
    assert tuning_gain({"tuned-krr-rbf": {1000: [0.005]}}, curves) == ""  # no default run to compare with
    assert tuning_gain({"tuned-krr-poly": {1000: [0.005] * 3}}, curves).endswith("at n = 1000.")
