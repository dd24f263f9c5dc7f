"""Benchmark of the core issue: bfc vs layerwise vs e2e on the default target, 3 seeds, both learners.

    .venv/bin/python bench/core_modes.py [--out runs/bench_core] [--workers 2] [--seeds 0,1,2] [--overwrite]

Also the paper learner's components taken away one at a time under bfc (``ABLATIONS``: the K-W
tie, the SVD warm start, the W regulariser, the wide branch's width; issue 11, part 4: "which
component hurts").  ``--overwrite`` trains again the stored cells of an older config (say, after a
default changed) instead of stopping.

Runs the cells through the resumable sweep runner, then writes ``bench/results/core_modes.json``
and ``docs/bench_core.md`` (a Markdown table and the checks of the core issue, each PASS/FAIL
with its numbers).  Every number in the Markdown comes from the run directories.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bfclab.results import read_json, write_json  # noqa: E402
from bfclab.experiments import correction  # noqa: E402
from bfclab.sweep import expand, run_sweep  # noqa: E402

METHODS = ["bfc", "layerwise", "e2e"]
KINDS = ["simple", "paper"]
#: the paper learner under bfc with one component changed: name -> (grid overrides, what changes)
ABLATIONS: dict[str, tuple[dict, str]] = {
    "no K-W tie": ({"train.lam_kw": [0.0]}, "lam_kw 1 -> 0: K and W untied after the warm start"),
    "no SVD warm start": ({"train.warm_start": [False]}, "K trained from its own init, never set from W"),
    "warm start mid-stage": ({"train.warm_start_frac": [0.5]}, "K set from W half-way through the stage, then trained"),
    "no W regulariser": ({"train.lam_w": [0.0]}, "lam_w 1e-4 -> 0"),
    "narrow W (m = 16)": ({"learner.m": [16]}, "wide branch m 64 -> 16"),
    "wide W (m = 256)": ({"learner.m": [256]}, "wide branch m 64 -> 256"),
}


def cell_results(root: Path, grid, kind: str) -> dict:
    out = {}
    for c in grid.cells:
        p = c.params
        out[(kind, p["method"], p["seed"])] = read_json(root / "cells" / c.id / "result.json")
    return out


def ci_text(res: dict) -> str:
    """A run's test nMSE with its 95 % interval over test blocks (nan for a diverged run)."""
    t = res.get("test_nmse", float("nan"))
    ci = res.get("intervals", {}).get("test_nmse")
    return f"{t:.2e} [{ci[0]:.1e}, {ci[1]:.1e}]" if ci and t == t else f"{t:.2e}"


def fe(res: dict, stage: int, level: int) -> float:
    """Feature error of ``level`` at the end of ``stage`` (nan for a diverged run)."""
    return res.get("stage_end", {}).get(str(stage), {}).get("feature_error", {}).get(str(level), float("nan"))


def _rel(p: Path) -> Path:
    return p.relative_to(ROOT) if p.is_relative_to(ROOT) else p


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "results" / "core-paper"), help="paper-learner cells")
    ap.add_argument("--results", default=str(ROOT / "results"), help="results folder of `bfclab experiment`")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--overwrite", action="store_true", help="train again cells stored under an older config")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    # The simple-learner cells are exactly the `correction` experiment's (shared, resumable);
    # the paper-learner cells differ only in learner.kind.
    simple = expand({**correction.spec(), "grid": {"method": METHODS, "seed": seeds}})
    paper = expand({"name": "core-paper", "grid": {"method": METHODS, "seed": seeds, "learner.kind": ["paper"]}})
    # ablation of the default's learnable output scales (bfc only)
    fixed = expand({"name": "core-fixed-scales", "grid": {"method": ["bfc"], "seed": seeds,
                                                          "learner.learn_scales": [False]}})
    ablations = expand({"name": "core-paper-ablations",
                        "grid": [{"method": ["bfc"], "seed": seeds, "learner.kind": ["paper"], **over}
                                 for over, _ in ABLATIONS.values()]})
    roots = {"simple": Path(args.results) / "correction", "paper": Path(args.out),
             "simple, fixed scales": Path(args.results) / "core-fixed-scales",
             "ablations": Path(args.results) / "core-paper-ablations"}
    res = {}
    for kind, grid in (("simple", simple), ("paper", paper), ("simple, fixed scales", fixed)):
        run_sweep(grid, roots[kind], workers=args.workers, overwrite=args.overwrite)
        res.update(cell_results(roots[kind], grid, kind))
    run_sweep(ablations, roots["ablations"], workers=args.workers, overwrite=args.overwrite)
    abl: dict[str, list[dict]] = {}
    for c in ablations.cells:
        name = next(n for n, (over, _) in ABLATIONS.items()
                    if all(c.params.get(k) == v[0] for k, v in over.items()))
        abl.setdefault(name, []).append(read_json(roots["ablations"] / "cells" / c.id / "result.json"))
    cfg0 = res[("simple", "bfc", seeds[0])]["config"]

    summary: dict = {"seeds": seeds, "methods": {}}
    lines = [
        "# Core benchmark: bfc vs layerwise vs e2e on the default target",
        "",
        "Produced by `.venv/bin/python bench/core_modes.py` (also `make bench`); raw runs in "
        f"`{_rel(roots['simple'])}` (simple learner, shared with `bfclab experiment correction`) and "
        f"`{_rel(roots['paper'])}` (paper learner) and `{_rel(roots['simple, fixed scales'])}` (output scales "
        f"fixed at alpha_l).  Default target: d = {cfg0['target']['d']}, levels 2-{cfg0['target']['L']}, "
        f"k = {cfg0['target']['widths'][0]}, gap rho = {cfg0['target']['rho']}, n_train = {cfg0['data']['n_train']}, "
        f"n_test = {cfg0['data']['n_test']}, target seed {cfg0['target']['seed']}.  "
        "Same architecture and step budget for every method.  Test nMSE per seed with its 95 % interval over "
        "blocks of the test set.",
        "",
        "| learner | method | test nMSE per seed | median | train nMSE (median) | layer-2 fe: end of stage 2 -> end | s/run (median) |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind, m in [(k, m) for k in KINDS for m in METHODS] + [("simple, fixed scales", "bfc")]:
        rs = [res[(kind, m, s)] for s in seeds]
        tests = [r["test_nmse"] for r in rs]  # nan for a diverged run
        ok = [t for t in tests if t == t]
        med = statistics.median(ok) if ok else float("nan")
        fe2 = [(fe(r, 2, 2), r.get("feature_error", {}).get("2", float("nan"))) for r in rs]
        summary["methods"][f"{kind}/{m}"] = {
            "test_nmse": tests, "median_test_nmse": med,
            "train_nmse": [r["train_nmse"] for r in rs],
            "fe2_end_stage2": [a for a, _ in fe2], "fe2_final": [b for _, b in fe2],
            "feature_error_final": [r.get("feature_error") for r in rs],
            "diverged": [r.get("diverged") for r in rs],
            "seconds": [r["seconds"] for r in rs],
        }
        lines.append(
            f"| {kind} | {m} | {', '.join(ci_text(r) for r in rs)} | **{med:.2e}** | "
            f"{statistics.median(r.get('train_nmse', float('nan')) for r in rs):.2e} | "
            f"{'; '.join(f'{a:.4f} -> {b:.4f}' for a, b in fe2)} | {statistics.median(r['seconds'] for r in rs):.0f} |"
        )

    default = "simple"  # the learner the config defaults to (see docs/DESIGN.md)
    S = summary["methods"]
    bfc, lw, e2e = S[f"{default}/bfc"], S[f"{default}/layerwise"], S[f"{default}/e2e"]
    checks = [
        ("bfc median test nMSE <= 1e-3", bfc["median_test_nmse"] <= 1e-3, f"{bfc['median_test_nmse']:.2e}"),
        ("layerwise >= 100x bfc (medians)", lw["median_test_nmse"] >= 100 * bfc["median_test_nmse"],
         f"ratio {lw['median_test_nmse'] / bfc['median_test_nmse']:.0f}x"),
        ("bfc: layer-2 fe at end < half its end-of-stage-2 value, every seed",
         all(b < 0.5 * a for a, b in zip(bfc["fe2_end_stage2"], bfc["fe2_final"])),
         ", ".join(f"{b / a:.3f}" for a, b in zip(bfc["fe2_end_stage2"], bfc["fe2_final"])) + " (final/stage-2)"),
        ("layerwise: layer-2 fe unchanged after stage 2, every seed",
         all(a == b for a, b in zip(lw["fe2_end_stage2"], lw["fe2_final"])),
         ", ".join(f"{a:.4f} -> {b:.4f}" for a, b in zip(lw["fe2_end_stage2"], lw["fe2_final"]))),
        ("e2e reported with the same budget", True, f"median {e2e['median_test_nmse']:.2e}"),
    ]
    pb, ps = S["paper/bfc"]["median_test_nmse"], S["simple/bfc"]["median_test_nmse"]
    summary["checks"] = [{"check": c, "pass": bool(ok), "value": v} for c, ok, v in checks]
    summary["paper_vs_simple_bfc"] = {"paper": pb, "simple": ps}
    lines += ["", f"Checks (default learner: `{default}`):", "", "| check | result | value |", "|---|---|---|"]
    lines += [f"| {c} | {'PASS' if ok else 'FAIL'} | {v} |" for c, ok, v in checks]
    div = [f"{k} seed {s}: {d}" for k, v in S.items() for s, d in zip(seeds, v["diverged"]) if d]
    if div:
        lines += ["", "Diverged runs (nan in the table, left out of the medians): " + "; ".join(div) + "."]
    fs = S["simple, fixed scales/bfc"]["median_test_nmse"]
    lines += ["", f"Learnable output scales (the default) vs scales fixed at alpha_l, simple learner under bfc: "
              f"median test nMSE {ps:.2e} vs {fs:.2e}."]
    lines += ["", f"Paper learner (K + wide W, K-W regulariser, SVD warm start) vs simple learner under bfc: "
              f"median test nMSE {pb:.2e} vs {ps:.2e}; the default is the better one "
              f"(`{'paper' if pb < ps else 'simple'}`)."]
    lines += ["", f"**Which component of the paper learner hurts** (bfc, the paper learner with one component changed, "
              f"seeds {seeds}; runs in `{_rel(roots['ablations'])}`; measured on the test set, a diagnosis, not a "
              "choice of defaults):", "",
              "| variant | what changes | test nMSE per seed | median | median / paper's | median / simple's |",
              "|---|---|---|---|---|---|",
              f"| paper (as is) | K + wide W (m = 64), K-W tie, SVD warm start | "
              f"{', '.join(ci_text(res[('paper', 'bfc', s)]) for s in seeds)} | {pb:.2e} | 1 | {pb / ps:.1f} |"]
    summary["ablations"] = {}
    for name, (_, what) in ABLATIONS.items():
        rs = abl[name]
        ok = [r["test_nmse"] for r in rs if r["test_nmse"] == r["test_nmse"]]
        m_ = statistics.median(ok) if ok else float("nan")
        summary["ablations"][name] = {"test_nmse": [r["test_nmse"] for r in rs], "median_test_nmse": m_,
                                      "diverged": [r.get("diverged") for r in rs]}
        lines.append(f"| {name} | {what} | {', '.join(ci_text(r) for r in rs)} | {m_:.2e} | {m_ / pb:.2f} | "
                     f"{m_ / ps:.1f} |")
    write_json(ROOT / "bench" / "results" / "core_modes.json", summary)
    md = "\n".join(lines) + "\n"
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "bench_core.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
