"""Experiment ``scaling`` (issue 13, parts 1-2; PAPER_NOTES §6): how the samples each method needs
grow with d and with depth.

For the family of targets with levels 2..L (L in {2, 3, 4, 5}), d from 8 to 256, width k = 2,
the default connections and gap, and two target seeds, and for each method, the search of
:mod:`bfclab.scaling` finds n*(eps), the smallest n of a geometric grid (ratio sqrt 2) at which the
median test nMSE over 3 seeds is <= eps, for two values of eps:

* ``rel``: a tenth of the target's floor without its top level (:func:`bfclab.floors.top_level_floor`,
  1 for L = 2 where there is no lower level), so that reaching it requires the top level;
* ``1e-2``, the threshold of the rest of bfclab's reports.

Every evaluated n is one sweep cell per seed under ``results/scaling/cells`` (cached, resumable);
the searches run in rounds, each round one sweep over all their proposals.  Each method has its
own largest n (its budget), beyond which n* is censored: 2^17 for the networks; 32768 for the exact
kernel, by its solver's memory; 2^19 for the sequential kernel, which solves each level in the primal
(memory and time linear in n) and reaches eps = 1e-2 on the sample-complexity target only at n = 320 000
(``bfclab experiment seqkernel-limit``).
The fit of log n* against log d per method and depth, with censored points and bootstrap
intervals, is :func:`bfclab.scaling.bootstrap_fit`.  For kernels the reference exponent is that of
the number of monomials of degree <= 2^(L-1) in d variables, C(d + D, D), over the same d: the n
at which a kernel's feature space first holds the target's degree.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..config import ConfigError, TargetConfig, apply_mapping
from ..floors import top_level_floor
from ..plots import plot_exponents, plot_scaling
from ..results import read_json, write_json
from ..scaling import (Search, bootstrap_fit, censored_fit, geometric_grid, n_star_from, ratio_text,
                       run_searches)
from ..target import Target
from .common import QUICK_BASE, Section, conditions, load_cells, med, run_grid, table

NAME = "scaling"
RATIO = math.sqrt(2)


@dataclass(frozen=True)
class Plan:
    levels: list
    ds: list
    target_seeds: list
    seeds: list
    methods: dict  # label -> (grid overrides, largest n)
    n_min: int
    base: dict
    baseline: dict = field(default_factory=dict)
    floor_n: int = 200_000
    draws: int = 1000


def plan(quick: bool = False) -> Plan:
    if quick:
        base = {k: dict(v) for k, v in QUICK_BASE.items()}
        base["data"] = {"n_test": 2000, "n_monitor": 1000}
        base["target"] = {**base["target"], "widths": [2]}
        return Plan(levels=[2, 3], ds=[8, 16], target_seeds=[0], seeds=[0, 1, 2], n_min=100, base=base,
                    methods={"bfc": ({"method": "bfc"}, 1600), "krr-poly": ({"method": "krr-poly"}, 1600)},
                    floor_n=20_000, draws=200)
    deep = 2 ** 17
    return Plan(levels=[2, 3, 4, 5], ds=[8, 16, 32, 64, 128, 256], target_seeds=[0, 1], seeds=[0, 1, 2], n_min=250,
                base={"target": {"widths": [2]}},
                methods={"bfc": ({"method": "bfc"}, deep), "layerwise": ({"method": "layerwise"}, deep),
                         "e2e": ({"method": "e2e"}, deep),
                         "mlp e2e": ({"method": "e2e", "learner.kind": "mlp"}, deep),
                         "krr-poly": ({"method": "krr-poly"}, 32768),
                         "twolayer-relu": ({"method": "twolayer-relu"}, deep),
                         "seqkernel": ({"method": "seqkernel"}, 2 ** 19)})


def target_config(p: Plan, L: int, d: int, ts: int) -> TargetConfig:
    tc = TargetConfig()
    apply_mapping(tc, p.base.get("target", {}))
    tc.L, tc.d, tc.seed = L, d, ts
    return tc


def epsilons(p: Plan, root: Path, compute: bool) -> dict:
    """{(L, d, target seed): {"rel": eps, "1e-2": 0.01}}, the floors kept in ``root/floors.json``
    (computed once, when ``compute``; without it, the targets whose floor is not stored are left out)."""
    f = Path(root) / "floors.json"
    stored = read_json(f) if f.is_file() else {}
    out, changed = {}, False
    for L in p.levels:
        for d in p.ds:
            for ts in p.target_seeds:
                key = f"L={L},d={d},seed={ts}"
                if key not in stored:
                    if not compute:
                        continue
                    floor = 1.0 if L == 2 else top_level_floor(Target.from_config(target_config(p, L, d, ts)),
                                                               n=p.floor_n, batches=4)[0]
                    stored[key], changed = floor, True
                out[(L, d, ts)] = {"rel": 0.1 * stored[key], "1e-2": 1e-2}
    if changed:
        write_json(f, stored)
    return out


def cell_grid(p: Plan, label: str, L: int, d: int, ts: int, n: int) -> dict:
    over, _ = p.methods[label]
    return {**{k: [v] for k, v in over.items()}, "target.L": [L], "target.d": [d], "target.seed": [ts],
            "data.n_train": [n], "seed": list(p.seeds)}


class Missing(Exception):
    """Cells that a computing round should have stored are not there (args[0]: how many): another
    sweep process on the folder holds them, or they failed."""

    def __str__(self) -> str:
        return (f"scaling: {self.args[0]} cells of this round have no result after it ran (another process on "
                f"the folder is running them, or they failed: their folders say which); run the command again "
                f"(it resumes)")


#: ``--only`` keys and the plan's field each selects from
ONLY_KEYS = {"method": "methods", "L": "levels", "d": "ds"}


def parse_only(text: str, p: Plan) -> dict:
    """``"method=bfc,krr-poly;L=2,3;d=8,16"`` -> {"method": [...], "L": [2, 3], "d": [8, 16]}, each value
    checked against the plan (a one-line :class:`ConfigError` naming the key and the accepted values)."""
    out: dict = {}
    for part in (t.strip() for t in text.split(";")):
        key, eq, vals = part.partition("=")
        key = key.strip()
        if not eq or key not in ONLY_KEYS:
            raise ConfigError(f"--only: '{part}' is not KEY=V1,V2 with KEY one of {', '.join(ONLY_KEYS)}")
        accepted = list(getattr(p, ONLY_KEYS[key]))
        names = [v.strip() for v in vals.split(",") if v.strip()]
        got = [v for v in accepted if str(v) in names]
        bad = [v for v in names if v not in {str(a) for a in accepted}]
        if bad or not got:
            raise ConfigError(f"--only {key}: '{','.join(bad) or vals}' not in the plan; accepted: "
                              f"{', '.join(map(str, accepted))}")
        out[key] = got
    return out


def select(p: Plan, only: dict | None) -> Plan:
    """The plan restricted to ``only`` (:func:`parse_only`).  Each search is independent of the others,
    so a restricted run evaluates exactly the cells the full run evaluates for its searches."""
    if not only:
        return p
    keep = {f: only.get(k, list(getattr(p, f))) for k, f in ONLY_KEYS.items()}
    return replace(p, methods={m: v for m, v in p.methods.items() if m in keep["methods"]},
                   levels=[L for L in p.levels if L in keep["levels"]], ds=[d for d in p.ds if d in keep["ds"]])


def searches_of(p: Plan, eps: dict) -> list[Search]:
    out = []
    for label, (_, n_max) in p.methods.items():
        grid = geometric_grid(p.n_min, n_max, RATIO)
        for (L, d, ts), es in eps.items():
            out += [Search(grid, e, key=(label, L, d, ts, name)) for name, e in es.items()]
    return out


def _cell_key(params: dict) -> tuple:
    """What identifies an evaluated point of a search among the cells (method, net, target, n)."""
    return tuple(params.get(k) for k in ("method", "learner.kind", "target.L", "target.d", "target.seed",
                                         "data.n_train"))


def drive(p: Plan, root: Path, compute: bool, workers: int = 2, batched: bool = True, executor: str = "process",
          address: str | None = None) -> tuple[list[Search], int]:
    """Run (``compute``) or replay from the stored cells every search; returns (the searches, the
    number of cells their next round lacks).  A replayed search whose next cells are not stored
    stops there, unfinished; a target whose floor is not stored has no searches yet (its first
    round counts as lacking).  When computing, a cell its round ran without a result raises
    :class:`Missing`."""
    eps = epsilons(p, root, compute)
    no_floor = len(p.methods) * len(p.seeds) * (len(p.levels) * len(p.ds) * len(p.target_seeds) - len(eps))
    searches = searches_of(p, eps)
    lack: dict = {}  # repr(cell grid) -> its seeds not stored (a cell two searches lack counts once)

    def evaluate(todo):
        grids = [cell_grid(p, s.key[0], *s.key[1:4], s.grid[i]) for s, i in todo]
        unique = list({repr(g): g for g in grids}.values())
        sp = {"name": NAME, "base": p.base, "baseline": p.baseline, "grid": unique}
        if compute:
            run_grid(sp, root, workers=workers, batched=batched, executor=executor, address=address)
            rounds.append(read_json(Path(root) / "sweep.json"))
        got: dict = {}
        for c in load_cells(root, sp) + load_cells(root, sp, diverged=True):
            got.setdefault(_cell_key(c.params), []).append(c.result)
        short = {repr(g): max(0, len(p.seeds) - len(got.get(_cell_key({k: v[0] for k, v in g.items()}), [])))
                 for g in unique}
        if compute and sum(short.values()):
            raise Missing(sum(short.values()))
        lack.update({k: v for k, v in short.items() if v})
        out = []
        for (s, i), g in zip(todo, grids):
            if short[repr(g)]:
                out.append(None)
                continue
            res = got[_cell_key({k: v[0] for k, v in g.items()})]
            s.points[s.grid[i]] = [r.error for r in res]  # nan (diverged) counts as a failure
            s.seconds[s.grid[i]] = [r.seconds for r in res]
            s.work[s.grid[i]] = [work_of(r) for r in res]
            out.append(med([r.error if r.error == r.error else math.inf for r in res]))
        return out

    rounds: list = []  # each computing round's sweep.json
    start = time.time()
    run_searches(searches, evaluate)
    if rounds:
        write_json(Path(root) / "sweep.json", whole_run(rounds, time.time() - start))
    return searches, no_floor + sum(lack.values())


def whole_run(rounds: list, wall_seconds: float) -> dict:
    """One ``sweep.json`` for a whole computing invocation of the searches from the sweep.json of each
    of its rounds (each round is one sweep, which writes its own): cells run and skipped summed, the
    invocation's wall time, the load at its start and end, every round's errors and busy cells, and
    the number of rounds (so that the summary's "last computing run" describes the command, not its
    last round)."""
    out = dict(rounds[-1])
    out.update(cells_run=sum(r["cells_run"] for r in rounds), cells_skipped=sum(r["cells_skipped"] for r in rounds),
               wall_seconds=wall_seconds, loadavg_start=rounds[0]["loadavg_start"], rounds=len(rounds),
               errors=[e for r in rounds for e in r.get("errors", [])],
               busy=[b for r in rounds for b in r.get("busy", [])])
    return out


def missing_count(p: Plan, root: Path) -> int:
    """Cells the next round of the searches needs that are not stored (0 when every search ended)."""
    return drive(p, root, compute=False)[1]


def kernel_reference(L: int, ds: list) -> float:
    """Slope of log C(d + D, D) against log d over ``ds`` (D = 2^(L-1)): the number of monomials of
    the target's degree a kernel must fit."""
    import numpy as np

    D = 2 ** (L - 1)
    return float(np.polyfit([math.log(d) for d in ds], [math.log(math.comb(d + D, D)) for d in ds], 1)[0])


def fit_of(ss: list[Search], draws: int) -> dict:
    """The exponent fit over the searches of one (method, L, eps name): errors divided by each
    search's own eps (the relative eps differs per target), so one threshold, 1, serves them all."""
    curves = {(s.key[2], s.key[3]): {n: [v / s.eps for v in vals] for n, vals in s.points.items()} for s in ss}
    return bootstrap_fit(curves, eps=1.0, draws=draws)


def work_of(r) -> float | None:
    """Optimiser steps x batch of one run: the deep learner's ``steps`` x ``train.batch_size``, a
    baseline's recorded ``options`` (steps x batch_size); None where no optimiser steps are recorded
    (the closed-form kernel fits)."""
    if r.steps:
        batch = (r.config.get("train") or {}).get("batch_size")
        return float(r.steps * batch) if batch else None
    opts = (r.extra.get("baseline") or {}).get("options") or {}
    return float(opts["steps"] * opts["batch_size"]) if "steps" in opts and "batch_size" in opts else None


def time_fit(ss: list[Search], which: str = "seconds") -> tuple[float, str]:
    """The exponent of the median ``which`` (``seconds``, or ``work``: steps x batch) of the runs at n*
    against d (censored like n*) and the text of the medians; (nan, "not recorded") for ``work`` where
    a run has none."""
    xs, ys, ks, vals = [], [], [], []
    for s in sorted(ss, key=lambda s: (s.key[2], s.key[3])):
        scaled = {n: [v / s.eps for v in vs] for n, vs in s.points.items()}
        n, kind = n_star_from(scaled, 1.0)
        got = getattr(s, which).get(n, [])
        if any(v is None for v in got) or not got:
            return math.nan, "not recorded"
        v = med(got)
        xs.append(math.log(s.key[2]))
        ys.append(math.log(max(v, 1e-3)))
        ks.append(kind)
        vals.append((s.key[2], kind, v))
    if which == "work" and len({v for *_, v in vals}) == 1 and all(k != "right" for _, k, _ in vals):
        return 0.0, f"{vals[0][2]:.3g} at every d"
    unit = "s" if which == "seconds" else ""
    fmt = (lambda v: f"{v:.0f}") if which == "seconds" else (lambda v: f"{v:.3g}")
    text = " ".join(f"{d}:{'>' if k == 'right' else ''}{fmt(v)}{unit}" for d, k, v in vals)
    try:
        return censored_fit(xs, ys, ks)[0], text
    except ValueError:
        return math.nan, text


def compute_spent(searches: list[Search]) -> dict:
    """{(method, L): (runs, summed seconds)} over the evaluated cells of ``searches``, a cell that two
    searches (the two eps) share counted once."""
    seen: dict = {}
    for s in searches:
        for n, secs in s.seconds.items():
            seen[(s.key[0], s.key[1], s.key[2], s.key[3], n)] = secs
    out: dict = {}
    for (label, L, *_), secs in seen.items():
        runs, tot = out.get((label, L), (0, 0.0))
        out[(label, L)] = (runs + len(secs), tot + sum(secs))
    return out


def growth_words(fits: dict, levels: list, name: str = "1e-2") -> str:
    """In words, from the fits at eps ``name``: each method's exponent per depth with its interval and,
    between consecutive depths with fits, whether it grows (the deeper interval lies above the other),
    falls, or shows no change resolved (they overlap); a depth whose finished searches are
    all censored says so (its n* exceeds the budget at every d, which no exponent describes)."""
    parts = []
    for label in dict.fromkeys(g[0] for g in fits):
        seq, words = [], []
        for L in levels:
            f = fits.get((label, L, name))
            if f is None:
                continue
            if f["a"] == f["a"]:
                seq.append((L, f))
                words.append(f"{f['a']:.2f} [{f['lo']:.2f}, {f['hi']:.2f}] at L = {L}")
            elif all(k == "right" for _, _, k in f["points"]):
                top = max(n for _, n, _ in f["points"])
                ds = _ds_text(d for d, _, _ in f["points"])
                words.append(f"n* > {top} at every finished d ({ds}) at L = {L}")
        steps = []
        for (L0, f0), (L1, f1) in zip(seq, seq[1:]):
            verdict = ("grows" if f1["lo"] > f0["hi"] else "falls" if f1["hi"] < f0["lo"] else
                       "no change resolved (the intervals overlap)")
            steps.append(f"L = {L0} to {L1}: {verdict}")
        if words:
            parts.append(f"{label}: " + "; ".join(words) + (f" ({'; '.join(steps)})" if steps else ""))
    return (f"**Exponents against depth** (eps = {name}; from the table's fits): " + ". ".join(parts) + "."
            if parts else "")


def spent_text(spent: dict) -> str:
    """One sentence: the runs stored per (method, L) and their summed run time (one process each)."""
    if not spent:
        return ""
    total = sum(t for _, t in spent.values())
    per = "; ".join(f"{m} L = {L}: {r} runs, {t / 3600:.1f} h" for (m, L), (r, t) in sorted(spent.items(), key=str))
    return (f"Compute spent so far (the stored runs the searches read, each run's own seconds summed; a "
            f"run shared by the two eps counted once): {total / 3600:.1f} h in all; {per}; the last computing "
            f"run's own wall time and workers are on the next line.")


def ratio_rows(done: dict, levels: list, ds: list, deep: str = "bfc", name: str = "1e-2") -> list[list[str]]:
    """Issue 12's ratio at every depth and d: for each method other than ``deep`` and each L, per d
    and target seed (the same targets), (its n*) / (``deep``'s n*) at eps ``name`` as the interval
    their two grid brackets allow (:func:`bfclab.scaling.ratio_text`; "> r": the method is censored),
    over the searches both finished.  A diverged seed counts as a failure (error inf)."""
    def pts(s):
        return {n: [v if v == v else math.inf for v in vals] for n, vals in s.points.items()}

    rows = []
    for (label, L, e), ss in done.items():
        if label == deep or e != name or not ss:
            continue
        ref = {s.key[2:4]: s for s in done.get((deep, L, name), [])}
        cells = {}
        for s in sorted(ss, key=lambda s: s.key[3]):
            if s.key[2:4] in ref:
                cells.setdefault(s.key[2], []).append(ratio_text(pts(s), pts(ref[s.key[2:4]]), s.eps))
        if cells:
            rows.append([label, L, *("; ".join(cells.get(d, [])) for d in ds)])
    return sorted(rows, key=lambda r: (levels.index(r[1]), r[0]))


def _ds_text(ds: list) -> str:
    ds = sorted(set(ds))
    return ", ".join(map(str, ds))


def ratio_section(done: dict, p: Plan) -> str:
    """The ratio table (:func:`ratio_rows`) with its one-line legend ("" when no pair has finished)."""
    rows = ratio_rows(done, p.levels, p.ds)
    if not rows:
        return ""
    return ("**Samples needed against bfc's** (eps = 1e-2): n*(method) / n*(bfc) on the same target, per d, "
            f"target seeds {p.target_seeds} separated by ';', as the interval the two grid brackets allow "
            "(\"> r\": the method does not reach eps by its largest n; \"n/a\": bfc does not by its own; \"0\" or "
            "\"inf\" where a search ended at the grid's first point).\n\n" + table(["method", "L", *(f"d = {d}" for d in p.ds)], rows))


def summarize(root: Path, figdir: Path, quick: bool = False, command: str = "bfclab experiment scaling") -> Section:
    """The fits over the searches the stored cells finish.  A partial run (``--only``, or one that
    stopped) gives the rows of the (method, L, eps) whose searches finished, each fitted over the d
    it has, and says what is left; the full plan's statement needs every search."""
    p = plan(quick)
    searches, lacking = drive(p, root, compute=False)
    groups = [(label, L, name) for label in p.methods for L in p.levels for name in ("rel", "1e-2")]
    per = len(p.ds) * len(p.target_seeds)
    done = {g: [s for s in searches if s.key[0] == g[0] and s.key[1] == g[1] and s.key[4] == g[2] and s.done]
            for g in groups}
    if not any(done.values()):
        return Section(NAME, f"No search has finished under `{root}` ({lacking} cells of the next round "
                             f"missing): run `{command}` (it resumes; `--only` runs a part of the plan).")
    fits: dict = {}
    rows = []
    for g in groups:
        ss = done[g]
        if not ss:
            continue
        fit = fits[g] = fit_of(ss, p.draws)
        pts = " ".join(f"{d}:{'>' if k == 'right' else '<=' if k == 'left' else ''}{n}" for d, n, k in fit["points"])
        ci = f"{fit['a']:.2f} [{fit['lo']:.2f}, {fit['hi']:.2f}]" if fit["a"] == fit["a"] else "n/a"
        ta, tt = time_fit(ss)
        wa, wt = time_fit(ss, "work")
        rows.append([g[0], g[1], g[2], f"{len(ss)} / {per} (d = {_ds_text(s.key[2] for s in ss)})", ci,
                     f"{fit['skipped']} / {fit['draws'] + fit['skipped']}", pts, f"{ta:.2f}" if ta == ta else "n/a", tt,
                     f"{wa:.2f}" if wa == wa else "n/a", wt])
    fig1, fig2 = figdir / "scaling_nstar.png", figdir / "scaling_exponents.png"
    rel = {k: v for k, v in fits.items() if k[2] == "rel"}
    plot_scaling(rel, p.levels, fig1)
    used = {L: sorted({s.key[2] for g, ss in done.items() if g[1] == L for s in ss}) for L in p.levels}
    refs = {L: kernel_reference(L, ds) for L, ds in used.items() if len(ds) >= 2}
    plot_exponents(rel, p.levels, refs, fig2)
    complete = sum(len(ss) == per for ss in done.values())
    state = ("Every search of the plan has finished." if complete == len(groups) else
             f"**Partial**: {complete} of the plan's {len(groups)} (method, L, eps) groups have every search "
             f"finished ({per} each: d = {_ds_text(p.ds)} x target seeds {p.target_seeds}); "
             f"{sum(1 for ss in done.values() if not ss)} have none and are not shown; the next round lacks "
             f"{lacking} cells (`{command}` resumes; `--only` runs a part).  A row's fit uses only its "
             f"finished searches, over the d it names.")
    text = [f"Command: `{command}` (results in `{root}`; it resumes).  n* = the smallest n of the grid "
            f"{p.n_min} x sqrt(2)^i at which the median test nMSE over seeds {p.seeds} is <= eps; eps `rel` = a "
            f"tenth of the target's floor without its top level (`floors.json`), `1e-2` = 0.01.  Fit: "
            f"log n* = a log d + b, censored points through their tail probability (Tobit), 95 % bootstrap "
            f"interval over seeds and target seeds ({p.draws} draws; a draw with fewer than two exact n* at "
            f"distinct d has no fit and is counted, not used), sigma at least the grid's own log(sqrt 2)/sqrt 12.  "
            f"Time: the exponent of the median seconds of the runs at n* against d, censored like n*.",
            state,
            f"![n* against d]({fig1.name})", f"![exponent against depth]({fig2.name})",
            table(["method", "L", "eps", "searches finished", "exponent a [95 %]", "draws without a fit",
                   "n* per d (> censored, <= below the grid)", "time exponent", "seconds at n* per d",
                   "steps x batch exponent", "steps x batch at n* per d"], rows),
            growth_words(fits, p.levels),
            ratio_section(done, p),
            "Kernel reference exponents (monomials of degree 2^(L-1) in d variables, over the d of the "
            "finished searches): " + "; ".join(f"L = {L}: {v:.2f} (d = {_ds_text(used[L])})"
                                                for L, v in refs.items()) + ".",
            spent_text(compute_spent(searches)),
            conditions(root)]
    return Section(NAME, "\n\n".join(t for t in text if t))
