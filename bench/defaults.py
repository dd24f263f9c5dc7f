"""Choosing the deep learner's defaults on validation data (issue 11, part 3).

    .venv/bin/python bench/defaults.py [--workers 2] [--seeds 2] [--no-scan] [--render-only]

Every variant of the defaults (``VARIANTS``: train-config overrides; the first is the library's
defaults as they stand) trains bfc on a subset of the robustness suite (``TARGETS``, the targets of
``bench/robustness.py`` with its n_train rule) with run seeds 100, 101, ... (not the suite's 0-2, so
that neither the training samples nor the test points of the suite are seen).  Each run is scored
on ``DRAWS`` independent validation draws of 200 000 points from the target's ``validation_data``
stream (never the test stream): the stage-end records on draw 0, the final model on every draw.
The score of a run is the pooled validation nMSE over all draws (normalised by the target's frozen
population variance); the page also lists how far single draws spread, which at depth 5-6 is the
measurement's own resolution.  The variant to adopt is the one with the lowest geometric mean over
targets of its median pooled score (a diverged seed counts as inf).

Runs are stored one JSON file each in ``bench/results/defaults/`` (an existing file is reused:
the command resumes); ``docs/bench_defaults.md`` and ``bench/results/defaults.json`` are written
from them (``--render-only``: nothing trained).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from robustness import SUITE, n_train, target_of, target_overrides  # noqa: E402

from bfclab import seeds  # noqa: E402
from bfclab.config import RunConfig, apply_mapping, set_key  # noqa: E402
from bfclab.methods import DivergenceError  # noqa: E402
from bfclab.results import atomic_write_bytes, write_json  # noqa: E402
from bfclab.tables import markdown_table  # noqa: E402

TARGETS = ["default", "k8", "L5", "L5-k2", "L5-dense", "L5-rho0.5", "L6-d16", "L6-chain"]
#: name -> train-config overrides (the first: today's defaults)
VARIANTS: dict[str, dict] = {
    "defaults": {},
    "lr 3e-3": {"train.lr": 3e-3},
    "lr 1e-3": {"train.lr": 1e-3},
    # PAPER_NOTES §4.2's final fine-tuning: full-batch L-BFGS after the last stage, stopped on a
    # held-out 10 % of the training sample (which the run then never trains on)
    "polish": {"train.polish_iters": 2000},
}
#: a diagnostic, not a choice: today's defaults with the suite's n_train rule multiplied (is the
#: error at depth 5-6 a sample-size floor?)
N_SCAN = {"n_train x2": 2, "n_train x4": 4}
DRAWS, DRAW_POINTS = 5, 200_000
FIRST_SEED = 100
OUT = ROOT / "bench" / "results" / "defaults"


def job_path(target: str, variant: str, seed: int) -> Path:
    return OUT / f"{target}__{variant.replace(' ', '_')}__{seed}.json"


def config_of(target: str, variant: str, seed: int) -> RunConfig:
    spec = SUITE[target]
    cfg = RunConfig()
    apply_mapping(cfg, {"target": target_overrides(spec)})
    set_key(cfg, "data.n_train", n_train(cfg.target.d, cfg.target.L) * N_SCAN.get(variant, 1))
    set_key(cfg, "seed", seed)
    for k, v in VARIANTS.get(variant, {}).items():
        set_key(cfg, k, v)
    return cfg


def validation(target, draw: int):
    """Draw ``draw`` of the target's validation stream (inputs, clean labels)."""
    x, y, _ = target.sample(DRAW_POINTS, seed=seeds.seed_of("validation_data", target.config.get("seed", 0), draw))
    return x, y


def run_job(target_name: str, variant: str, seed: int) -> dict:
    """Train bfc once and score it on every validation draw; the job's JSON record."""
    import torch

    from bfclab.target import chunks
    from bfclab.training import Run

    torch.set_num_threads(1)
    cfg = config_of(target_name, variant, seed)
    target = target_of(SUITE[target_name])
    x, y, _ = target.sample(cfg.data.n_train, seed=seeds.seed_of("train_data", cfg.seed))
    draws = [validation(target, k) for k in range(DRAWS)]
    t0 = time.time()
    rec = {"target": target_name, "variant": variant, "seed": seed, "overrides": VARIANTS.get(variant, {}),
           "n_train": cfg.data.n_train, "var_g": target.var_g, "var_g_se": target.var_g_se}
    run = Run(cfg, target=target, data=(x, y, *draws[0]), progress=False, log=lambda s: None)
    try:
        res = run.run()
    except DivergenceError as e:
        rec.update(diverged=str(e), seconds=time.time() - t0, pooled=math.inf, draws=[])
        return rec
    per = []
    with torch.no_grad():
        for xv, yv in draws:
            sq = sum(float((run.model(xv[a:b].float()).double() - yv[a:b]).pow(2).sum()) for a, b in chunks(len(yv)))
            per.append(sq / len(yv) / target.var_g)
    rec.update(seconds=time.time() - t0, pooled=sum(per) / len(per), draws=per, train_nmse=res.metrics["train_nmse"],
               polish=res.extra.get("polish"),
               stage_val={s: v["test_nmse"] for s, v in res.stage_end.items()},
               feature_error=res.feature_error, term_error=res.term_error)
    return rec


def jobs(n_seeds: int, scan: bool = True) -> list[tuple[str, str, int]]:
    return [(t, v, FIRST_SEED + s) for v in [*VARIANTS, *(N_SCAN if scan else [])] for t in TARGETS
            for s in range(n_seeds)]


def load(n_seeds: int) -> list[dict]:
    return [json.loads(p.read_text()) for t, v, s in jobs(n_seeds) if (p := job_path(t, v, s)).exists()]


def geo_mean(values: list[float]) -> float:
    if any(not math.isfinite(v) for v in values):
        return math.inf
    return math.exp(statistics.fmean(math.log(max(v, 1e-300)) for v in values))


def summarise(records: list[dict], n_seeds: int) -> dict:
    """Per target and variant: the median pooled score over seeds, its range and the single-draw
    range; per variant the geometric mean over targets; the choice."""
    cells: dict = {}
    for r in records:
        cells.setdefault(r["target"], {}).setdefault(r["variant"], []).append(r)
    rows, score = [], {}
    for t in TARGETS:
        for v in [*VARIANTS, *N_SCAN]:
            rs = cells.get(t, {}).get(v, [])
            if len(rs) < n_seeds:
                continue
            pooled = sorted(r["pooled"] for r in rs)
            single = [d for r in rs for d in r["draws"]]
            rows.append({"target": t, "variant": v, "n_train": rs[0]["n_train"], "median": statistics.median(pooled), "min": pooled[0],
                         "max": pooled[-1], "draw_min": min(single) if single else math.nan,
                         "draw_max": max(single) if single else math.nan,
                         "diverged": sum(1 for r in rs if r.get("diverged")),
                         "seconds": statistics.fmean(r["seconds"] for r in rs)})
    complete = [t for t in TARGETS if all(any(r["target"] == t and r["variant"] == v for r in rows) for v in VARIANTS)]
    for v in VARIANTS:
        score[v] = geo_mean([r["median"] for r in rows if r["variant"] == v and r["target"] in complete])
    choice = min(score, key=score.get) if complete else None
    return {"rows": rows, "complete_targets": complete, "geo_mean": score, "choice": choice}


def fmt(v: float) -> str:
    return "inf" if not math.isfinite(v) else f"{v:.2e}"


def render(summary: dict, n_seeds: int, command: str) -> str:
    lines = ["# Choosing the defaults on validation data", "",
             f"Generated by `{command}` (runs in `bench/results/defaults/`, summary in "
             "`bench/results/defaults.json`; `--render-only` redraws this page); do not edit by hand.", "",
             f"bfc on {len(TARGETS)} targets of the robustness suite (its n_train rule), run seeds "
             f"{FIRST_SEED}-{FIRST_SEED + n_seeds - 1} (not the suite's), each variant of the training defaults. "
             f"Score: the validation nMSE pooled over {DRAWS} independent draws of {DRAW_POINTS:,} points from "
             "the target's `validation_data` stream (never its test points), normalised by the frozen "
             "population variance. \"single draws\": the range of the nMSE a single 200 000-point draw "
             "gives for the same models, i.e. how well one test set of the suite's size resolves the error.", ""]
    header = ["target", "variant", "n_train", "pooled val nMSE, median [min, max] over seeds",
              "single draws [min, max]", "diverged", "s / run"]

    def body(names):
        return [[r["target"], r["variant"], str(r["n_train"]), f"{fmt(r['median'])} [{fmt(r['min'])}, {fmt(r['max'])}]",
                 f"[{fmt(r['draw_min'])}, {fmt(r['draw_max'])}]", str(r["diverged"]), f"{r['seconds']:.0f}"]
                for r in summary["rows"] if r["variant"] in names]

    lines += ["## Variants of the training defaults", "", markdown_table(header, body(VARIANTS)), ""]
    scanned = {r[0] for r in body(N_SCAN)}
    scan = [r for r in body(["defaults", *N_SCAN]) if r[0] in scanned]
    if any(r[1] in N_SCAN for r in scan):
        lines += ["## Today's defaults with more training samples (a diagnostic, not a choice)", "",
                  "The suite's n_train rule multiplied by " + ", ".join(str(m) for m in N_SCAN.values())
                  + ", same step budget.", "", markdown_table(header, sorted(scan, key=lambda r: (TARGETS.index(r[0]), r[2]))), ""]
    if summary["choice"] is None:
        lines.append("Not every target has run for every variant yet: no choice is made.")
    else:
        gm = ", ".join(f"{v}: {fmt(s)}" for v, s in summary["geo_mean"].items())
        lines.append(f"Geometric mean over the {len(summary['complete_targets'])} complete targets of the median "
                     f"pooled score: {gm}. Lowest: **{summary['choice']}**.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--render-only", action="store_true")
    ap.add_argument("--no-scan", action="store_true", help="train the variants only, not the n_train scan")
    a = ap.parse_args(argv)
    if a.workers < 1 or a.seeds < 1:
        print("bench/defaults.py: --workers and --seeds must be >= 1", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    if not a.render_only:
        todo = [j for j in jobs(a.seeds, scan=not a.no_scan) if not job_path(*j).exists()]
        print(f"[defaults] {len(todo)} runs to do of {len(jobs(a.seeds))}", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(a.workers) as pool:
            futs = {pool.submit(run_job, *j): j for j in todo}
            for i, f in enumerate(as_completed(futs), 1):
                rec = f.result()
                atomic_write_bytes(job_path(*futs[f]), (json.dumps(rec, indent=1) + "\n").encode())
                print(f"[defaults] {i}/{len(todo)} {rec['target']} {rec['variant']} seed {rec['seed']}: "
                      f"pooled {fmt(rec['pooled'])} ({rec['seconds']:.0f} s)", file=sys.stderr, flush=True)
    summary = summarise(load(a.seeds), a.seeds)
    write_json(ROOT / "bench" / "results" / "defaults.json", summary)
    cmd = ".venv/bin/python bench/defaults.py" + ("" if a.seeds == 2 else f" --seeds {a.seeds}")
    (ROOT / "docs" / "bench_defaults.md").write_text(render(summary, a.seeds, cmd))
    print(render(summary, a.seeds, cmd))
    return 0


if __name__ == "__main__":
    sys.exit(main())
