"""Throughput of batched training against the one-process-per-cell runner (issue 10).

    .venv/bin/python bench/throughput.py [--steps-per-stage 2000] [--workers 2]

Grids (every cell a deep run on the default learner):
* ``sample-complexity``: the deep cells of ``bfclab experiment sample-complexity`` (bfc, layerwise,
  e2e x its n values x 3 seeds) on the default target;
* ``depth5``: 3 seeds x 4 methods (bfc, layerwise, window:1, e2e) on a 5-level target.

Each grid runs twice in this one process, side by side: through the sweep runner with
``--no-batched`` and ``--workers`` worker processes (one torch thread each), and batched (the
groups of cells that share a growth plan, in as many worker processes of one thread each).  Also measured in the same run: the machine's float32
matmul peak (2048 x 2048 products) and its memory bandwidth (a large copy), the arithmetic of a
model step (FLOPs counted from the layer shapes), and where the batched loop spends its time (a
cProfile of one group).  Writes ``bench/results/throughput.json`` and ``docs/bench_throughput.md``;
every batched cell is compared with the same cell run alone (:func:`agreement`).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from torch.func import functional_call  # noqa: E402

from bfclab.batched import BatchedRuns, _Objective, clip_per_member, group_key  # noqa: E402
from bfclab.config import RunConfig  # noqa: E402
from bfclab.learner import Learner  # noqa: E402
from bfclab.experiments import sample_complexity  # noqa: E402
from bfclab.results import atomic_write_bytes, write_json  # noqa: E402
from bfclab.sweep import Grid, expand, run_sweep  # noqa: E402
from bfclab.training import Run  # noqa: E402


def grids(steps: int) -> dict[str, Grid]:
    sc = sample_complexity.spec()
    deep = {"name": "sample-complexity", "base": {"train": {"steps_per_stage": steps}},
            "grid": {**sc["grid"], "method": sample_complexity.DEEP}}
    depth5 = {"name": "depth5", "base": {"target": {"L": 5}, "train": {"steps_per_stage": steps}},
              "grid": {"method": ["bfc", "layerwise", "window:1", "e2e"], "seed": [0, 1, 2]}}
    return {"sample-complexity": expand(deep, "sample-complexity"), "depth5": expand(depth5, "depth5")}


def peaks(threads: int) -> dict:
    """float32 matmul GFLOP/s and copy GB/s of this machine with ``threads`` torch threads."""
    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    for _ in range(2):
        a @ b
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    gflops = 2 * 2048 ** 3 * reps / (time.perf_counter() - t0) / 1e9
    x = torch.empty(64 * 2 ** 20)  # 256 MiB
    y = torch.empty_like(x)
    y.copy_(x)
    t0, reps = time.perf_counter(), 5
    for _ in range(reps):
        y.copy_(x)
    gbs = 2 * x.numel() * 4 * reps / (time.perf_counter() - t0) / 1e9  # read + write
    return {"matmul_gflops": gflops, "copy_gbs": gbs, "threads": threads}


def step_flops(cfg: RunConfig) -> float:
    """FLOPs of one training step of one model, all levels active (forward x 3 for backward)."""
    run = Run(cfg, progress=False, log=lambda s: None)
    m, b = run.model, cfg.train.batch_size
    fwd = 0
    for l in m.levels:
        k, q = m.layer(l).K.shape
        fwd += 2 * b * q * k * (1 + (m.layer(l).W is not None))
        fwd += sum(2 * b * m.widths[j] * m.lift_rows[j] for j in m.conn[l] if j >= 2)
    return 3.0 * fwd


class RowMajor(Learner):
    """The learner's forward in the row-major form it had before (z_l concatenated, then one
    matmul z_l K_l^T; batch axis second to last): the reference for the layout comparison."""

    def forward_all(self, x, levels=None):
        levels = self.active if levels is None else levels
        feats, out = {}, self.offset[..., None].expand(x.shape[:-1])
        ones = torch.ones((*x.shape[:-1], 1), dtype=x.dtype)
        for l in levels:
            parts = [ones] + [x if j == 1 else self.lift(j, feats[j].mT).mT for j in self.conn[l] if j]
            feats[l] = torch.cat(parts, dim=-1) @ self.layer(l).K.mT
            out = out + self.layer(l).scale[..., None] * feats[l].pow(2).sum(-1)
        return feats, {}, out


def step_scaling(cfg: RunConfig, sizes=(1, 4, 12, 36, 72), reps: int = 40) -> dict:
    """Milliseconds of one batched training step (forward, backward, per-member clipping, Adam;
    all levels active, one thread) for E stacked members, in the learner's feature-major layout
    and in the row-major reference, which must give the same loss to rounding."""
    torch.set_num_threads(1)
    run = Run(cfg, progress=False, log=lambda s: None)
    model = run.model
    for l in model.levels:
        model.activate(l, cfg.train.init_std, torch.Generator().manual_seed(0))
    row = RowMajor.for_target(run.target, cfg.learner, seed=cfg.seed)
    row.load_state_dict(model.state_dict())
    row.active = list(model.active)
    lam = (cfg.train.lam_kw, cfg.train.lam_k, cfg.train.lam_w)
    k, q = model.layer(model.L).K.shape
    out: dict = {"sizes": list(sizes), "feature_major_ms": [], "row_major_ms": [], "k": k, "q": q,
                 "batch": cfg.train.batch_size}
    for E in sizes:
        x, y = torch.randn(E, cfg.train.batch_size, model.d), torch.randn(E, cfg.train.batch_size)
        losses = []
        for net, key in ((model, "feature_major_ms"), (row, "row_major_ms")):
            stacked = {f"model.{n}": p.detach().expand(E, *p.shape).clone().requires_grad_(p.requires_grad)
                       for n, p in net.named_parameters()}
            stacked.update({f"model.{n}": b.expand(E, *b.shape).clone() for n, b in net.named_buffers()})
            params = [v for v in stacked.values() if v.requires_grad]
            opt = torch.optim.Adam(params, lr=1e-3)
            objective = _Objective(net, False, model.levels, lam)
            losses.append(functional_call(objective, stacked, (x, y, torch.ones(E)))[1].detach())

            def step():
                loss = functional_call(objective, stacked, (x, y, torch.ones(E)))[1]
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                clip_per_member(params, cfg.train.clip)
                opt.step()

            for _ in range(3):
                step()
            t0 = time.perf_counter()
            for _ in range(reps):
                step()
            out[key].append(1e3 * (time.perf_counter() - t0) / reps)
        torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=0)  # the same function
    return out


def timed_sweep(grid: Grid, root: Path, batched: bool, workers: int) -> float:
    torch.set_num_threads(workers if workers == 1 else 1)
    t0 = time.perf_counter()
    run_sweep(grid, root, workers=workers, progress=False, threads=1, batched=batched)
    return time.perf_counter() - t0


def agreement(grid: Grid, a: Path, b: Path) -> dict:
    """How far each batched cell is from the same cell run alone, against the seed noise: the
    range of the one-by-one results over the seeds of that cell's (method, n, ...) point.  A
    training run of thousands of steps amplifies rounding (README, "Reproducibility"), so at this
    length the comparison is with seed noise; the 1e-3 agreement of a few-hundred-step run is
    checked by tests/test_batched.py."""
    from bfclab.results import Result

    one = {c.id: Result.read(a / "cells" / c.id / "result.json").error for c in grid.cells}
    bat = {c.id: Result.read(b / "cells" / c.id / "result.json").error for c in grid.cells}
    points: dict[str, list[str]] = {}
    for c in grid.cells:
        points.setdefault(json.dumps({k: v for k, v in c.params.items() if k != "seed"}, sort_keys=True), []).append(c.id)
    diffs, within, diverged = [], 0, []
    for ids in points.values():
        ok = [one[i] for i in ids if math.isfinite(one[i])]
        spread = max(ok) - min(ok) if ok else 0.0
        for i in ids:
            if not (math.isfinite(one[i]) and math.isfinite(bat[i])):  # a diverged run (nan error)
                diverged.append({"cell": i, "one_by_one": one[i], "batched": bat[i]})
                within += math.isfinite(one[i]) == math.isfinite(bat[i])  # both diverged: the same outcome
                continue
            d = abs(one[i] - bat[i])
            diffs.append(d / abs(one[i]))
            within += d <= spread
    diffs.sort()
    return {"cells": len(grid.cells), "median_relative_difference": diffs[len(diffs) // 2] if diffs else math.nan,
            "worst_relative_difference": diffs[-1] if diffs else math.nan, "within_seed_range": within,
            "diverged": diverged, "pass": within == len(grid.cells),
            "errors": {i: {"one_by_one": one[i], "batched": bat[i]} for i in one}}


def short_agreement(steps: int = 100, tol: float = 1e-3) -> dict:
    """The issue's agreement check on every cell of the sample-complexity grid, at ``steps`` steps
    a stage (a few hundred in all): each batched member's final nMSE and stage-end feature errors
    within ``tol`` (relative) of the same cell run alone."""
    torch.set_num_threads(1)
    grid = grids(steps)["sample-complexity"]
    groups: dict[str, list] = {}
    for c in grid.cells:
        groups.setdefault(group_key(c.config()), []).append(c.config())
    worst, worst_feature, n = 0.0, 0.0, 0
    for cfgs in groups.values():
        alone = [Run(c, progress=False, log=lambda s: None).run() for c in cfgs]
        together = BatchedRuns([Run(c, progress=False, log=lambda s: None) for c in cfgs]).run()
        for a, b in zip(alone, together):
            n += 1
            worst = max(worst, abs(a.error - b.error) / abs(a.error))
            for s, rec in a.stage_end.items():
                for l, v in rec["feature_error"].items():
                    worst_feature = max(worst_feature, abs(v - b.stage_end[s]["feature_error"][l]) / abs(v))
    return {"steps_per_stage": steps, "cells": n, "tol": tol, "worst_final": worst,
            "worst_stage_feature": worst_feature, "pass": worst <= tol and worst_feature <= tol}


def profile_group(grid: Grid, threads: int, steps: int) -> dict:
    """Where the batched loop of one group (the first method's cells) spends its time."""
    torch.set_num_threads(threads)
    cells = [c for c in grid.cells if c.method == grid.cells[0].method]
    runs = [Run(c.config(), progress=False, log=lambda s: None) for c in cells]
    assert len({group_key(r.cfg) for r in runs}) == 1
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    BatchedRuns(runs).run()
    prof.disable()
    total = time.perf_counter() - t0
    st = pstats.Stats(prof)

    def cum(pred) -> float:
        return sum(v[3] for k, v in st.stats.items() if pred(k))

    parts = {
        "evaluation (records)": cum(lambda k: k[2] == "record" and k[0].endswith("training.py")),
        "forward": cum(lambda k: k[2] == "forward" and k[0].endswith("batched.py")),
        "backward": cum(lambda k: "run_backward" in k[2]),
        "optimiser": cum(lambda k: k[2] == "step" and k[0].endswith("adam.py")),
        "clipping": cum(lambda k: k[2] == "clip_per_member"),
        "batch indices": cum(lambda k: "torch.randint" in k[2]),
    }
    parts["python and the rest"] = max(0.0, total - sum(parts.values()))
    return {"members": len(runs), "seconds": total, "parts": parts,
            "model_steps": len(runs) * 3 * steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps-per-stage", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--render-only", action="store_true", help="redraw the Markdown from bench/results/throughput.json")
    args = ap.parse_args()
    if args.render_only:
        from bfclab.results import read_json

        render(read_json(ROOT / "bench" / "results" / "throughput.json"))
        return
    load0 = os.getloadavg()
    out: dict = {"steps_per_stage": args.steps_per_stage, "workers": args.workers, "cpus": os.cpu_count(),
                 "peaks": peaks(args.workers), "grids": {}}
    out["short_agreement"] = short_agreement()
    out["step_scaling"] = step_scaling(grids(args.steps_per_stage)["sample-complexity"].cells[0].config())
    with tempfile.TemporaryDirectory() as tmp:
        for name, grid in grids(args.steps_per_stage).items():
            cfg0 = grid.cells[0].config()
            walls = {}
            for batched in (False, True):
                walls[batched] = timed_sweep(grid, Path(tmp) / name / str(batched), batched, args.workers)
                print(f"{name}: {'batched' if batched else 'one by one'} {walls[batched]:.1f} s", file=sys.stderr)
            n = len(grid.cells)
            model_steps = sum(c.config().train.steps_per_stage * (c.config().target.L - 1) for c in grid.cells)
            flops = step_flops(cfg0) * model_steps
            out["grids"][name] = {
                "cells": n, "wall_one_by_one": walls[False], "wall_batched": walls[True],
                "cells_per_hour_one_by_one": 3600 * n / walls[False], "cells_per_hour_batched": 3600 * n / walls[True],
                "speedup": walls[False] / walls[True], "model_steps_per_second_batched": model_steps / walls[True],
                "model_steps_per_second_one_by_one": model_steps / walls[False],
                "gflops_batched": flops / walls[True] / 1e9, "gflops_one_by_one": flops / walls[False] / 1e9,
                "flops_per_model_step": flops / model_steps,
                "agreement": agreement(grid, Path(tmp) / name / "False", Path(tmp) / name / "True"),
            }
        out["profile"] = profile_group(grids(args.steps_per_stage)["sample-complexity"], args.workers,
                                       args.steps_per_stage)
    out["loadavg_start"], out["loadavg_end"] = list(load0), list(os.getloadavg())
    write_json(ROOT / "bench" / "results" / "throughput.json", out)
    render(out)


def render(out: dict) -> None:
    """docs/bench_throughput.md from the measurements (``--render-only``: from the stored JSON)."""
    pk, load0 = out["peaks"], out["loadavg_start"]
    steps, workers = out["steps_per_stage"], out["workers"]
    lines = ["# Throughput: batched training against one process per cell", "",
             f"Generated by `.venv/bin/python bench/throughput.py --steps-per-stage {steps} "
             f"--workers {workers}` (data: `bench/results/throughput.json`; `--render-only` redraws this page "
             f"from it); do not edit by hand.", "",
             f"Machine: {out['cpus']} CPUs, load average {load0[0]:.2f} at the start, {out['loadavg_end'][0]:.2f} at "
             f"the end; measured in the same run: float32 matmul {pk['matmul_gflops']:.0f} GFLOP/s, copy "
             f"{pk['copy_gbs']:.1f} GB/s ({pk['threads']} threads).  Every cell: default learner, "
             f"{steps} steps a stage, evaluation every `train.log_every` steps as in any run.", "",
             "| grid | cells | one by one (s) | batched (s) | cells/h one by one | cells/h batched | speedup | "
             "model-steps/s batched | GFLOP/s batched | batched vs alone: median / worst rel. diff, cells within "
             "the seed range |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, g in out["grids"].items():
        ag = g["agreement"]
        lines.append(f"| {name} | {g['cells']} | {g['wall_one_by_one']:.0f} | {g['wall_batched']:.0f} | "
                     f"{g['cells_per_hour_one_by_one']:.0f} | {g['cells_per_hour_batched']:.0f} | "
                     f"**{g['speedup']:.2f}x** | {g['model_steps_per_second_batched']:.0f} | "
                     f"{g['gflops_batched']:.2f} | {ag['median_relative_difference']:.1e} / "
                     f"{ag['worst_relative_difference']:.1e}, {ag['within_seed_range']}/{ag['cells']} |")
    pr, sa = out["profile"], out["short_agreement"]
    sc = out["grids"]["sample-complexity"]
    lines += ["", f"Goal (issue 10): batched >= 10x the cells/hour of the per-cell runner on the sample-complexity "
                  f"grid: {'PASS' if sc['speedup'] >= 10 else 'FAIL'} ({sc['speedup']:.2f}x).", "",
              f"Agreement check (issue 10's definition): every cell of the sample-complexity grid at "
              f"{sa['steps_per_stage']} steps a stage ({sa['cells']} cells), batched against alone: worst relative "
              f"difference {sa['worst_final']:.1e} on the final nMSE and {sa['worst_stage_feature']:.1e} on the "
              f"stage-end feature errors, tolerance {sa['tol']:.0e}: {'PASS' if sa['pass'] else 'FAIL'}.  At "
              f"{steps} steps a stage (the table above) training amplifies rounding (README, \"Reproducibility\"), "
              f"so there the batched results are compared with the spread of the three seeds instead.", "",
              f"Where one batched group's time goes ({pr['members']} members, {pr['seconds']:.1f} s, cProfile, "
              f"so slower than unprofiled):", "", "| part | seconds | share |", "|---|---|---|"]
    lines += [f"| {k} | {v:.1f} | {100 * v / pr['seconds']:.0f} % |" for k, v in pr["parts"].items()]
    if any(g["agreement"]["diverged"] for g in out["grids"].values()):
        lines.append("")
    for name, g in out["grids"].items():
        for dv in g["agreement"]["diverged"]:
            lines.append(f"- {name}: cell `{dv['cell']}` diverged (nan error) one by one: "
                         f"{not math.isfinite(dv['one_by_one'])}, batched: {not math.isfinite(dv['batched'])}.")
    frac = sc["gflops_batched"] / pk["matmul_gflops"]
    ss = out["step_scaling"]
    lines += ["", "One training step (forward, backward, per-member clipping, Adam; all levels active, one thread) "
                  "for E stacked members, in the learner's feature-major layout and in the row-major "
                  "concatenate-then-multiply reference it replaced (same loss to rounding, checked):", "",
              "| E | feature-major ms/step | ms per model-step | row-major ms/step | ms per model-step | "
              "feature-major speedup |", "|---|---|---|---|---|---|"]
    for E, a, b in zip(ss["sizes"], ss["feature_major_ms"], ss["row_major_ms"]):
        lines.append(f"| {E} | {a:.2f} | {a / E:.3f} | {b:.2f} | {b / E:.3f} | {b / a:.2f}x |")
    one = ss["feature_major_ms"][0]
    big, at = min((a / E, E) for E, a in zip(ss["sizes"], ss["feature_major_ms"]))
    lines += ["", f"Fraction of the machine's matmul peak reached by the batched training: {100 * frac:.2f} % "
                  f"({sc['gflops_batched']:.2f} of {pk['matmul_gflops']:.0f} GFLOP/s; "
                  f"{sc['flops_per_model_step'] / 1e6:.1f} MFLOP a model step).",
              "",
              f"What bounds it: not FLOPs ({100 * frac:.1f} % of the matmul peak).  A single model's step "
              f"({one:.2f} ms) is per-kernel dispatch: the same ~60 kernels run whether one model or many are "
              f"stacked, which is what batching shares.  The cost per model-step falls to {big:.3f} ms at E = "
              f"{at}, {one / big:.1f}x below one model's step: there the time is in MKL's batched "
              f"products of tiny matrices (k = {ss['k']} output rows, {ss['q']} inputs) and in the elementwise "
              f"passes over the activations, which at E x batch {ss['batch']} do not fit in cache and run far "
              f"below the {pk['copy_gbs']:.0f} GB/s copy bandwidth.  So the step ratio one model : many is "
              f"bounded by about {one / big:.1f}x on one thread, and a grid's speedup by that ratio diluted by "
              f"what is not batched (evaluation records: "
              f"{100 * pr['parts']['evaluation (records)'] / pr['seconds']:.0f} % of a profiled group; data and "
              f"set-up) and by groups smaller than that E (one method's cells form a group, split to balance "
              f"the workers: {pr['members']} members for sample-complexity, 3 for depth5).", ""]
    atomic_write_bytes(ROOT / "docs" / "bench_throughput.md", "\n".join(lines).encode())
    print("\n".join(lines))


if __name__ == "__main__":
    main()
