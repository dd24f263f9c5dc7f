"""Experiment ``window``: how deep must the backward correction reach? (PAPER_NOTES §5.4)

Stage-wise training on a target with 4 hidden levels (levels 2..5, output degree 16) where, at
each stage, only the new level and the k levels right below it train (``window:k``).  k = 0 is
layerwise, k = L-2 reaches every level (= ``bfc``).  Reports final nMSE and per-layer feature
error against k, and names the smallest k whose median nMSE is within 2x of full bfc.
"""

from __future__ import annotations

from pathlib import Path

from ..plots import plot_vs
from ..sweep import flatten
from .common import CI_NOTE, QUICK_BASE, Section, diverged_note, final_pairs, load_cells, med, spread, spread_ci, table

NAME = "window"
# A deeper target: levels 2..5 (degree 16).  d and k are smaller than the default target's to
# keep a run near a minute on 2 cores.
TARGET = {"L": 5, "d": 16, "widths": [3]}
N_TRAIN = 50_000  # the degree-16 target over-fits badly at 20 000 samples


def ks(L: int) -> list[int]:
    return list(range(0, L - 1))


def method_of(k: int, L: int) -> str:
    return "bfc" if k == L - 2 else f"window:{k}"


def spec(quick: bool = False) -> dict:
    base = {k: dict(v) for k, v in QUICK_BASE.items()} if quick else {}
    base.setdefault("target", {}).update({"L": TARGET["L"]} if quick else TARGET)
    if not quick:
        base["data"] = {"n_train": N_TRAIN}
    L = TARGET["L"]
    return {"name": NAME, "base": base,
            "grid": {"method": [method_of(k, L) for k in ks(L)], "seed": [0, 1, 2]}}


def summarize(root: Path, figdir: Path, quick: bool = False, command: str = "bfclab experiment window") -> Section:
    L = TARGET["L"]
    cells = load_cells(root, spec(quick))
    if not cells:
        return Section(NAME, f"No results under `{root}`: run `{command}`.")
    by_k = {k: [c for c in cells if c.params["method"] == method_of(k, L)] for k in ks(L)}
    by_k = {k: cs for k, cs in by_k.items() if cs}
    levels = list(range(2, L + 1))
    nm = {k: [c.result.error for c in cs] for k, cs in by_k.items()}
    fe = {l: {k: [c.result.feature_error[l] for c in cs] for k, cs in by_k.items()} for l in levels}
    fig = figdir / "window.png"
    labels = [f"{k}\n({method_of(k, L)})" for k in by_k]
    plot_vs([
        {"lines": {"test nMSE": nm}, "xlabel": "backward window k", "ylabel": "test nMSE",
         "xticks": (list(by_k), labels)},
        {"lines": {f"layer {l}": fe[l] for l in levels}, "xlabel": "backward window k",
         "ylabel": "final feature error (1 - R$^2$)", "xticks": (list(by_k), labels)},
    ], fig, title=f"window: target with levels 2..{L} (degree {2 ** (L - 1)})")
    rows = [[k, method_of(k, L), spread_ci(final_pairs(by_k[k]))] + [spread(fe[l][k]) for l in levels] for k in by_k]
    full = med(nm[L - 2]) if L - 2 in nm else float("nan")
    within = [k for k in by_k if med(nm[k]) <= 2 * full]
    smallest = min(within) if within else None
    verdict = (f"Smallest k whose median nMSE is within 2x of full bfc ({full:.2e}): **k = {smallest}**"
               if smallest is not None else "No window reaches 2x of full bfc.")
    md = "\n\n".join([
        f"Command: `{command}` (results in `{root}`).  Target: levels 2..{L}; the runs' config "
        f"differs from the defaults in {_describe(spec(quick)['base'])}; seeds 0-2.",
        f"![window]({fig.name})",
        table(["k", "method", "test nMSE"] + [f"fe layer {l}" for l in levels], rows),
        CI_NOTE,
        verdict,
        diverged_note(root, spec(quick)),
    ])
    return Section(NAME, md)


def _describe(base: dict) -> str:
    """'target.L = 5, target.d = 16, ...' from a nested base mapping."""
    flat: dict = {}
    flatten("", base, flat)
    return ", ".join(f"{k} = {v}" for k, v in flat.items())
