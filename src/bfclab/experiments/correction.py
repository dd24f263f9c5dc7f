"""Experiment ``correction``: how per-layer feature errors evolve under bfc, layerwise and e2e
(PAPER_NOTES §5.1-§5.3, §7.3 "BFC signature").

Under ``bfc`` the lower layers keep training after higher ones are added, so the error they
picked up by over-fitting the higher-level signal in their own stage is corrected; under
``layerwise`` they are frozen and the error stays.  The figure shows per-layer feature error
against step (median over seeds, band = min..max), the table its value at every stage boundary,
and the check asks for the correction on every seed.  With ``task="classification"`` the same
experiment runs on sign labels with the logistic loss (issue item 5).
"""

from __future__ import annotations

from pathlib import Path

from ..plots import plot_feature_curves
from .common import (CI_NOTE, QUICK_BASE, Section, checks_md, diverged_note, final_pairs, load_cells, spread,
                     spread_ci, stage_pairs, table)

NAME = "correction"
METHODS = ["bfc", "layerwise", "e2e"]


def spec(quick: bool = False, task: str = "regression") -> dict:
    base = {k: dict(v) for k, v in QUICK_BASE.items()} if quick else {}
    if task != "regression":
        base.setdefault("data", {})["task"] = task
    return {"name": NAME if task == "regression" else "classification", "base": base,
            "grid": {"method": METHODS, "seed": [0, 1, 2]}}


def summarize(root: Path, figdir: Path, quick: bool = False, task: str = "regression",
              command: str = "bfclab experiment correction") -> Section:
    cells = load_cells(root, spec(quick, task))
    by_method: dict[str, list] = {m: [c for c in cells if c.params["method"] == m] for m in METHODS}
    by_method = {m: cs for m, cs in by_method.items() if cs}
    if not by_method:
        return Section(NAME, f"No results under `{root}`: run `{command}`.")
    first = next(iter(by_method.values()))[0].result
    ek = first.error_name
    L = max(first.stage_end)
    levels = list(range(2, L + 1))
    name = "correction" if task == "regression" else "classification"
    fig = figdir / f"{name}.png"
    plot_feature_curves({m: [c.records() for c in cs] for m, cs in by_method.items()}, fig,
                        title=f"{name}: per-layer feature error (median over seeds, band = min..max)")
    rows = []
    for m, cs in by_method.items():
        for s in levels:
            cells_fe = [spread([c.result.stage_value(s, "feature_error", l) for c in cs]).replace("n/a", "")
                        for l in levels]  # empty where the level is not active yet
            rows.append([m, s, spread_ci(stage_pairs(cs, s)), *cells_fe])
    head = ["method", "end of stage", ek.replace("_", " ")] + [f"fe layer {l}" for l in levels]
    # output-term errors compare with alpha_l |S*_l|^2: a regression quantity (a classifier's logit has
    # no such scale), so classification tables leave them out
    term_levels = levels if task == "regression" else []
    final = [[m, spread_ci(final_pairs(cs)),
              *[spread([c.result.term_error.get(l, float("nan")) for c in cs]) for l in term_levels], len(cs)]
             for m, cs in by_method.items()]
    checks = []
    if "bfc" in by_method:
        ratios = [c.result.stage_value(2, "feature_error", 2) / max(c.result.feature_error[2], 1e-300)
                  for c in by_method["bfc"]]
        checks.append({"check": "bfc: layer-2 feature error falls >= 2x from end of stage 2 to the end, every seed",
                       "pass": all(r >= 2 for r in ratios), "value": ", ".join(f"{r:.1f}x" for r in ratios)})
    if "layerwise" in by_method:
        flat = [(c.result.stage_value(2, "feature_error", 2), c.result.feature_error[2])
                for c in by_method["layerwise"]]
        checks.append({"check": "layerwise: layer-2 feature error flat after stage 2, every seed",
                       "pass": all(a == b for a, b in flat),
                       "value": ", ".join(f"{a:.4f} -> {b:.4f}" for a, b in flat)})
    md = "\n\n".join([
        f"Command: `{command}` (results in `{root}`).  Figure: per-layer feature error "
        f"(1 - R² of the best affine map from learned to true features) against step; dashed lines "
        f"are stage boundaries.",
        f"![{name}]({fig.name})",
        (f"Final error and each level's output-term error E[(c_l Σσ(S_l) − α_l‖S*_l‖²)²] / Var(G*) "
         f"(median [min, max] over seeds).  {CI_NOTE}" if term_levels else f"Final error.  {CI_NOTE}"),
        table(["method", ek.replace("_", " ")] + [f"term err layer {l}" for l in term_levels] + ["seeds"], final),
        "At every stage boundary (median [min, max] over seeds):",
        table(head, rows),
        checks_md(checks),
        diverged_note(root, spec(quick, task)),
    ])
    return Section(name, md)
