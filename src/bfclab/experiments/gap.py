"""Experiment ``gap``: bfc, layerwise and e2e as the information gap rho varies (PAPER_NOTES §2.5,
§9.7).  With alpha_l = rho^(l-2): a small rho (large gap) leaves the lower layers almost right
after their own stage, so backward correction matters less; rho near 1 removes the curriculum
that stage-wise training relies on.  The notes warn not to assume a monotone picture.
"""

from __future__ import annotations

from pathlib import Path

from ..plots import plot_vs
from .common import CI_NOTE, QUICK_BASE, Section, diverged_note, final_pairs, load_cells, med, spread, spread_ci, table

NAME = "gap"
RHOS = [0.05, 0.1, 0.2, 0.3, 0.5, 0.8]
METHODS = ["bfc", "layerwise", "e2e"]


def spec(quick: bool = False) -> dict:
    base = {k: dict(v) for k, v in QUICK_BASE.items()} if quick else {}
    return {"name": NAME, "base": base,
            "grid": {"target.rho": RHOS, "method": METHODS, "seed": [0, 1] if not quick else [0]}}


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
    return Section(NAME, md)
