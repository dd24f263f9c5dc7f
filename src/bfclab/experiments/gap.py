"""Experiment ``gap``: bfc, layerwise and e2e as the information gap rho varies (PAPER_NOTES §2.5,
§9.7).  With alpha_l = rho^(l-2): a small rho (large gap) leaves the lower layers almost right
after their own stage, so backward correction matters less; rho near 1 removes the curriculum
that stage-wise training relies on.  The notes warn not to assume a monotone picture.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..plots import plot_vs
from .common import CI_NOTE, QUICK_BASE, Section, diverged_note, final_pairs, load_cells, med, spread, spread_ci, table

NAME = "gap"
RHOS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.8]
METHODS = ["bfc", "layerwise", "e2e"]


def spec(quick: bool = False) -> dict:
    base = {k: dict(v) for k, v in QUICK_BASE.items()} if quick else {}
    return {"name": NAME, "base": base,
            "grid": {"target.rho": RHOS, "method": METHODS, "seed": [0, 1] if not quick else [0]}}


def fit_slope(rho: list[float], values: list[float], seed: int = 0, boot: int = 2000) -> tuple[float, float, float]:
    """Least-squares slope of log(value) against log(rho) over the given points, with a 95 %
    percentile interval from a pairs bootstrap over the points (``boot`` resamples, seeded); nan
    where fewer than two distinct rho or a non-positive value."""
    x, y = np.log(np.asarray(rho, float)), np.asarray(values, float)
    if len(set(rho)) < 2 or not np.all(y > 0):
        return math.nan, math.nan, math.nan
    y = np.log(y)
    slope = float(np.polyfit(x, y, 1)[0])
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(boot):
        i = rng.integers(len(x), size=len(x))
        if len(set(x[i])) >= 2:
            draws.append(np.polyfit(x[i], y[i], 1)[0])
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return slope, float(lo), float(hi)


#: a cell's level-j error at the end of stage l counts as above the floor when the same level's error
#: at the end of training (every level trained: no unlearned signal left, what remains is the
#: learner's own sample / optimisation floor) is at most this share of it
FLOOR_SHARE = 0.2
SLOPE_HEADER = ["stage l", "level j", "1 − R² (medians, smallest → largest rho)", "predicted slope",
                "fitted slope [95 % CI]", "local slopes",
                "floor share, median [range over rho]", "fit above the floor [95 % CI] (rho kept)", "verdict"]
FLOOR_TEXT = (f"Floor share: the level's error at the end of training (every level trained, so no unlearned "
              f"signal is left: the learner's own floor) over its error at the end of stage l; the fit above the "
              f"floor keeps the cells where that share is at most {FLOOR_SHARE:g}, and the verdict compares the "
              f"prediction with its interval (holds: inside; shallower / steeper: the interval below / above; "
              f"floor-limited: fewer than 3 values of rho above the floor).")


def verdict(predicted: float, lo: float, hi: float, n_rho: int) -> str:
    """The prediction against a fitted slope's interval: ``holds`` (inside it), ``shallower`` /
    ``steeper`` (the interval below / above it), or ``floor-limited`` where fewer than three values
    of rho are above the floor (no slope can be told from the floor's)."""
    if n_rho < 3 or not (math.isfinite(lo) and math.isfinite(hi)):
        return "floor-limited"
    return "holds" if lo <= predicted <= hi else "shallower" if hi < predicted else "steeper"


def slope_rows(cells, method: str = "bfc") -> list[list[str]]:
    """The theory's gap prediction (issue 13, PAPER_NOTES §5.2): once levels up to l are trained, a
    lower level j's 1 - R^2 scales like (alpha_{l+1} / alpha_j)^2, a log-log slope of 2(l + 1 - j)
    against rho when alpha_l = rho^(l-2).  One row per (stage l < L, level j <= l): the prediction,
    the fitted slope over every (rho, seed) cell with its bootstrap interval, and the local slopes
    between neighbouring rho (of the medians over seeds), which show where the law holds.

    The law is about the error the unlearned levels cause; below it lies the learner's own floor, the
    level's error once every level is trained (the cell's final ``feature_error``).  The *floor
    share* is that final error over the stage-l error (median over the cells, and the range of its
    per-rho medians); the fit is repeated over the cells whose share is at most FLOOR_SHARE, and the
    verdict (:func:`verdict`) reads that fit's interval."""
    cells = [c for c in cells if c.params["method"] == method]
    if not cells:
        return []
    L = max(cells[0].result.stage_end)
    rows = []
    for stage in range(2, L):
        for level in range(2, stage + 1):
            pts = [(float(c.params["target.rho"]), c.result.stage_value(stage, "feature_error", level),
                    float(c.result.feature_error.get(level, math.nan))) for c in cells]
            pts = [(r, v, f) for r, v, f in pts if math.isfinite(v) and v > 0]
            if not pts:
                continue
            slope, lo, hi = fit_slope([r for r, _, _ in pts], [v for _, v, _ in pts])
            rhos = sorted({r for r, _, _ in pts})
            meds = [med([v for r2, v, _ in pts if r2 == r]) for r in rhos]
            local = [f"{math.log(b / a) / math.log(r2 / r1):.2f}" if a > 0 and b > 0 else "–"
                     for (r1, a), (r2, b) in zip(zip(rhos, meds), zip(rhos[1:], meds[1:]))]
            shares = [(r, f / v) for r, v, f in pts if math.isfinite(f)]
            per_rho = [med([q for r2, q in shares if r2 == r]) for r in rhos if any(r2 == r for r2, _ in shares)]
            share = (f"{med([q for _, q in shares]):.2f} [{min(per_rho):.2f}, {max(per_rho):.2f}]" if shares else "n/a")
            above = [(r, v) for r, v, f in pts if math.isfinite(f) and f <= FLOOR_SHARE * v]
            kept = sorted({r for r, _ in above})
            a_slope, a_lo, a_hi = fit_slope([r for r, _ in above], [v for _, v in above])  # nan below 2 rho
            pred = 2 * (stage + 1 - level)
            fit_above = (f"{a_slope:.2f} [{a_lo:.2f}, {a_hi:.2f}] ({len(kept)} of {len(rhos)})" if len(kept) >= 2
                         else f"– ({len(kept)} of {len(rhos)})")
            rows.append([str(stage), str(level), f"{meds[0]:.2g} → {meds[-1]:.2g}", str(pred),
                         f"{slope:.2f} [{lo:.2f}, {hi:.2f}]", ", ".join(local),
                         share, fit_above, verdict(pred, a_lo, a_hi, len(kept))])
    return rows


def summarize(root: Path, figdir: Path, quick: bool = False, command: str = "bfclab experiment gap") -> Section:
    cells = load_cells(root, spec(quick))
    if not cells:
        return Section(NAME, f"No results under `{root}`: run `{command}`.")
    nm = {m: {} for m in METHODS}
    by = {m: {} for m in METHODS}
    fe2 = {m: {} for m in METHODS}
    for c in cells:
        r = float(c.params["target.rho"])
        nm[c.params["method"]].setdefault(r, []).append(c.result.error)
        by[c.params["method"]].setdefault(r, []).append(c)
        fe2[c.params["method"]].setdefault(r, []).append(c.result.feature_error[2])
    nm = {m: v for m, v in nm.items() if v}
    ratio = {"layerwise / bfc": {r: [med(nm["layerwise"][r]) / med(nm["bfc"][r])]
                                 for r in nm.get("bfc", {}) if r in nm.get("layerwise", {})}}
    fig = figdir / "gap.png"
    plot_vs([
        {"lines": nm, "xlabel": "gap ratio rho (alpha_l = rho^(l-2))", "ylabel": "test nMSE", "logx": True},
        {"lines": ratio, "xlabel": "rho", "ylabel": "nMSE ratio", "logx": True},
        {"lines": {m: v for m, v in fe2.items() if v}, "xlabel": "rho", "ylabel": "final layer-2 feature error",
         "logx": True},
    ], fig, title="gap: where backward correction matters")
    rhos = sorted({float(c.params["target.rho"]) for c in cells})
    rows = []
    for r in rhos:
        row = [r] + [spread_ci(final_pairs(by[m][r])) if r in by.get(m, {}) else "" for m in METHODS]
        lw, bf = nm.get("layerwise", {}).get(r), nm.get("bfc", {}).get(r)
        row.append(f"{med(lw) / med(bf):.1f}x" if lw and bf else "")
        rows.append(row)
    seeds = sorted({c.params["seed"] for c in cells})
    md = "\n\n".join([
        f"Command: `{command}` (results in `{root}`).  Default target with alpha_l = rho^(l-2); "
        f"seeds {seeds}; cells show the test nMSE.  {CI_NOTE}",
        f"![gap]({fig.name})",
        table(["rho"] + METHODS + ["layerwise / bfc"], rows),
        diverged_note(root, spec(quick)),
    ])
    slopes = slope_rows(cells)
    if slopes:
        pairs = ", ".join(f"{a:g}→{b:g}" for a, b in zip(rhos, rhos[1:]))
        n_cells = len([c for c in cells if c.params["method"] == "bfc"])
        md += "\n\n" + "\n\n".join([
            f"**Gap slopes** (the theory's prediction, issue 13): bfc's feature error 1 − R² of level j at the end "
            f"of stage l against rho, log-log; prediction 2(l + 1 − j) (the next, still unlearned signal relative to "
            f"level j's own).  Fitted over {n_cells} cells ({len(rhos)} values of rho × seeds {seeds}); 95 % pairs-"
            f"bootstrap interval; local slopes between neighbouring rho ({pairs}) from the medians over seeds.",
            FLOOR_TEXT, table(SLOPE_HEADER, slopes)])
    return Section(NAME, md)


# ---- experiment ``gap-slopes``: the prediction tested with more rho, seeds and a 5-level target ----

SLOPES = "gap-slopes"
SLOPE_RHOS = [0.03, 0.05, 0.07, 0.1, 0.14, 0.2, 0.3, 0.5]
SLOPE_LEVELS = [4, 5]  # the default target (levels 2..4) and the same with a fifth level


def slopes_spec(quick: bool = False) -> dict:
    """bfc alone (the prediction is about its stage ends), 8 values of rho, 3 seeds, levels 2..4 and
    2..5 (everything else the default target)."""
    base = {k: dict(v) for k, v in QUICK_BASE.items()} if quick else {}
    rhos, seeds = (SLOPE_RHOS[::4], [0]) if quick else (SLOPE_RHOS, [0, 1, 2])
    return {"name": SLOPES, "base": base,
            "grid": {"target.rho": rhos, "target.L": SLOPE_LEVELS, "method": ["bfc"], "seed": seeds}}


def slopes_summary(root: Path, figdir: Path, quick: bool = False, command: str = "bfclab experiment gap-slopes") -> Section:
    cells = load_cells(root, slopes_spec(quick))
    if not cells:
        return Section(SLOPES, f"No results under `{root}`: run `{command}`.")
    seeds = sorted({c.params["seed"] for c in cells})
    rhos = sorted({float(c.params["target.rho"]) for c in cells})
    parts = [f"Command: `{command}` (results in `{root}`).  bfc's feature error 1 − R² of level j at the end of stage "
             f"l against rho (alpha_l = rho^(l-2)), log-log, over {len(rhos)} values of rho ({', '.join(map(str, rhos))}) "
             f"× seeds {seeds}; the theory predicts a slope of 2(l + 1 − j) (issue 13; PAPER_NOTES §5.2).  95 % "
             f"pairs-bootstrap interval over the cells; local slopes between neighbouring rho from the medians "
             f"over seeds.  {FLOOR_TEXT}"]
    for L in sorted({int(c.params["target.L"]) for c in cells}):
        sub = [c for c in cells if int(c.params["target.L"]) == L]
        rows = slope_rows(sub)
        parts += [f"**Levels 2..{L}** ({len(sub)} cells):",
                  table(SLOPE_HEADER, rows)]
    parts.append(diverged_note(root, slopes_spec(quick)))
    return Section(SLOPES, "\n\n".join(p for p in parts if p))
