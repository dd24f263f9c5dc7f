"""The robustness suite (issue 11): bfc, layerwise and e2e with untuned defaults on 24 members of
the concept class.

    .venv/bin/python bench/robustness.py [--workers 2] [--seeds 3] [--targets-only] [--render-only] [--rerun-diverged]

The suite (``SUITE``) spans levels L in {3, 4, 5, 6} (degree 4 to 32), d in {16, 32, 64, 128},
widths k in {2, 4, 8}, connections chain / chain+input / dense (J_l = every level below), gaps
rho in {0.2, 0.3, 0.5}, a non-geometric alpha vector and classification labels, mostly one or two
factors away from the default target.  Nothing is tuned per target: every run uses the library's
defaults except the target, ``data.task`` and the training-set size, which follows one rule of d
and L (:func:`n_train`); every method gets the defaults' budget (``train.steps_per_stage`` a stage,
e2e the same total in one stage).  Test sets are the default 200 000 points, nMSE normalised by
each target's frozen population variance (whose own relative standard error is listed).

The runs go through the sweep runner (batched, resumable) into ``results/robustness``;
``bench/results/robustness.json`` and ``docs/bench_robustness.md`` are written from them
(``--render-only``: from the stored runs, nothing computed).  ``--targets-only``: build the targets
and list their normalisers, no training.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from bfclab.config import RunConfig, TargetConfig, apply_mapping  # noqa: E402
from bfclab.results import Result, atomic_write_bytes, write_json  # noqa: E402
from bfclab.sweep import clear_diverged, expand, run_sweep  # noqa: E402
from bfclab.tables import markdown_table  # noqa: E402
from bfclab.target import Target  # noqa: E402

METHODS = ["bfc", "layerwise", "e2e"]
#: ``--profile``: the library's defaults, a variant chosen on validation data (bench/defaults.py), or
#: the paper learner, run on the suite's test sets: its base config, methods, where its runs and
#: pages go, and what it is (the page's words)
PROFILES: dict[str, dict] = {
    "defaults": {"base": {}, "methods": METHODS, "suffix": "", "what": "library defaults"},
    "polish": {"base": {"train": {"polish_iters": 2000}}, "methods": ["bfc"], "suffix": "-polish",
               "what": "library defaults with {base} (the `polish` variant of `bench/defaults.py`, chosen there on "
                       "validation data; here on the suite's test sets)"},
    "paper": {"base": {"learner": {"kind": "paper"}}, "methods": ["bfc"], "suffix": "-paper",
              "what": "library defaults with {base}: the paper's learner (narrow K passed up, wide W read out, K-W "
                      "tie, SVD warm start) in place of `simple` (issue 11, part 4)"},
}
#: the issue's success bars: bfc's median over seeds <= SUCCESS on >= 90 % of the targets, a suite
#: median <= SUITE_MEDIAN, and layerwise >= LAYERWISE_RATIO x worse wherever bfc succeeds
SUCCESS, SUITE_MEDIAN, LAYERWISE_RATIO = 1e-2, 2e-3, 10.0


def dense(L: int) -> list[list[int]]:
    """J_l = every level below l, the input and the constant included."""
    return [list(range(l - 1, -1, -1)) for l in range(2, L + 1)]


# name: the target's config overrides (and "task" for classification labels)
SUITE: dict[str, dict] = {
    "default": {},
    "L3": {"L": 3},
    "L5": {"L": 5},
    "L6": {"L": 6},
    "d16": {"d": 16},
    "d64": {"d": 64},
    "d128": {"d": 128},
    "k2": {"widths": [2]},
    "k8": {"widths": [8]},
    "chain": {"conn": "chain"},
    "dense": {"conn": "dense"},
    "rho0.2": {"rho": 0.2},
    "rho0.5": {"rho": 0.5},
    "alphas-1-0.5-0.05": {"alphas": [1.0, 0.5, 0.05]},
    "classification": {"task": "classification"},
    "L5-d64": {"L": 5, "d": 64},
    "L5-k2": {"L": 5, "widths": [2]},
    "L5-dense": {"L": 5, "conn": "dense"},
    "L5-rho0.5": {"L": 5, "rho": 0.5},
    "L5-classification": {"L": 5, "task": "classification"},
    "L6-d16": {"L": 6, "d": 16},
    "L6-k2-d64": {"L": 6, "widths": [2], "d": 64},
    "L6-chain": {"L": 6, "conn": "chain"},
    "L3-d128-k8": {"L": 3, "d": 128, "widths": [8]},
}


def n_train(d: int, L: int) -> int:
    """The one training-set rule: 625 d (L - 1) samples (60 000 for the default target), at most
    200 000."""
    return min(200_000, 625 * d * (L - 1))


def target_overrides(spec: dict) -> dict:
    t = {k: v for k, v in spec.items() if k != "task"}
    if t.get("conn") == "dense":
        t["conn"] = dense(t.get("L", TargetConfig.L))
    return t


def entry(spec: dict, seeds: int, methods: list[str] = METHODS) -> dict:
    """The grid entry of one suite target: its overrides, the n_train rule, methods and seeds."""
    t = target_overrides(spec)
    tc = TargetConfig()
    apply_mapping(tc, t)
    g = {f"target.{k}": [v] for k, v in t.items()}
    g.update({"data.n_train": [n_train(tc.d, tc.L)], "method": list(methods), "seed": list(range(seeds))})
    if "task" in spec:
        g["data.task"] = [spec["task"]]
    return g


def grid_spec(seeds: int, profile: str = "defaults") -> dict:
    pr = PROFILES[profile]
    return {"name": "robustness" + pr["suffix"], "base": pr["base"],
            "grid": [entry(spec, seeds, pr["methods"]) for spec in SUITE.values()]}


def target_of(spec: dict) -> Target:
    cfg = RunConfig()
    apply_mapping(cfg, {"target": target_overrides(spec)})
    return Target.from_config(cfg.target)


def collect(root: Path, seeds: int, profile: str = "defaults") -> dict:
    """Per target and method: each seed's error, interval and per-level feature / term errors."""
    out: dict = {}
    pr = PROFILES[profile]
    for name, spec in SUITE.items():
        for c in expand({"base": pr["base"], "grid": entry(spec, seeds, pr["methods"])}, "robustness").cells:
            f = root / "cells" / c.id / "result.json"
            if not f.is_file():
                continue
            r = Result.read(f)
            norm = r.extra.get("normaliser", {})
            out.setdefault(name, {}).setdefault(c.params["method"], []).append({
                "seed": c.params["seed"], "error": r.error, "interval": r.intervals.get(r.error_name),
                "error_name": r.error_name, "feature_error": r.feature_error, "term_error": r.term_error,
                "diverged": r.diverged, "seconds": r.seconds, "var_g": norm.get("var_g"),
                "var_g_se": norm.get("var_g_se")})
    return out


def med(v):
    v = [x for x in v if x == x]
    return statistics.median(v) if v else math.nan


def tail_shares(root: Path, seeds: int, profile: str, cache_file: Path) -> dict:
    """Per regression target: for each bfc seed, the share of its squared test error carried by the
    1 and the 10 test points with the largest squared error (of 200 000), and its nMSE without
    those 10.  Read from ``cache_file`` (keyed by cell); computed for the cells missing there from
    the run's final learner (``last_good.pt``, the state of its final record, or ``stage<L>.pt``
    when the profile has no polish) and the target's own test set."""
    import torch

    from bfclab.learner import Learner
    from bfclab.results import load_torch_file, read_json
    from bfclab.target import chunks
    from bfclab.training import test_data

    cache = read_json(cache_file) if cache_file.is_file() else {}
    pr, out, changed = PROFILES[profile], {}, False
    for name, spec in SUITE.items():
        if "task" in spec:
            continue
        target = None
        for c in expand({"base": pr["base"], "grid": entry(spec, seeds, ["bfc"])}, "robustness").cells:
            d = root / "cells" / c.id
            if c.id not in cache:
                cfg = c.config()
                final = d / "last_good.pt" if (d / "last_good.pt").is_file() else d / f"stage{cfg.target.L}.pt"
                if not (d / "result.json").is_file() or Result.read(d / "result.json").diverged or not final.is_file() \
                        or (cfg.train.polish_iters and final.name != "last_good.pt"):
                    continue
                if target is None:
                    target = target_of(spec)
                st = load_torch_file(final)
                m = Learner.for_target(target, cfg.learner, seed=cfg.seed)
                m.load_state_dict(st["model"])
                m.active = [int(l) for l in st["active"]]
                x, y = test_data(target, cfg.data.n_test, "regression")
                with torch.no_grad():
                    sq = torch.cat([(m(x[a:b].float()).double() - y[a:b]).pow(2) for a, b in chunks(len(y))])
                top = torch.sort(sq, descending=True).values
                cache[c.id] = {"top1": float(top[0] / sq.sum()), "top10": float(top[:10].sum() / sq.sum()),
                               "nmse_without_top10": float(top[10:].sum() / len(y) / target.var_g)}
                changed = True
            out.setdefault(name, []).append(cache[c.id])
    if changed:
        write_json(cache_file, cache)
    return out


def median_interval(runs_m: list[dict]) -> list[float] | None:
    """The 95 % test-set interval of the seed whose error is the median (None when under half of
    the seeds have an interval, e.g. when they diverged)."""
    have = sorted((r["error"], r["interval"]) for r in runs_m if r["error"] == r["error"] and r.get("interval"))
    if not have or 2 * len(have) < len(runs_m):
        return None
    return list(have[len(have) // 2][1]) if len(have) % 2 else None


def tails_file(profile: str) -> Path:
    return ROOT / "bench" / "results" / f"robustness{PROFILES[profile]['suffix']}_tails.json"


def paths(profile: str) -> tuple[Path, Path, Path]:
    """(runs root, data file, page) of a profile."""
    sfx = PROFILES[profile]["suffix"]
    return (ROOT / "results" / f"robustness{sfx}", ROOT / "bench" / "results" / f"robustness{sfx}.json",
            ROOT / "docs" / f"bench_robustness{sfx.replace('-', '_')}.md")


def tail_cells(shares: list[dict]) -> list[str]:
    if not shares:
        return ["", ""]
    return [f"{100 * med([t['top1'] for t in shares]):.0f} % / {100 * med([t['top10'] for t in shares]):.0f} %",
            f"{med([t['nmse_without_top10'] for t in shares]):.2e}"]


def render(data: dict) -> None:
    runs = data["runs"]
    profile = data.get("profile", "defaults")
    pr = PROFILES[profile]
    root, stored, page = (p.relative_to(ROOT) for p in paths(profile))
    flag = "" if profile == "defaults" else f" --profile {profile}"
    what = pr["what"].format(base=json.dumps(pr["base"]))
    lines = [f"# Robustness: {'untuned defaults' if profile == 'defaults' else f'the {profile} profile'} across the "
             f"concept class", "",
             f"Generated by `.venv/bin/python bench/robustness.py --workers {data['workers']} --seeds {data['seeds']}{flag}` "
             f"(runs in `{root}`, data in `{stored}`; `--render-only{flag}` redraws this "
             f"page); do not edit by hand.", "",
             f"{len(SUITE)} targets, methods {', '.join(pr['methods'])}, {data['seeds']} seeds each, {what} "
             f"(budget: `train.steps_per_stage` a stage), n_train = min(200 000, 625 d (L - 1)), 200 000 test "
             f"points, errors normalised by each target's population variance Var(G*) (its relative standard "
             f"error in the last column: heavy tails make it large at depth 5-6).  Cells: median over seeds "
             f"[min, max]; classification rows are 0-1 test errors.", ""]
    head = ["target", "L", "d", "k", "n_train", "bfc", "bfc median seed's 95 % interval", "layerwise", "e2e",
            "layerwise / bfc", "bfc fe per level (median)", "bfc term err per level (median)", "Var(G*) rel. s.e.",
            "bfc error share of the top 1 / 10 test points (median)", "bfc without the top 10 (median)"]
    tails = data.get("tails", {})
    rows, verdict = [], []
    for name, spec in SUITE.items():
        per = runs.get(name, {})
        tc = TargetConfig()
        apply_mapping(tc, target_overrides(spec))
        k = tc.widths[0] if isinstance(tc.widths, list) else tc.widths

        def cell(m):
            runs_m = per.get(m, [])
            vals = [r["error"] for r in runs_m if r["error"] == r["error"]]
            bad = len(runs_m) - len(vals)
            text = f"{med(vals):.2e} [{min(vals):.1e}, {max(vals):.1e}]" if vals else ""
            return text + (f" ({bad} diverged)" if bad else "")

        b = [r["error"] for r in per.get("bfc", [])]
        lw = [r["error"] for r in per.get("layerwise", [])]
        ratio = med(lw) / med(b) if b and lw else math.nan
        levels = sorted({int(l) for r in per.get("bfc", []) for l in r["feature_error"]})
        fe = " / ".join(f"{med([r['feature_error'].get(l, math.nan) for r in per['bfc']]):.2g}" for l in levels)
        te = " / ".join(f"{med([r['term_error'].get(l, math.nan) for r in per['bfc']]):.1g}" for l in levels)
        se = next((r["var_g_se"] / r["var_g"] for r in per.get("bfc", []) if r.get("var_g")), math.nan)
        ci = median_interval(per.get("bfc", []))
        rows.append([name, tc.L, tc.d, k, n_train(tc.d, tc.L), cell("bfc"),
                     f"[{ci[0]:.1e}, {ci[1]:.1e}]" if ci else "", cell("layerwise"), cell("e2e"),
                     f"{ratio:.1f}x" if ratio == ratio else "", fe, te, f"{100 * se:.1f} %" if se == se else "",
                     *tail_cells(tails.get(name, []))])
        if b and "task" not in spec:  # the nMSE bars are for regression targets; a diverged seed is a failure
            verdict.append((name, statistics.median([v if v == v else math.inf for v in b]), ratio, ci))
    lines.append(markdown_table(head, rows))
    done = [v for v in verdict]
    ok = [v for v in done if v[1] <= SUCCESS]
    suite_med = med([v[1] for v in done])
    n_reg = sum("task" not in s for s in SUITE.values())
    missing = sum(len(per) < len(pr["methods"]) * data["seeds"] for per in (
        [r for m in pr["methods"] for r in runs.get(name, {}).get(m, [])] for name in SUITE))
    lines += ["", f"Regression targets with results: {len(done)} of {n_reg} (the classification targets' 0-1 "
                  f"errors are in the table; the nMSE bars below do not apply to them).  "
                  + (f"{missing} target(s) are not complete yet: the command resumes where the runs stopped.  "
                     if missing else "Every cell has run.  ")
                  + "A diverged seed counts as an infinite error in the bars below (the table's medians are "
                    "over the seeds that did not diverge)."]
    unresolved = [v[0] for v in done if v[3] and v[3][0] <= SUCCESS <= v[3][1]]
    if done:
        frac = len(ok) / len(done)
        lw_ok = [v for v in ok if v[2] >= LAYERWISE_RATIO]
        lines += [
            f"- bfc median <= {SUCCESS:g} on {len(ok)} of {len(done)} targets ({100 * frac:.0f} %; goal >= 90 %): "
            f"{'PASS' if frac >= 0.9 else 'FAIL'}.",
            f"- suite median of bfc's medians: {suite_med:.2e} (goal <= {SUITE_MEDIAN:g}): "
            f"{'PASS' if suite_med <= SUITE_MEDIAN else 'FAIL'}.",
            (f"- layerwise >= {LAYERWISE_RATIO:g}x worse than bfc on {len(lw_ok)} of the {len(ok)} targets where bfc "
             f"succeeds: {'PASS' if len(lw_ok) == len(ok) else 'FAIL'}." if "layerwise" in pr["methods"] else
             "- layerwise: not run in this profile."),
            f"- resolution: the median bfc seed's 95 % interval (batch means over the test set) contains the bar "
            f"{SUCCESS:g} on {len(unresolved)} target(s)" + (f" ({', '.join(f'`{n}`' for n in unresolved)}): "
                                                           f"there the test set does not decide pass or fail."
                                                           if unresolved else "."),
            "", "Failures (bfc median above the bar), with their numbers:", ""]
        for name, m, ratio, _ in done:
            if not m <= SUCCESS:  # nan: every seed diverged
                per = runs[name]["bfc"]
                levels = sorted({int(l) for r in per for l in r["feature_error"]})
                if not levels:
                    lines.append(f"- `{name}`: every bfc seed diverged ({len(per)} of {len(per)}; bfclab's "
                                 f"divergence rule, `train.diverge_factor`).")
                    continue
                worst = max(levels, key=lambda l: med([r["term_error"].get(l, math.nan) for r in per]))
                sh = tails.get(name, [])
                tail = (f"; the 10 test points (of 200 000) with the largest squared error carry a median "
                        f"{100 * med([t['top10'] for t in sh]):.0f} % of it, and without them the median is "
                        f"{med([t['nmse_without_top10'] for t in sh]):.2e}" if sh else "")
                lines.append(f"- `{name}`: bfc median {m:.2e}; largest output-term error at level {worst} "
                             f"({med([r['term_error'].get(worst, math.nan) for r in per]):.1e}), its feature error "
                             f"{med([r['feature_error'].get(worst, math.nan) for r in per]):.2f}; diverged seeds: "
                             f"{sum(bool(r['diverged']) for r in per)}{tail}.")
    lines.append("")
    atomic_write_bytes(ROOT / page, "\n".join(lines).encode())
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--targets-only", action="store_true", help="list the targets' normalisers, train nothing")
    ap.add_argument("--render-only", action="store_true", help="redraw the page from the stored runs")
    ap.add_argument("--profile", choices=sorted(PROFILES), default="defaults",
                    help="the library defaults, or a variant of them (PROFILES) into its own folder and page")
    ap.add_argument("--rerun-diverged", action="store_true",
                    help="train again the stored cells whose result says diverged (after a change of the rule)")
    args = ap.parse_args()
    if args.targets_only:
        for name, spec in SUITE.items():
            t0 = time.time()
            t = target_of(spec)
            print(f"{name:22s} L={t.L} d={t.d:3d} Var(G*)={t.var_g:.4g} rel.s.e.={t.var_g_se / t.var_g:.3f} "
                  f"({time.time() - t0:.1f} s)")
        return
    root, stored, _ = paths(args.profile)
    if args.render_only:
        from bfclab.results import read_json

        data = read_json(stored) if stored.is_file() else {"workers": args.workers, "seeds": args.seeds}
        data["runs"] = collect(root, data["seeds"], args.profile)
        data["profile"] = args.profile
        data["tails"] = tail_shares(root, data["seeds"], args.profile, tails_file(args.profile))
        render(data)
        return
    t0 = time.time()
    grid = expand(grid_spec(args.seeds, args.profile), "robustness" + PROFILES[args.profile]["suffix"])
    if args.rerun_diverged:
        clear_diverged(grid, root)
    run_sweep(grid, root, workers=args.workers, threads=1)
    data = {"workers": args.workers, "seeds": args.seeds, "seconds": time.time() - t0, "profile": args.profile,
            "runs": collect(root, args.seeds, args.profile),
            "tails": tail_shares(root, args.seeds, args.profile, tails_file(args.profile))}
    write_json(stored, json.loads(json.dumps(data)))
    render(data)


if __name__ == "__main__":
    main()
