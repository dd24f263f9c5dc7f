"""Experiments and the report: the analysis pieces against closed forms, and the whole --quick chain."""

import pytest
import torch

from bfclab.cli import main
from bfclab.experiments import registry
from bfclab.experiments.mechanism import degree2_basis, project, share
from bfclab.report import build
from bfclab.results import Result


def test_quadratic_projection_is_exact_on_quadratics_and_kills_higher_hermite():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200000, 4, generator=g, dtype=torch.float64)
    q = 1.0 + x[:, 0] - 2 * x[:, 1] * x[:, 2] + 0.5 * x[:, 3] ** 2
    assert torch.allclose(project(degree2_basis(x), q), q, atol=1e-8)
    # He_4(x_0) = x^4 - 6x^2 + 3 is orthogonal to every degree<=2 polynomial under N(0, I)
    he4 = x[:, 0] ** 4 - 6 * x[:, 0] ** 2 + 3
    p = project(degree2_basis(x), he4)
    assert float(p.norm() / he4.norm()) < 0.05


def test_share():
    p = torch.randn(100, dtype=torch.float64)
    assert abs(share(3 * p, p) - 1) < 1e-12
    o = torch.randn(100, dtype=torch.float64)
    o = o - (o @ p) / (p @ p) * p
    assert share(o, p) < 1e-20


def test_report_names_missing_results(tmp_path):
    build(tmp_path / "results", tmp_path / "docs", quick=True, compute=False)
    quick = [e for e in registry().values() if e.in_quick]
    assert {e.name for e in quick} >= {"correction", "window", "gap", "classification", "images-digits",
                                       "probe-mlp-mnist1d", "probe-transformer-rules"}
    for exp in quick:
        text = (tmp_path / "docs" / getattr(exp, "doc", "RESULTS.md")).read_text()
        assert f"run `{exp.command(True, tmp_path / 'results')}`" in text, exp.name


def test_unknown_experiment_one_line(capsys):
    assert main(["experiment", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert "nope" in err and "correction" in err and "\n" not in err


def test_report_quick_runs_the_whole_chain(tmp_path):
    """`bfclab report --quick`: every experiment on tiny grids, then RESULTS.md from the stored files."""
    results, docs = tmp_path / "results", tmp_path / "docs"
    assert main(["report", "--quick", "--results", str(results), "--docs", str(docs), "--workers", "2"]) == 0
    text = (docs / "RESULTS.md").read_text()
    probe_text = (docs / "PROBE.md").read_text()
    for exp in (e for e in registry().values() if e.in_quick):
        title = {"ImageExperiment": lambda e: f"images: {e.tag}", "ProbeExperiment": lambda e: f"probe: {e.title}"}.get(
            type(exp).__name__, lambda e: e.name)(exp)
        doc = probe_text if getattr(exp, "doc", "RESULTS.md") == "PROBE.md" else text
        assert f"## {title}" in doc, title
        assert "No results" not in doc and "have no results" not in doc and "No probe results" not in doc
    assert "## mechanism" in text and "## images: digits" in text and "## probe: an MLP on mnist1d" in probe_text
    import re

    figures = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text + probe_text)
    assert len(figures) >= 8
    for f in figures:
        assert (docs / f).is_file(), f
    # a second report computes nothing new and gives the same tables
    before = {p: p.stat().st_mtime_ns for p in results.rglob("result.json")}
    assert len(before) >= len(registry())  # every experiment stored at least one result
    assert main(["report", "--quick", "--results", str(results), "--docs", str(docs), "--no-compute"]) == 0
    assert {p: p.stat().st_mtime_ns for p in results.rglob("result.json")} == before
    assert (docs / "RESULTS.md").read_text() == text and (docs / "PROBE.md").read_text() == probe_text


def test_how_much_against_hand_computed_changes(tmp_path):
    from bfclab.experiments.common import CellRun
    from bfclab.experiments.mechanism import how_much

    K2 = torch.ones(2, 3)
    K3 = torch.full((2, 5), 2.0)
    states = {
        2: {"layers.2.K": K2, "layers.3.K": torch.zeros(2, 5)},
        3: {"layers.2.K": K2 * 1.5, "layers.3.K": K3},  # level 2 moves by 0.5 of its stage-2 norm
        4: {"layers.2.K": K2 * 1.5, "layers.3.K": K3 * 0.9},  # level 2 still; level 3 by 0.1
    }
    for s, st in states.items():
        torch.save({"model": st}, tmp_path / f"stage{s}.pt")
    run = CellRun({}, tmp_path, Result.from_json({"stage_end": {"2": {}, "3": {}, "4": {}}}))
    out = how_much(run)
    assert abs(out[2][3] - 0.5) < 1e-6 and abs(out[2][4]) < 1e-9
    assert abs(out[3][4] - 0.1) < 1e-6


def test_gap_slope_fit_recovers_a_known_exponent():
    """A power law c * rho^s with multiplicative noise: the fitted slope is s within its interval;
    an exact law gives s to rounding and a zero-width interval."""
    import numpy as np

    from bfclab.experiments.gap import fit_slope

    rho = [0.05, 0.1, 0.2, 0.3, 0.5, 0.8] * 3
    exact = [3.0 * r**2.5 for r in rho]
    s, lo, hi = fit_slope(rho, exact)
    assert s == pytest.approx(2.5, abs=1e-12) and hi - lo < 1e-9
    noisy = [v * float(np.exp(e)) for v, e in zip(exact, np.random.default_rng(0).normal(0, 0.2, len(rho)))]
    s, lo, hi = fit_slope(rho, noisy)
    assert lo < 2.5 < hi and abs(s - 2.5) < 0.3
    assert all(np.isnan(fit_slope([0.1, 0.1], [1.0, 2.0])))  # one rho: no slope


def test_gap_slope_rows_separate_the_law_from_the_floor():
    """Synthetic bfc cells on levels 2..4: level 2 after stage 2 follows the law exactly above a
    floor 1e4 times lower (verdict holds, every rho kept); level 3 after stage 3 sits at its floor
    (the final error equals it: floor share 1, floor-limited); level 2 after stage 3 follows a
    slope 3 where the prediction is 4 (shallower)."""
    from types import SimpleNamespace

    from bfclab.experiments.gap import FLOOR_SHARE, slope_rows, verdict

    class Res:
        def __init__(self, rho):
            self.stage_end = {2: {}, 3: {}, 4: {}}
            self.stage = {(2, 2): rho**2, (3, 2): rho**3, (3, 3): 1e-3}
            self.feature_error = {2: 1e-4 * rho**3 * 1e-1, 3: 1e-3, 4: 0.5}

        def stage_value(self, stage, key, level):
            return self.stage[(stage, level)]

    rhos = [0.05, 0.1, 0.2, 0.3, 0.5]
    cells = [SimpleNamespace(params={"method": "bfc", "target.rho": r, "seed": s}, result=Res(r))
             for r in rhos for s in (0, 1)]
    rows = {(int(r[0]), int(r[1])): r for r in slope_rows(cells)}
    assert set(rows) == {(2, 2), (3, 2), (3, 3)}
    assert rows[(2, 2)][-1] == "holds" and "(5 of 5)" in rows[(2, 2)][-2]
    assert rows[(3, 3)][-1] == "floor-limited" and rows[(3, 3)][-3].startswith("1.00")
    assert rows[(3, 2)][-1] == "shallower" and rows[(3, 2)][-2].startswith("3.00")
    assert FLOOR_SHARE < 1
    assert verdict(2, 1.5, 2.5, 8) == "holds" and verdict(2, 2.1, 2.5, 8) == "steeper"
    assert verdict(4, 1.0, 3.0, 3) == "shallower" and verdict(2, 1.0, 3.0, 2) == "floor-limited"
