"""Experiments ``rhm`` and ``staircase`` (issue 16): bfclab's growth methods on other hierarchical
targets than the paper's (PAPER_NOTES §4.2, §5.3-§5.4 for the methods, §7.3 for the measurements),
each against kernels, with 3 seeds, and each paper's own claim stated next to bfclab's measurement.

* ``rhm``: the Random Hierarchy Model (Cagnetta et al., PRX 2024; :mod:`bfclab.targets.rhm`) with
  v = n_c = 8 symbols and classes, patches of s = 2, L = 3 levels, m in {3, 4} synonyms.  A CNN
  of L blocks (kernel = stride = s, width 256) grown by ``bfc`` / ``layerwise`` / ``e2e``, the same
  budget as an MLP trained ``e2e``, and exact KRR with the RBF and two-layer ReLU NTK kernels on the
  one-hot inputs.  Its paper's claim: a deep CNN needs P* ~ n_c m^L training points, where
  shallow and kernel methods need far more.
* ``staircase``: f(x) = x1 + x1x2 + x1x2x3 + x1x2x3x4 on {±1}^30 (Abbe, Boix-Adsera, Misiakiewicz,
  COLT 2022; :mod:`bfclab.targets.staircase`).  An MLP of 4 blocks (width 256) grown by the three
  methods, a two-layer ReLU net on the same step budget, exact KRR with a degree-4 polynomial and
  an RBF kernel.  Its paper's claim: SGD on neural networks learns a staircase (every step a leap of
  one) with a number of samples and steps that grows mildly with d, whereas a kernel must fit every
  degree-4 monomial of the d inputs (C(30, 4) = 27 405 of them); below that, kernels stay near the
  degree-3 floor 1/4 (Parseval).

The training settings (Adam, lr 3e-3, batch 128, 1000 steps a stage, width 256) were set before
these runs from one trial run per target at one n (`bfclab train`, seed 0), not tuned on their
test sets; the ridge of every kernel is chosen on a validation split of its own training data.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..config import TargetConfig
from ..plots import plot_vs
from ..targets import make_target
from .common import CI_NOTE, Section, conditions, diverged_note, final_pairs, load_cells, med, spread_ci, table

TRAIN = {"steps_per_stage": 1000, "batch_size": 128, "lr": 3e-3, "log_every": 250}
QUICK_TRAIN = {"steps_per_stage": 40, "batch_size": 64, "lr": 3e-3, "log_every": 20}
SEEDS = [0, 1, 2]

RHM_OPTIONS = {"v": 8, "s": 2, "L": 3, "n_c": 8}
RHM_QUICK_OPTIONS = {"v": 4, "s": 2, "L": 3, "n_c": 4}
RHM_NS = {3: [128, 256, 512, 1024, 2048, 4096], 4: [128, 256, 512, 1024, 2048, 4096, 8192]}
RHM_QUICK_NS = {3: [128, 256]}
RHM_TEST = 4000  # the m = 3 model has 17 496 distinct inputs: train + test must stay within half
RHM_THRESHOLD = 0.1  # P*: the smallest n whose median test error is at most this

STAIRCASE_OPTIONS = {"d": 30, "k": 4}
STAIRCASE_QUICK_OPTIONS = {"d": 14, "k": 3}  # 2^14 points: room for distinct train and test points
STAIRCASE_NS = [250, 500, 1000, 2000, 4000, 8000, 16000]
STAIRCASE_QUICK_NS = [200, 400]
STAIRCASE_THRESHOLD = 1e-2

DEEP = ["bfc", "layerwise", "e2e"]


WIDTH, QUICK_WIDTH = 256, 32


def _net(kind: str, quick: bool, blocks: int | None = None) -> dict:
    return {"kind": kind, "width": QUICK_WIDTH if quick else WIDTH, **({"blocks": blocks} if blocks else {})}


def rhm_spec(quick: bool = False) -> dict:
    opts, ns = (RHM_QUICK_OPTIONS, RHM_QUICK_NS) if quick else (RHM_OPTIONS, RHM_NS)
    seeds = [0] if quick else SEEDS
    base = {"target": {"kind": "rhm", "options": dict(opts)}, "learner": _net("cnn", quick),
            "data": {"n_test": 500 if quick else RHM_TEST, "n_monitor": 500 if quick else RHM_TEST},
            "train": dict(QUICK_TRAIN if quick else TRAIN)}
    kernels = ["krr-rbf"] if quick else ["krr-rbf", "krr-ntk-relu"]
    grids = []
    for m, n_list in ns.items():
        common = {"target.options.m": [m], "data.n_train": n_list, "seed": seeds}
        grids += [{"method": DEEP, **common}, {"method": ["e2e"], "learner.kind": ["mlp"], **common},
                  {"method": kernels, **common}]
    return {"name": "rhm", "base": base, "grid": grids}


def staircase_spec(quick: bool = False) -> dict:
    opts, ns = (STAIRCASE_QUICK_OPTIONS, STAIRCASE_QUICK_NS) if quick else (STAIRCASE_OPTIONS, STAIRCASE_NS)
    train = dict(QUICK_TRAIN if quick else TRAIN)
    k = opts["k"]
    base = {"target": {"kind": "staircase", "options": dict(opts)}, "learner": _net("mlp", quick, k),
            "data": {"n_test": 1000 if quick else 20000, "n_monitor": 1000 if quick else 4000}, "train": train}
    two_layer = {"steps": train["steps_per_stage"] * k, "batch_size": train["batch_size"], "lr": train["lr"],
                 "width": QUICK_WIDTH if quick else WIDTH}
    return {"name": "staircase", "base": base,
            "baseline": {"twolayer-relu": two_layer, "krr-poly": {"degree": k}},
            "grid": [{"method": DEEP + ["twolayer-relu", "krr-poly", "krr-rbf"], "data.n_train": ns,
                      "seed": [0] if quick else SEEDS}]}


def label(params: dict) -> str:
    m = params["method"]
    return f"{m} (mlp)" if params.get("learner.kind") == "mlp" else m


def crossing(points: dict[int, list[float]], threshold: float) -> tuple[str, float]:
    """(the smallest grid n whose median is <= threshold as text, the n at which the median curve
    crosses the threshold, interpolated linearly in log n and log error between that grid point and
    the one below).  Censored crossings have no value (nan): "<= n" when the smallest grid point
    already succeeds, "> N" when no grid point does.  A diverged run counts as a failure (inf)."""
    ns = sorted(points)
    meds = [med(points[n]) for n in ns]
    for i, (n, v) in enumerate(zip(ns, meds)):
        if v <= threshold:
            if i == 0:
                return f"<= {n}", math.nan
            n0, v0 = ns[i - 1], meds[i - 1]
            if v <= 0 or not 0 < v0 < math.inf:
                return str(n), float(n)
            f = (math.log(v0) - math.log(threshold)) / (math.log(v0) - math.log(v))
            return str(n), math.exp(math.log(n0) + f * (math.log(n) - math.log(n0)))
    return f"> {ns[-1]}" if ns else "n/a", math.nan


def p_star_text(points: dict[int, list[float]], threshold: float) -> str:
    """P* as text: the interpolated crossing, or the censored bound ("<= n", "> N")."""
    label_, value = crossing(points, threshold)
    return f"{value:.0f}" if value == value else label_


def curves_of(cells, diverged=()) -> tuple[dict, dict]:
    """({method: {n: [error per seed]}}, {method: {n: [cell]}}); a diverged cell enters the
    curves (the medians, P*) as a failure, error inf, and is not among the runs (the spreads)."""
    curves: dict[str, dict[int, list[float]]] = {}
    runs: dict[str, dict[int, list]] = {}
    for c in cells:
        key, n = label(c.params), int(c.params["data.n_train"])
        curves.setdefault(key, {}).setdefault(n, []).append(c.result.error)
        runs.setdefault(key, {}).setdefault(n, []).append(c)
    for c in diverged:
        curves.setdefault(label(c.params), {}).setdefault(int(c.params["data.n_train"]), []).append(math.inf)
    return curves, runs


def error_table(curves: dict, runs: dict, threshold: float, what: str) -> str:
    ns = sorted({n for v in curves.values() for n in v})
    rows = [[m] + [spread_ci(final_pairs(runs.get(m, {}).get(n, []))) if runs.get(m, {}).get(n) else ""
                   for n in ns] + [crossing(curves[m], threshold)[0]] for m in curves]
    return table(["method"] + [f"n = {n}" for n in ns] + [f"smallest n, {what} <= {threshold:g}"], rows)


def level_table(runs: dict, methods: list[str]) -> str:
    """Per deep method at its largest n: each block's level errors (1 - R^2 of the best affine map
    from the block's output to a level's true features) at the end of the block's own stage and at
    the end of training (median over seeds)."""
    rows = []
    for m in methods:
        if m not in runs:
            continue
        n = max(runs[m])
        cells = runs[m][n]
        final = [c.result.extra.get("level_error") or {} for c in cells]
        blocks = sorted({int(b) for f in final for b in f})
        for b in blocks:
            levels = sorted({int(lv) for f in final for lv in (f.get(b) or f.get(str(b)) or {})})
            own = [c.result.stage_end.get(b, {}).get("level_error", {}) for c in cells]
            cols = []
            for lv in levels:
                at_own = med([float(o.get(lv, o.get(str(lv), math.nan))) for o in own])
                at_end = med([float((f.get(b) or f.get(str(b)) or {}).get(lv, (f.get(b) or f.get(str(b)) or {})
                                                                              .get(str(lv), math.nan))) for f in final])
                cols.append(f"L{lv}: {at_own:.3f} → {at_end:.3f}" if m != "e2e" and "(mlp)" not in m
                            else f"L{lv}: {at_end:.3f}")
            rows.append([m, n, b, "; ".join(cols)])
    return table(["method", "n", "block", "level error: end of own stage → end"], rows)


def rhm_summary(root: Path, figdir: Path, quick: bool = False, command: str = "bfclab experiment rhm") -> Section:
    sp = rhm_spec(quick)
    cells, bad = load_cells(root, sp), load_cells(root, sp, diverged=True)
    if not cells:
        return Section("rhm", f"No results under `{root}`: run `{command}`.")
    opts = sp["base"]["target"]["options"]
    m_of = lambda c: int(c.params["target.options.m"])  # noqa: E731
    ms = sorted({m_of(c) for c in cells})
    panels, parts = [], [f"Command: `{command}` (results in `{root}`); every method of one m sees the same "
                         f"training samples and test set; training and test sets are disjoint, each of distinct "
                         f"inputs (`bfclab.targets.protocol.split`). {CI_NOTE}"]
    curves_m: dict[int, dict] = {}
    for m in ms:
        curves, runs = curves_of([c for c in cells if m_of(c) == m], [c for c in bad if m_of(c) == m])
        curves_m[m] = curves
        t = make_target(TargetConfig(kind="rhm", options={**opts, "m": m}))
        chance = t.floors()["chance"]
        panels.append({"lines": curves, "xlabel": "n (training points)", "ylabel": "test error", "logx": True,
                       "hlines": {"chance": chance, f"P* threshold {RHM_THRESHOLD:g}": RHM_THRESHOLD},
                       "styles": {k: "--" for k in curves if k.startswith("krr")}, "title": f"m = {m}",
                       "logy": False})
        predicted = opts["n_c"] * m ** opts["L"]
        parts += [f"**m = {m}** (v = {opts['v']}, n_c = {opts['n_c']}, s = {opts['s']}, L = {opts['L']}: "
                  f"{t.size} distinct inputs; n_c m^L = {predicted}). Test error (0-1):",
                  error_table(curves, runs, RHM_THRESHOLD, "error"),
                  f"Per block and level (m = {m}, the largest n):", level_table(runs, DEEP + ["e2e (mlp)"])]
    fig = figdir / "rhm.png"
    plot_vs(panels, fig, title="RHM: test error against n (median, min..max over seeds)")
    parts.insert(1, f"![rhm]({fig.name})")
    pstar = {m: {k: crossing(v, RHM_THRESHOLD)[1] for k, v in curves_m[m].items()} for m in ms}
    text = {m: {k: p_star_text(v, RHM_THRESHOLD) for k, v in curves_m[m].items()} for m in ms}
    if len(ms) >= 2:
        lo, hi = ms[0], ms[-1]
        ratio = (hi / lo) ** opts["L"]
        rows = [[k, text[lo].get(k, "n/a"), text[hi][k],
                 f"{pstar[hi][k] / pstar[lo][k]:.2f}" if pstar[lo].get(k, math.nan) > 0 and pstar[hi][k] > 0
                 else "n/a (censored)"] for k in text[hi]]
        parts += [f"P* (the n at which the median test error crosses {RHM_THRESHOLD:g}, interpolated in log-log "
                  f"between grid points; a bound where the grid does not bracket it) and its growth from m = {lo} "
                  f"to m = {hi}; the paper's P* ~ n_c m^L predicts a ratio of ({hi}/{lo})^{opts['L']} = {ratio:.2f} "
                  f"(n_c m^L = {opts['n_c'] * lo ** opts['L']} and {opts['n_c'] * hi ** opts['L']}):",
                  table(["method", f"P* (m = {lo})", f"P* (m = {hi})", "ratio"], rows),
                  rhm_claim(pstar, text, ms, opts)]
    parts += [conditions(root), diverged_note(root, sp, counted=True)]
    return Section("rhm", "\n\n".join(p for p in parts if p))


def rhm_claim(pstar: dict, text: dict, ms: list[int], opts: dict) -> str:
    """The RHM paper's claim next to the measured P* (exact ones in ratios, bounds as bounds)."""
    lo, hi = ms[0], ms[-1]
    exact = lambda k: pstar[lo].get(k, math.nan) > 0 and pstar[hi].get(k, math.nan) > 0  # noqa: E731
    ratios = ", ".join(f"{pstar[hi][k] / pstar[lo][k]:.2f} ({k})" for k in DEEP if exact(k)) or "n/a (censored)"
    scaled = ", ".join(f"{pstar[m]['bfc'] / (opts['n_c'] * m ** opts['L']):.1f} (m = {m})" for m in ms
                       if pstar[m].get("bfc", math.nan) > 0)
    kernels = sorted(k for k in text[hi] if k.startswith("krr"))
    reached = [k for k in kernels if any(pstar[m].get(k, math.nan) > 0 or text[m].get(k, "").startswith("<=")
                                         for m in ms)]
    ktext = "; ".join(f"{k}: " + ", ".join(f"{text[m].get(k, 'n/a')} (m = {m})" for m in ms) for k in kernels)
    verdict = ("none of the kernels reaches it within the grid" if kernels and not reached else
               f"{', '.join(reached)} reach it" if reached else "no kernel was run")
    return ("**The paper's claim against this measurement.** Cagnetta et al.: a deep CNN learns the RHM from "
            "P* ~ n_c m^L examples, while shallow networks and kernels need many more.  Here the CNN's P* grows "
            f"from m = {lo} to m = {hi} by {ratios} (predicted {(hi / lo) ** opts['L']:.2f})"
            + (f"; bfc's P* is {scaled} times n_c m^L" if scaled else "")
            + "; the MLP's P* is " + ", ".join(f"{text[m].get('e2e (mlp)', 'n/a')} (m = {m})" for m in ms)
            + f"; the kernels' P* ({ktext}): {verdict} (error {RHM_THRESHOLD:g}).")


def staircase_summary(root: Path, figdir: Path, quick: bool = False,
                      command: str = "bfclab experiment staircase") -> Section:
    sp = staircase_spec(quick)
    cells, bad = load_cells(root, sp), load_cells(root, sp, diverged=True)
    if not cells:
        return Section("staircase", f"No results under `{root}`: run `{command}`.")
    opts = sp["base"]["target"]["options"]
    t = make_target(TargetConfig(kind="staircase", options=opts))
    floors = {k: v for k, v in t.floors().items() if k.startswith("degree") and v > 0}
    curves, runs = curves_of(cells, bad)
    fig = figdir / "staircase.png"
    plot_vs([{"lines": curves, "xlabel": "n (training samples)", "ylabel": "test nMSE", "logx": True, "logy": True,
              "hlines": floors, "styles": {k: "--" for k in curves if k not in DEEP}}], fig,
            title=f"staircase, d = {opts['d']}, k = {opts['k']} (median, min..max over seeds)")
    d, k = opts["d"], opts["k"]
    parts = [f"Command: `{command}` (results in `{root}`); every method sees the same samples and test set. "
             f"{CI_NOTE}", f"![staircase]({fig.name})",
             error_table(curves, runs, STAIRCASE_THRESHOLD, "nMSE"),
             "Error floors (exact, by Parseval): " + "; ".join(f"{k_} = {v:.3g}" for k_, v in floors.items())
             + f". A kernel must fit the degree-{k} monomial among C({d}, {k}) = {math.comb(d, k)} of its kind.",
             claim_text(curves, runs, floors, d, k),
             "Per block and level (the largest n). Once block 1 has found the support, every level is an affine "
             f"function of its ReLU features (all {2 ** k} functions of the {k} support bits are), so here the level "
             "errors say that the support is found, not how the monomials are composed:",
             level_table(runs, DEEP), conditions(root),
             diverged_note(root, sp, counted=True)]
    return Section("staircase", "\n\n".join(p for p in parts if p))


def claim_text(curves: dict, runs: dict, floors: dict, d: int, k: int) -> str:
    """The staircase paper's claim next to the measured smallest n and the kernels' errors, each
    kernel's error at its largest n set against the degree-(k-1) floor."""
    deep = {m: crossing(curves[m], STAIRCASE_THRESHOLD)[0] for m in DEEP if m in curves}
    kern = {m: v for m, v in curves.items() if m.startswith("krr")}
    top = max((n for v in kern.values() for n in v), default=None)
    at_top = {m: med(v[top]) for m, v in kern.items() if top in v}
    floor = floors.get(f"degree<={k - 1}")
    if floor is None or not at_top:
        versus = ""
    elif all(e >= floor for e in at_top.values()):
        versus = (f" (at or above the degree-{k - 1} floor {floor:.2f}, the error of the best predictor of degree "
                  f"<= {k - 1}: no kernel does better yet than one ignoring the degree-{k} term)")
    else:
        below = ", ".join(m for m, e in at_top.items() if e < floor)
        versus = f" (the degree-{k - 1} floor is {floor:.2f}; {below} below it: part of the degree-{k} term fitted)"
    return ("**The paper's claim against this measurement.** Abbe, Boix-Adsera and Misiakiewicz: a staircase (each "
            "step a leap of one) is learned by SGD on neural networks with samples and steps polynomial and mild in "
            f"d, where a kernel needs on the order of d^{k} samples.  Here the smallest n reaching nMSE "
            f"{STAIRCASE_THRESHOLD:g}: " + ", ".join(f"{m} {v}" for m, v in deep.items())
            + (f"; the kernels at n = {top}: " + ", ".join(f"{m} {e:.2f}" for m, e in at_top.items()) if at_top else "")
            + versus + ".")
